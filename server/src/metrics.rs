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
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::channel::ChannelStats;
use crate::nsqd::Nsqd;
use crate::topic::TopicStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    topic: String,
    channel: String,
}

/// The per-topic families of one scrape.
struct TopicFamilies {
    depth: Family<TopicLabels, Gauge>,
    disk: Family<TopicLabels, Gauge>,
    mem: Family<TopicLabels, Gauge>,
    paused: Family<TopicLabels, Gauge>,
    msgs: Family<TopicLabels, Counter>,
    bytes: Family<TopicLabels, Counter>,
    disk_bytes: Family<TopicLabels, Gauge>,
    segments: Family<TopicLabels, Gauge>,
    corrupt: Family<TopicLabels, Gauge>,
    storage_error: Family<TopicLabels, Gauge>,
    // prometheus-client's own histogram cannot be read back for /stats, so nsqd counts in
    // its own atomic buckets (crate::stats::LatencyHistogram) and hands the readings over.
    e2e: HistogramFamily<TopicLabels>,
}

impl TopicFamilies {
    fn register(reg: &mut Registry) -> Self {
        TopicFamilies {
            depth: gauges(reg, "nsq_topic_depth", "messages queued in the topic"),
            disk: gauges(reg, "nsq_topic_backend_depth", "topic messages on disk"),
            mem: gauges(reg, "nsq_topic_memory_depth", "topic messages in memory"),
            paused: gauges(reg, "nsq_topic_paused", "1 if the topic is paused"),
            msgs: counters(reg, "nsq_topic_messages", "messages published"),
            bytes: counters(reg, "nsq_topic_message_bytes", "bytes published"),
            disk_bytes: gauges(
                reg,
                "nsq_topic_disk_bytes",
                "bytes of the topic's log on disk",
            ),
            segments: gauges(
                reg,
                "nsq_topic_disk_segments",
                "segment files of the topic's log",
            ),
            corrupt: gauges(
                reg,
                "nsq_topic_corrupt_records",
                "damaged records skipped by recovery when the topic was opened",
            ),
            storage_error: gauges(
                reg,
                "nsq_topic_storage_error",
                "1 while the topic is in a storage error (see /stats for the message)",
            ),
            e2e: HistogramFamily::new(
                "nsq_topic_e2e_processing_latency_seconds",
                "end-to-end processing latency (publish to FIN) of the topic's channels, since start",
            ),
        }
    }

    fn record(&mut self, s: &TopicStats) {
        let l = TopicLabels {
            topic: s.topic_name.clone(),
        };
        self.depth.get_or_create(&l).set(i(s.depth));
        self.disk.get_or_create(&l).set(i(s.backend_depth));
        self.mem
            .get_or_create(&l)
            .set(i(s.depth.saturating_sub(s.backend_depth)));
        self.paused.get_or_create(&l).set(s.paused as i64);
        self.msgs.get_or_create(&l).inc_by(s.message_count);
        self.bytes.get_or_create(&l).inc_by(s.message_bytes);
        self.disk_bytes.get_or_create(&l).set(i(s.disk_bytes));
        self.segments.get_or_create(&l).set(s.disk_segments as i64);
        self.corrupt.get_or_create(&l).set(i(s.corrupt_records));
        self.storage_error
            .get_or_create(&l)
            .set(!s.storage_error.is_empty() as i64);
        let h = &s.e2e_processing_latency_histogram;
        self.e2e
            .push(l, &h.bounds, &h.counts, h.sum_seconds, h.count);
    }
}

/// The per-channel families of one scrape.
struct ChannelFamilies {
    depth: Family<ChannelLabels, Gauge>,
    disk: Family<ChannelLabels, Gauge>,
    mem: Family<ChannelLabels, Gauge>,
    in_flight: Family<ChannelLabels, Gauge>,
    deferred: Family<ChannelLabels, Gauge>,
    clients: Family<ChannelLabels, Gauge>,
    paused: Family<ChannelLabels, Gauge>,
    msgs: Family<ChannelLabels, Counter>,
    requeues: Family<ChannelLabels, Counter>,
    timeouts: Family<ChannelLabels, Counter>,
    lag: Family<ChannelLabels, Gauge<f64, AtomicU64>>,
    e2e: HistogramFamily<ChannelLabels>,
}

