//! `GET /metrics`: the figures of /stats in the Prometheus text format (prometheus-client
//! does the encoding), built fresh at each scrape from the same topic/channel stats.
//! Counters carry `_total`; e2e latency is a histogram per topic and channel (every FIN
//! since start); the process_* metrics are Prometheus' standard ones.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nsq_metrics::HistogramFamily;
use nsq_metrics::{counter_family as counters, gauge_family as gauges, gauge_value as i};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::nsqd::Nsqd;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    topic: String,
    channel: String,
}

pub fn render(nsqd: &Nsqd) -> String {
    let mut reg = Registry::default();
    let t_depth =
        gauges::<TopicLabels>(&mut reg, "nsq_topic_depth", "messages queued in the topic");
    let t_disk = gauges::<TopicLabels>(
        &mut reg,
        "nsq_topic_backend_depth",
        "topic messages on disk",
    );
    let t_mem = gauges::<TopicLabels>(
        &mut reg,
        "nsq_topic_memory_depth",
        "topic messages in memory",
    );
    let t_paused = gauges::<TopicLabels>(&mut reg, "nsq_topic_paused", "1 if the topic is paused");
    let t_msgs = counters::<TopicLabels>(&mut reg, "nsq_topic_messages", "messages published");
    let t_bytes = counters::<TopicLabels>(&mut reg, "nsq_topic_message_bytes", "bytes published");
    let c_depth = gauges::<ChannelLabels>(
        &mut reg,
        "nsq_channel_depth",
        "messages queued in the channel",
    );
    let c_disk = gauges::<ChannelLabels>(
        &mut reg,
        "nsq_channel_backend_depth",
        "channel messages on disk",
    );
    let c_mem = gauges::<ChannelLabels>(
        &mut reg,
        "nsq_channel_memory_depth",
        "channel messages in memory",
    );
    let c_inflight =
        gauges::<ChannelLabels>(&mut reg, "nsq_channel_in_flight", "messages in flight");
    let c_deferred = gauges::<ChannelLabels>(&mut reg, "nsq_channel_deferred", "deferred messages");
    let c_clients = gauges::<ChannelLabels>(&mut reg, "nsq_channel_clients", "connected consumers");
    let c_paused =
        gauges::<ChannelLabels>(&mut reg, "nsq_channel_paused", "1 if the channel is paused");
    let c_msgs = counters::<ChannelLabels>(&mut reg, "nsq_channel_messages", "messages delivered");
    let c_req = counters::<ChannelLabels>(&mut reg, "nsq_channel_requeues", "messages requeued");
    let c_to = counters::<ChannelLabels>(
        &mut reg,
        "nsq_channel_timeouts",
        "messages timed out in flight",
    );
    let c_lag = Family::<ChannelLabels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "nsq_channel_oldest_unfinished_age_seconds",
        "age of the oldest message the channel has not finished (consumer lag in time)",
        c_lag.clone(),
    );
    let t_disk_bytes = gauges::<TopicLabels>(
        &mut reg,
        "nsq_topic_disk_bytes",
        "bytes of the topic's log on disk",
    );
    let t_segments = gauges::<TopicLabels>(
        &mut reg,
        "nsq_topic_disk_segments",
        "segment files of the topic's log",
    );
    let t_corrupt = gauges::<TopicLabels>(
        &mut reg,
        "nsq_topic_corrupt_records",
        "damaged records skipped by recovery when the topic was opened",
    );
    let t_storage_error = gauges::<TopicLabels>(
        &mut reg,
        "nsq_topic_storage_error",
        "1 while the topic is in a storage error (see /stats for the message)",
    );
    let clients = Gauge::<i64>::default();
    reg.register("nsq_clients", "connected TCP clients", clients.clone());
    let healthy = Gauge::<i64>::default();
    reg.register(
        "nsq_health_ok",
        "1 if /ping answers OK (no storage error)",
        healthy.clone(),
    );
    nsq_metrics::register_process(&mut reg);
    // prometheus-client's own histogram cannot be read back for /stats, so nsqd counts in
    // its own atomic buckets (crate::stats::LatencyHistogram) and hands the readings over.
    let mut t_e2e = HistogramFamily::<TopicLabels>::new(
        "nsq_topic_e2e_processing_latency_seconds",
        "end-to-end processing latency (publish to FIN) of the topic's channels, since start",
    );
    let mut c_e2e = HistogramFamily::<ChannelLabels>::new(
        "nsq_channel_e2e_processing_latency_seconds",
        "end-to-end processing latency (publish to FIN), since start",
    );

    let opts = nsqd.opts();
    for t in nsqd.topics() {
        let s = t.stats(None, false, &opts.e2e_processing_latency_percentiles);
        let tl = TopicLabels {
            topic: s.topic_name.clone(),
        };
        t_depth.get_or_create(&tl).set(i(s.depth));
        t_disk.get_or_create(&tl).set(i(s.backend_depth));
        t_mem
            .get_or_create(&tl)
            .set(i(s.depth.saturating_sub(s.backend_depth)));
        t_paused.get_or_create(&tl).set(s.paused as i64);
        t_msgs.get_or_create(&tl).inc_by(s.message_count);
        t_bytes.get_or_create(&tl).inc_by(s.message_bytes);
        for c in &s.channels {
            let cl = ChannelLabels {
                topic: s.topic_name.clone(),
                channel: c.channel_name.clone(),
            };
            c_depth.get_or_create(&cl).set(i(c.depth));
            c_disk.get_or_create(&cl).set(i(c.backend_depth));
            c_mem
                .get_or_create(&cl)
                .set(i(c.depth.saturating_sub(c.backend_depth)));
            c_inflight.get_or_create(&cl).set(i(c.in_flight_count));
            c_deferred.get_or_create(&cl).set(i(c.deferred_count));
            c_clients.get_or_create(&cl).set(c.client_count as i64);
            c_paused.get_or_create(&cl).set(c.paused as i64);
            c_msgs.get_or_create(&cl).inc_by(c.message_count);
            c_req.get_or_create(&cl).inc_by(c.requeue_count);
            c_to.get_or_create(&cl).inc_by(c.timeout_count);
            c_lag
                .get_or_create(&cl)
                .set(c.oldest_unfinished_age_ms as f64 / 1000.0);
            let h = &c.e2e_processing_latency_histogram;
            c_e2e.push(cl, &h.bounds, &h.counts, h.sum_seconds, h.count);
        }
        t_disk_bytes.get_or_create(&tl).set(i(s.disk_bytes));
        t_segments.get_or_create(&tl).set(s.disk_segments as i64);
        t_corrupt.get_or_create(&tl).set(i(s.corrupt_records));
        t_storage_error
            .get_or_create(&tl)
            .set(!s.storage_error.is_empty() as i64);
        let h = &s.e2e_processing_latency_histogram;
        t_e2e.push(tl, &h.bounds, &h.counts, h.sum_seconds, h.count);
    }
    t_e2e.register(&mut reg);
    c_e2e.register(&mut reg);
    clients.set(nsqd.clients.lock().len() as i64);
    healthy.set(nsqd.health().is_none() as i64);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        return "# encoding failed\n".into();
    }
    out
}

pub async fn handler(State(nsqd): State<Arc<Nsqd>>) -> Response {
    let mut r = (StatusCode::OK, render(&nsqd)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
