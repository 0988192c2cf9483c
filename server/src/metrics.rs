//! `GET /metrics`: the figures of /stats in the Prometheus text format (prometheus-client
//! does the encoding), built fresh at each scrape from the same topic/channel stats.
//! Counters carry `_total`; e2e latency is a histogram per topic and channel (every FIN
//! since start); the process_* metrics are Prometheus' standard ones.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::nsqd::Nsqd;
use crate::stats::HistogramStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    topic: String,
    channel: String,
}

fn gauges<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn counters<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The e2e latency histograms of one scrape, encoded by prometheus-client as one
/// `histogram` family per level (topic, channel). prometheus-client's own `Histogram` cannot
/// be read back for /stats, so nsqd keeps its own atomic buckets
/// ([`crate::stats::LatencyHistogram`]) and hands the readings to the encoder here.
#[derive(Debug, Default)]
struct LatencyHistograms {
    topics: Vec<(TopicLabels, HistogramStats)>,
    channels: Vec<(ChannelLabels, HistogramStats)>,
}

fn encode_histogram(
    enc: &mut prometheus_client::encoding::MetricEncoder,
    h: &HistogramStats,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::MAX)) // the encoder's +Inf
        .zip(h.counts.iter().copied())
        .collect();
    enc.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
}

impl Collector for LatencyHistograms {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut m = enc.encode_descriptor(
                "nsq_topic_e2e_processing_latency_seconds",
                "end-to-end processing latency (publish to FIN) of the topic's channels, since start",
                None,
                MetricType::Histogram,
            )?;
            for (labels, h) in &self.topics {
                encode_histogram(&mut m.encode_family(labels)?, h)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "nsq_channel_e2e_processing_latency_seconds",
            "end-to-end processing latency (publish to FIN), since start",
            None,
            MetricType::Histogram,
        )?;
        for (labels, h) in &self.channels {
            encode_histogram(&mut m.encode_family(labels)?, h)?;
        }
        Ok(())
    }
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
    process_metrics::register(&mut reg);
    let mut histograms = LatencyHistograms::default();

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
            histograms
                .channels
                .push((cl, c.e2e_processing_latency_histogram.clone()));
        }
        t_disk_bytes.get_or_create(&tl).set(i(s.disk_bytes));
        t_segments.get_or_create(&tl).set(s.disk_segments as i64);
        t_corrupt.get_or_create(&tl).set(i(s.corrupt_records));
        t_storage_error
            .get_or_create(&tl)
            .set(!s.storage_error.is_empty() as i64);
        histograms
            .topics
            .push((tl, s.e2e_processing_latency_histogram));
    }
    reg.register_collector(Box::new(histograms));
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
