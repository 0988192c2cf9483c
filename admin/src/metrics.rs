//! `GET /metrics`: the cluster as Prometheus sees it, from the nodes' /stats at scrape time,
//! one series per topic/channel and node (label `node`, NSQ's `broadcast_address:http_port`).
//! Counters (`_total`) are nsqd's cumulative counts. Encoding is prometheus-client's.

use nsq_metrics::{counter_family, gauge_family, gauge_value as g, HistogramFamily};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::clusterinfo::{Producer, TopicStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    topic: String,
    channel: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    topic: String,
    channel: String,
    node: String,
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    hostname: String,
    version: String,
}

type G = Family<TopicLabels, Gauge>;
type CG = Family<ChannelLabels, Gauge>;
type CC = Family<ChannelLabels, Counter>;

/// Render the Prometheus text exposition for one cluster snapshot.
pub fn render(producers: &[Producer], node_stats: &[TopicStats], upstream_errors: usize) -> String {
    let mut reg = Registry::default();

    let nodes = gauge_family::<NodeLabels>(
        &mut reg,
        "nsq_node_info",
        "nsqd nodes in the cluster (value 1)",
    );
    let errors = Gauge::<i64>::default();
    reg.register(
        "nsqadmin_upstream_errors",
        "nsqd/nsqlookupd that did not answer, or nsqd reporting a storage error, during this scrape",
        errors.clone(),
    );

    let t_depth: G = gauge_family(
        &mut reg,
        "nsq_topic_depth",
        "messages queued in the topic (memory + disk)",
    );
    let t_mem: G = gauge_family(
        &mut reg,
        "nsq_topic_memory_depth",
        "messages queued in memory",
    );
    let t_disk: G = gauge_family(
        &mut reg,
        "nsq_topic_backend_depth",
        "messages queued on disk",
    );
    let t_paused: G = gauge_family(&mut reg, "nsq_topic_paused", "1 if the topic is paused");
    let t_channels: G = gauge_family(&mut reg, "nsq_topic_channels", "channels of the topic");
    let t_msgs = counter_family::<TopicLabels>(
        &mut reg,
        "nsq_topic_messages",
        "messages published to the topic",
    );

    let c_depth: CG = gauge_family(
        &mut reg,
        "nsq_channel_depth",
        "messages queued in the channel (memory + disk)",
    );
    let c_mem: CG = gauge_family(
        &mut reg,
        "nsq_channel_memory_depth",
        "channel messages queued in memory",
    );
    let c_disk: CG = gauge_family(
        &mut reg,
        "nsq_channel_backend_depth",
        "channel messages queued on disk",
    );
    let c_inflight: CG = gauge_family(&mut reg, "nsq_channel_in_flight", "messages in flight");
    let c_deferred: CG = gauge_family(&mut reg, "nsq_channel_deferred", "deferred messages");
    let c_clients: CG = gauge_family(&mut reg, "nsq_channel_clients", "connected consumers");
    let c_paused: CG = gauge_family(&mut reg, "nsq_channel_paused", "1 if the channel is paused");
    let c_msgs: CC = counter_family(
        &mut reg,
        "nsq_channel_messages",
        "messages delivered to the channel",
    );
    let c_requeue: CC = counter_family(&mut reg, "nsq_channel_requeues", "messages requeued");
    let c_timeout: CC = counter_family(
        &mut reg,
        "nsq_channel_timeouts",
        "messages that timed out in flight",
    );
    let c_e2e = Family::<QuantileLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    reg.register(
        "nsq_channel_e2e_processing_latency_percentile_seconds",
        "end-to-end processing latency (publish to FIN) percentiles over nsqd's window, as nsqd reports them (--e2e-processing-latency-percentile)",
        c_e2e.clone(),
    );
    nsq_metrics::register_process(&mut reg);
    // Each node's e2e latency histogram from its /stats, re-encoded with the node label.
    let mut c_e2e_hist = HistogramFamily::<ChannelLabels>::new(
        "nsq_channel_e2e_processing_latency_seconds",
        "end-to-end processing latency (publish to FIN) since nsqd started, per node",
    );

    errors.set(upstream_errors as i64);
    for p in producers {
        nodes
            .get_or_create(&NodeLabels {
                node: p.http_address(),
                hostname: p.hostname.clone(),
                version: p.version.clone(),
            })
            .set(1);
    }
    for t in node_stats {
        let tl = TopicLabels {
            topic: t.topic_name.clone(),
            node: t.node.clone(),
        };
        t_depth.get_or_create(&tl).set(g(t.depth));
        t_mem.get_or_create(&tl).set(g(t.memory_depth));
        t_disk.get_or_create(&tl).set(g(t.backend_depth));
        t_paused.get_or_create(&tl).set(t.paused as i64);
        t_channels.get_or_create(&tl).set(t.channels.len() as i64);
        t_msgs.get_or_create(&tl).inc_by(t.message_count);
        for c in &t.channels {
            let cl = ChannelLabels {
                topic: t.topic_name.clone(),
                channel: c.channel_name.clone(),
                node: t.node.clone(),
            };
            c_depth.get_or_create(&cl).set(g(c.depth));
            c_mem.get_or_create(&cl).set(g(c.memory_depth));
            c_disk.get_or_create(&cl).set(g(c.backend_depth));
            c_inflight.get_or_create(&cl).set(g(c.in_flight_count));
            c_deferred.get_or_create(&cl).set(g(c.deferred_count));
            c_clients.get_or_create(&cl).set(g(c.client_count));
            c_paused.get_or_create(&cl).set(c.paused as i64);
            c_msgs.get_or_create(&cl).inc_by(c.message_count);
            c_requeue.get_or_create(&cl).inc_by(c.requeue_count);
            c_timeout.get_or_create(&cl).inc_by(c.timeout_count);
            if let Some(h) = &c.e2e_histogram {
                c_e2e_hist.push(cl.clone(), &h.bounds, &h.counts, h.sum_seconds, h.count);
            }
            for p in &c.e2e_processing_latency.percentiles {
                let (Some(q), Some(v)) = (p.get("quantile"), p.get("max")) else {
                    continue;
                };
                c_e2e
                    .get_or_create(&QuantileLabels {
                        topic: t.topic_name.clone(),
                        channel: c.channel_name.clone(),
                        node: t.node.clone(),
                        quantile: q.to_string(),
                    })
                    .set(v / 1e9);
            }
        }
    }
    c_e2e_hist.register(&mut reg);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        return "# encoding failed\n".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clusterinfo::LatencyHistogram;

    #[test]
    fn renders_families_with_node_label() {
        let t = TopicStats {
            node: "h:4151".into(),
            topic_name: "orders".into(),
            depth: 7,
            memory_depth: 5,
            backend_depth: 2,
            message_count: 42,
            channels: vec![crate::clusterinfo::ChannelStats {
                topic_name: "orders".into(),
                channel_name: "billing".into(),
                depth: 3,
                in_flight_count: 1,
                message_count: 40,
                client_count: 2,
                e2e_histogram: Some(LatencyHistogram {
                    count: 3,
                    sum_seconds: 0.5,
                    bounds: vec![0.1, 1.0],
                    counts: vec![1, 2, 0],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&[], &[t], 0);
        assert!(
            text.contains("nsq_topic_depth{topic=\"orders\",node=\"h:4151\"} 7"),
            "{text}"
        );
        assert!(text.contains("nsq_topic_messages_total{topic=\"orders\",node=\"h:4151\"} 42"));
        assert!(text.contains(
            "nsq_channel_in_flight{topic=\"orders\",channel=\"billing\",node=\"h:4151\"} 1"
        ));
        assert!(text.contains("# TYPE nsq_channel_messages counter"));
        assert!(text.contains("# TYPE nsq_channel_e2e_processing_latency_seconds histogram"));
        // Label order within the braces is the encoder's choice (`le` may come first).
        let bucket = |le: &str| {
            text.lines().any(|l| {
                l.starts_with("nsq_channel_e2e_processing_latency_seconds_bucket{")
                    && l.contains("topic=\"orders\"")
                    && l.contains("channel=\"billing\"")
                    && l.contains("node=\"h:4151\"")
                    && l.contains(&format!("le=\"{le}\""))
                    && l.ends_with("} 3")
            })
        };
        assert!(bucket("1.0"), "{text}");
        assert!(bucket("+Inf"), "{text}");
        assert!(text.contains("process_cpu_seconds_total "));
        assert!(text.ends_with("# EOF\n"));
    }
}
