//! `GET /metrics`: what nsqlookupd knows, in the Prometheus text format (prometheus-client
//! does the encoding): live producers, topics, channels per topic, producers per topic; and the
//! standard process_* metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Lookupd;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

pub fn render(l: &Lookupd) -> String {
    let mut reg = Registry::default();
    let producers = Gauge::<i64>::default();
    reg.register(
        "nsqlookupd_producers",
        "live nsqd registered with this nsqlookupd",
        producers.clone(),
    );
    let topics = Gauge::<i64>::default();
    reg.register("nsqlookupd_topics", "topics known", topics.clone());
    let channels = Family::<TopicLabels, Gauge>::default();
    reg.register(
        "nsqlookupd_topic_channels",
        "channels known per topic",
        channels.clone(),
    );
    let topic_producers = Family::<TopicLabels, Gauge>::default();
    reg.register(
        "nsqlookupd_topic_producers",
        "live, not tombstoned producers per topic",
        topic_producers.clone(),
    );
    nsq_metrics::register_process(&mut reg);
    {
        let db = l.db.lock();
        let (inactive, tomb) = (l.opts.inactive_producer_timeout, l.opts.tombstone_lifetime);
        producers.set(db.nodes(inactive, tomb).len() as i64);
        let names = db.topics();
        topics.set(names.len() as i64);
        for t in names {
            let labels = TopicLabels { topic: t.clone() };
            channels
                .get_or_create(&labels)
                .set(db.channels(&t).len() as i64);
            topic_producers
                .get_or_create(&labels)
                .set(db.producers(&t, inactive, tomb).len() as i64);
        }
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        return "# encoding failed\n".into();
    }
    out
}

pub async fn handler(State(l): State<Arc<Lookupd>>) -> Response {
    let mut r = (StatusCode::OK, render(&l)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