impl ChannelFamilies {
    fn register(reg: &mut Registry) -> Self {
        let lag = Family::<ChannelLabels, Gauge<f64, AtomicU64>>::default();
        reg.register(
            "nsq_channel_oldest_unfinished_age_seconds",
            "age of the oldest message the channel has not finished (consumer lag in time)",
            lag.clone(),
        );
        ChannelFamilies {
            depth: gauges(reg, "nsq_channel_depth", "messages queued in the channel"),
            disk: gauges(reg, "nsq_channel_backend_depth", "channel messages on disk"),
            mem: gauges(
                reg,
                "nsq_channel_memory_depth",
                "channel messages in memory",
            ),
            in_flight: gauges(reg, "nsq_channel_in_flight", "messages in flight"),
            deferred: gauges(reg, "nsq_channel_deferred", "deferred messages"),
            clients: gauges(reg, "nsq_channel_clients", "connected consumers"),
            paused: gauges(reg, "nsq_channel_paused", "1 if the channel is paused"),
            msgs: counters(reg, "nsq_channel_messages", "messages delivered"),
            requeues: counters(reg, "nsq_channel_requeues", "messages requeued"),
            timeouts: counters(reg, "nsq_channel_timeouts", "messages timed out in flight"),
            lag,
            e2e: HistogramFamily::new(
                "nsq_channel_e2e_processing_latency_seconds",
                "end-to-end processing latency (publish to FIN), since start",
            ),
        }
    }

    fn record(&mut self, topic: &str, c: &ChannelStats) {
        let l = ChannelLabels {
            topic: topic.to_string(),
            channel: c.channel_name.clone(),
        };
        self.depth.get_or_create(&l).set(i(c.depth));
        self.disk.get_or_create(&l).set(i(c.backend_depth));
        self.mem
            .get_or_create(&l)
            .set(i(c.depth.saturating_sub(c.backend_depth)));
        self.in_flight.get_or_create(&l).set(i(c.in_flight_count));
        self.deferred.get_or_create(&l).set(i(c.deferred_count));
        self.clients.get_or_create(&l).set(c.client_count as i64);
        self.paused.get_or_create(&l).set(c.paused as i64);
        self.msgs.get_or_create(&l).inc_by(c.message_count);
        self.requeues.get_or_create(&l).inc_by(c.requeue_count);
        self.timeouts.get_or_create(&l).inc_by(c.timeout_count);
        self.lag
            .get_or_create(&l)
            .set(c.oldest_unfinished_age_ms as f64 / 1000.0);
        let h = &c.e2e_processing_latency_histogram;
        self.e2e
            .push(l, &h.bounds, &h.counts, h.sum_seconds, h.count);
    }
}

pub fn render(nsqd: &Nsqd) -> String {
    let mut reg = Registry::default();
    let mut topics = TopicFamilies::register(&mut reg);
    let mut channels = ChannelFamilies::register(&mut reg);
    let clients = Gauge::<i64>::default();
    reg.register("nsq_clients", "connected TCP clients", clients.clone());
    let healthy = Gauge::<i64>::default();
    reg.register(
        "nsq_health_ok",
        "1 if /ping answers OK (no storage error)",
        healthy.clone(),
    );
    nsq_metrics::register_process(&mut reg);

    let opts = nsqd.opts();
    for t in nsqd.topics() {
        let s = t.stats(None, false, &opts.e2e_processing_latency_percentiles);
        for c in &s.channels {
            channels.record(&s.topic_name, c);
        }
        topics.record(&s);
    }
    topics.e2e.register(&mut reg);
    channels.e2e.register(&mut reg);
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
