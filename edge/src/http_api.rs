//! NSQ's HTTP API conventions, shared by nsqd, nsqlookupd and nsqadmin: bare JSON or plain
//! text answers, `{"message": "..."}` with a 4xx/5xx status for errors, the
//! `X-NSQ-Content-Type` header on every answer but /ping, query parameters decoded the way
//! Go's `url.Values` does, and one log line per request.

use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The header NSQ puts on its API answers, and its value.
pub const NSQ_CONTENT_TYPE: &str = "X-NSQ-Content-Type";
pub const NSQ_CONTENT_TYPE_V1: &str = "nsq; version=1.0";

/// An HTTP error as NSQ sends it: the status and the `message` (e.g. `TOPIC_NOT_FOUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError(pub StatusCode, pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.1 }).to_string();
        json_response(self.0, body)
    }
}

/// A JSON body with NSQ's headers.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut().insert(
        NSQ_CONTENT_TYPE,
        HeaderValue::from_static(NSQ_CONTENT_TYPE_V1),
    );
    r
}

/// 200 with `v` as JSON (500 `INTERNAL_ERROR` if it cannot be serialised).
pub fn ok_json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => json_response(StatusCode::OK, s),
        Err(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").into_response(),
    }
}

/// 200 with a plain-text body (`OK` for publishes and /ping).
pub fn ok_text(s: &'static str) -> Response {
    let mut r = (StatusCode::OK, s).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 200 with an empty body (admin actions).
pub fn ok_empty() -> Response {
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert(
        NSQ_CONTENT_TYPE,
        HeaderValue::from_static(NSQ_CONTENT_TYPE_V1),
    );
    r
}

/// Query string parameters, strictly decoded: the first value of a key wins, like Go's
/// `url.Values.Get`; a malformed escape or non-UTF-8 value is `400 INVALID_REQUEST`.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(q: Option<&str>) -> Result<Params, ApiError> {
        let mut m = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = ApiError(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
            let k = percent_decode(k).ok_or(bad)?;
            let v = percent_decode(v).ok_or(bad)?;
            m.entry(k).or_insert(v);
        }
        Ok(Params(m))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn contains(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    /// `topic`, present and a valid name (nsqd's `MISSING_ARG_TOPIC` / `INVALID_TOPIC`).
    pub fn topic(&self) -> Result<String, ApiError> {
        self.name(
            "topic",
            protocol::names::is_valid_topic_name,
            "MISSING_ARG_TOPIC",
            "INVALID_TOPIC",
        )
    }

    /// `channel`, present and a valid name (`MISSING_ARG_CHANNEL` / `INVALID_ARG_CHANNEL`).
    pub fn channel(&self) -> Result<String, ApiError> {
        self.name(
            "channel",
            protocol::names::is_valid_channel_name,
            "MISSING_ARG_CHANNEL",
            "INVALID_ARG_CHANNEL",
        )
    }

    fn name(
        &self,
        key: &str,
        valid: fn(&str) -> bool,
        missing: &'static str,
        invalid: &'static str,
    ) -> Result<String, ApiError> {
        let v = self
            .get(key)
            .ok_or(ApiError(StatusCode::BAD_REQUEST, missing))?;
        if !valid(v) {
            return Err(ApiError(StatusCode::BAD_REQUEST, invalid));
        }
        Ok(v.to_string())
    }
}

/// `%XX` and `+` decoding; None for a malformed escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Lenient decoding, as nsqlookupd reads its parameters: a malformed escape stays as
/// written and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The first value of `key` in a raw query string, decoded leniently
/// ([`percent_decode_lossy`]); keys are compared as written.
pub fn query_param(q: Option<&str>, key: &str) -> Option<String> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode_lossy(v))
    })
}

/// One request as NSQ logs it when answered: `200 GET /stats (127.0.0.1:59394) 168.676µs`.
pub struct RequestLine {
    started: std::time::Instant,
    method: axum::http::Method,
    path: String,
    remote: String,
}

impl RequestLine {
    pub fn of(req: &axum::extract::Request) -> RequestLine {
        RequestLine {
            started: std::time::Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            remote: req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
        }
    }

    /// Mark the answer as NSQ's (all but /ping) and log the line at INFO.
    pub fn finish(self, mut resp: Response) -> Response {
        if self.path != "/ping" {
            resp.headers_mut().insert(
                NSQ_CONTENT_TYPE,
                HeaderValue::from_static(NSQ_CONTENT_TYPE_V1),
            );
        }
        tracing::info!(
            "{} {} {} ({}) {:?}",
            resp.status().as_u16(),
            self.method,
            self.path,
            self.remote,
            self.started.elapsed()
        );
        resp
    }
}

/// Middleware for a router whose every request gets [`RequestLine`] treatment.
pub async fn nsq_answers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let line = RequestLine::of(&req);
    line.finish(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn lenient_percent_decoding() {
        assert_eq!(percent_decode_lossy("h%3A1+x"), "h:1 x");
        assert_eq!(percent_decode_lossy("%zz%4"), "%zz%4");
        assert_eq!(
            query_param(Some("topic=a&node=h%3A1"), "node").as_deref(),
            Some("h:1")
        );
        assert_eq!(query_param(Some("topic=a"), "node"), None);
        assert_eq!(query_param(None, "node"), None);
    }

    #[test]
    fn params_first_value_wins() {
        let p = Params::parse(Some("topic=a&topic=b&binary")).ok().unwrap();
        assert_eq!(p.get("topic"), Some("a"));
        assert!(p.contains("binary"));
        assert_eq!(p.topic().ok().as_deref(), Some("a"));
        assert_eq!(
            p.channel().err(),
            Some(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))
        );
        assert!(Params::parse(Some("topic=%zz")).is_err());
        let bad = Params::parse(Some("topic=a*b&channel=c%23ephemeral"))
            .ok()
            .unwrap();
        assert_eq!(
            bad.topic().err(),
            Some(ApiError(StatusCode::BAD_REQUEST, "INVALID_TOPIC"))
        );
        assert_eq!(bad.channel().ok().as_deref(), Some("c#ephemeral"));
    }
}
