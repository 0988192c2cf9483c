//! nsqd's admin actions over HTTP, one handler each (NSQ: `doCreateTopic`,
//! `doEmptyChannel`, ... in nsqd/http.go). NSQ 1.x serves them on POST, and the deprecated
//! underscore forms (`/create_topic`, ...) on GET and POST, which scripts written for older
//! versions still use. Every action answers 200 with an empty body.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edge::http_api::{ok_empty, ApiError, Params};

use crate::channel::Channel;
use crate::nsqd::Nsqd;
use crate::topic::Topic;

type Shared = Arc<Nsqd>;

/// The admin routes: each action under its path (POST) and its pre-1.0 name (GET, POST).
pub(crate) fn routes() -> Router<Shared> {
    fn action<H, T>(r: Router<Shared>, path: &str, old: &str, h: H) -> Router<Shared>
    where
        H: Handler<T, Shared> + Clone,
        T: 'static,
    {
        r.route(path, post(h.clone()))
            .route(old, get(h.clone()).post(h))
    }
    let r = Router::new();
    let r = action(r, "/topic/create", "/create_topic", create_topic);
    let r = action(r, "/topic/delete", "/delete_topic", delete_topic);
    let r = action(r, "/topic/empty", "/empty_topic", empty_topic);
    let r = action(r, "/topic/pause", "/pause_topic", pause_topic);
    let r = action(r, "/topic/unpause", "/unpause_topic", unpause_topic);
    let r = action(r, "/channel/create", "/create_channel", create_channel);
    let r = action(r, "/channel/delete", "/delete_channel", delete_channel);
    let r = action(r, "/channel/empty", "/empty_channel", empty_channel);
    let r = action(r, "/channel/pause", "/pause_channel", pause_channel);
    action(r, "/channel/unpause", "/unpause_channel", unpause_channel)
}

fn answer(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => ok_empty(),
        Err(e) => e.into_response(),
    }
}

/// A storage error behind an action: logged, answered 500 as NSQ does.
fn internal(action: &'static str) -> impl Fn(engine::Error) -> ApiError {
    move |e| {
        tracing::error!(error = %e, path = action, "admin action failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    }
}

/// The `topic` parameter naming a topic that exists.
fn existing_topic(nsqd: &Nsqd, p: &Params) -> Result<(String, Arc<Topic>), ApiError> {
    let name = p.topic()?;
    let topic = nsqd
        .get_existing_topic(&name)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    Ok((name, topic))
}

/// The `topic` and `channel` parameters naming a channel that exists.
fn existing_channel(nsqd: &Nsqd, p: &Params) -> Result<(Arc<Topic>, Arc<Channel>), ApiError> {
    let (_, topic) = existing_topic(nsqd, p)?;
    let name = p.channel()?;
    let channel = topic
        .get_channel(&name)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))?;
    Ok((topic, channel))
}

async fn create_topic(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let name = Params::parse(q.as_deref())?.topic()?;
        nsqd.get_topic(&name).map_err(internal("/topic/create"))?;
        Ok(())
    })())
}

async fn delete_topic(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (name, _) = existing_topic(&nsqd, &Params::parse(q.as_deref())?)?;
        nsqd.delete_topic(&name)
            .map_err(internal("/topic/delete"))?;
        Ok(())
    })())
}

async fn empty_topic(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (_, topic) = existing_topic(&nsqd, &Params::parse(q.as_deref())?)?;
        topic.empty().map_err(internal("/topic/empty"))
    })())
}

async fn pause_topic(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (_, topic) = existing_topic(&nsqd, &Params::parse(q.as_deref())?)?;
        topic.set_paused(true).map_err(internal("/topic/pause"))
    })())
}

async fn unpause_topic(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (_, topic) = existing_topic(&nsqd, &Params::parse(q.as_deref())?)?;
        topic.set_paused(false).map_err(internal("/topic/unpause"))
    })())
}

/// Beyond NSQ: `start=earliest` begins the new channel at the oldest retained message.
async fn create_channel(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let p = Params::parse(q.as_deref())?;
        let (_, topic) = existing_topic(&nsqd, &p)?;
        let name = p.channel()?;
        let earliest = match p.get("start") {
            None | Some("latest") => false,
            Some("earliest") => true,
            Some(_) => return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_START")),
        };
        nsqd.get_channel_from(&topic, &name, earliest)
            .map_err(internal("/channel/create"))?;
        Ok(())
    })())
}

async fn delete_channel(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (topic, channel) = existing_channel(&nsqd, &Params::parse(q.as_deref())?)?;
        nsqd.delete_channel(&topic, &channel.name)
            .map_err(internal("/channel/delete"))?;
        Ok(())
    })())
}

async fn empty_channel(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (_, channel) = existing_channel(&nsqd, &Params::parse(q.as_deref())?)?;
        channel.empty().map_err(internal("/channel/empty"))
    })())
}

async fn pause_channel(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (_, channel) = existing_channel(&nsqd, &Params::parse(q.as_deref())?)?;
        channel.set_paused(true).map_err(internal("/channel/pause"))
    })())
}

async fn unpause_channel(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    answer((|| {
        let (_, channel) = existing_channel(&nsqd, &Params::parse(q.as_deref())?)?;
        channel
            .set_paused(false)
            .map_err(internal("/channel/unpause"))
    })())
}
