//! Asking nsqlookupd's HTTP API which nsqd produce a topic.

use crate::error::{Error, Result};

/// `http://host:port` for an address given as `host:port` or as a URL.
pub fn base_url(addr: &str) -> String {
    let a = addr.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// The TCP addresses (`broadcast_address:tcp_port`) of the topic's producers. A topic
/// nsqlookupd does not know has no producers (not an error).
pub async fn producers(http: &reqwest::Client, lookupd: &str, topic: &str) -> Result<Vec<String>> {
    let err = |text: String| Error::Lookup {
        addr: lookupd.to_string(),
        text,
    };
    let resp = http
        .get(format!("{}/lookup", base_url(lookupd)))
        .query(&[("topic", topic)])
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if !resp.status().is_success() {
        return Err(err(format!("status {}", resp.status())));
    }
    let v: serde_json::Value = resp.json().await.map_err(|e| err(e.to_string()))?;
    Ok(parse_producers(&v))
}

/// Producers' TCP addresses from a /lookup or /nodes answer (NSQ 1.x answers bare JSON;
/// older versions wrap it in `{"data": ...}`).
pub fn parse_producers(v: &serde_json::Value) -> Vec<String> {
    producer_addresses(v, "tcp_port")
}

/// Producers' `broadcast_address:<port_field>` from a /lookup or /nodes answer (e.g.
/// `"http_port"` for their HTTP API), sorted and without repeats.
pub fn producer_addresses(v: &serde_json::Value, port_field: &str) -> Vec<String> {
    let producers = v
        .get("producers")
        .or_else(|| v.get("data").and_then(|d| d.get("producers")));
    let mut out = Vec::new();
    for p in producers.and_then(|p| p.as_array()).into_iter().flatten() {
        let host = p["broadcast_address"].as_str().unwrap_or("");
        if let (false, Some(port)) = (host.is_empty(), p[port_field].as_u64()) {
            if host.contains(':') {
                out.push(format!("[{host}]:{port}"));
            } else {
                out.push(format!("{host}:{port}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_shapes() {
        let v = serde_json::json!({"channels": [], "producers": [
            {"broadcast_address": "127.0.0.1", "tcp_port": 4150},
            {"broadcast_address": "::1", "tcp_port": 4152},
            {"broadcast_address": "", "tcp_port": 1},
            {"broadcast_address": "127.0.0.1", "tcp_port": 4150}]});
        assert_eq!(parse_producers(&v), vec!["127.0.0.1:4150", "[::1]:4152"]);
        let old = serde_json::json!({"status_code": 200, "data": {"producers": [
            {"broadcast_address": "h", "tcp_port": 7}]}});
        assert_eq!(parse_producers(&old), vec!["h:7"]);
        assert!(parse_producers(&serde_json::json!({"x": 1})).is_empty());
        assert_eq!(base_url("a:1/"), "http://a:1");
        assert_eq!(base_url("https://a:1"), "https://a:1");
    }
}
