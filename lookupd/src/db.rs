//! The registration database: which producers (nsqd instances) have which topics and
//! channels. Everything is in memory; nsqd re-registers everything on reconnect, so
//! several nsqlookupd need no coordination and a restart loses nothing that matters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What an nsqd told us about itself in IDENTIFY.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerInfo {
    #[serde(skip)]
    pub id: u64,
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
}

impl PeerInfo {
    /// How /topic/tombstone names a node.
    pub fn node_key(&self) -> String {
        format!("{}:{}", self.broadcast_address, self.http_port)
    }
}

struct Peer {
    info: PeerInfo,
    last_update: Instant,
    topics: BTreeSet<String>,
    /// topic -> channels
    channels: BTreeMap<String, BTreeSet<String>>,
    /// topic -> when tombstoned
    tombstones: BTreeMap<String, Instant>,
}

#[derive(Default)]
pub struct Db {
    peers: BTreeMap<u64, Peer>,
    /// Topics and channels created through the HTTP API (no producer needed).
    topics: BTreeSet<String>,
    channels: BTreeMap<String, BTreeSet<String>>,
}

impl Db {
    pub fn add_peer(&mut self, info: PeerInfo) {
        self.peers.insert(
            info.id,
            Peer {
                info,
                last_update: Instant::now(),
                topics: BTreeSet::new(),
                channels: BTreeMap::new(),
                tombstones: BTreeMap::new(),
            },
        );
    }

    /// A producer went away. As in NSQ, the topic and channel keys it registered stay
    /// (with no producer) unless they are ephemeral.
    pub fn remove_peer(&mut self, id: u64) {
        if let Some(p) = self.peers.remove(&id) {
            for t in &p.topics {
                self.keep_topic_key(t);
            }
            for (t, cs) in &p.channels {
                for c in cs {
                    self.keep_channel_key(t, c);
                }
            }
        }
    }

    fn keep_topic_key(&mut self, topic: &str) {
        if !topic.ends_with("#ephemeral") {
            self.topics.insert(topic.to_string());
        }
    }

    fn keep_channel_key(&mut self, topic: &str, channel: &str) {
        if !topic.ends_with("#ephemeral") && !channel.ends_with("#ephemeral") {
            self.channels
                .entry(topic.to_string())
                .or_default()
                .insert(channel.to_string());
        }
    }

    pub fn touch(&mut self, id: u64) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_update = Instant::now();
        }
    }

    pub fn register(&mut self, id: u64, topic: &str, channel: Option<&str>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_update = Instant::now();
            p.topics.insert(topic.to_string());
            if let Some(c) = channel {
                p.channels
                    .entry(topic.to_string())
                    .or_default()
                    .insert(c.to_string());
            }
        }
    }

    /// The producer no longer has `topic` (or `channel`). As in NSQ, the key itself stays
    /// (an empty registration) unless it is ephemeral.
    pub fn unregister(&mut self, id: u64, topic: &str, channel: Option<&str>) {
        let mut had = false;
        let mut channels_left = Vec::new();
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_update = Instant::now();
            match channel {
                Some(c) => {
                    if let Some(cs) = p.channels.get_mut(topic) {
                        had = cs.remove(c);
                    }
                }
                None => {
                    had = p.topics.remove(topic);
                    channels_left = p
                        .channels
                        .remove(topic)
                        .map(|cs| cs.into_iter().collect())
                        .unwrap_or_default();
                }
            }
        }
        if !had {
            return;
        }
        match channel {
            Some(c) => self.keep_channel_key(topic, c),
            None => {
                self.keep_topic_key(topic);
                for c in channels_left {
                    self.keep_channel_key(topic, &c);
                }
            }
        }
    }

    pub fn create_topic(&mut self, topic: &str) {
        self.topics.insert(topic.to_string());
    }

    pub fn create_channel(&mut self, topic: &str, channel: &str) {
        self.topics.insert(topic.to_string());
        self.channels
            .entry(topic.to_string())
            .or_default()
            .insert(channel.to_string());
    }

    /// Forget a topic everywhere (HTTP /topic/delete).
    pub fn delete_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
        self.channels.remove(topic);
        for p in self.peers.values_mut() {
            p.topics.remove(topic);
            p.channels.remove(topic);
        }
    }

    pub fn delete_channel(&mut self, topic: &str, channel: &str) -> bool {
        let mut found = self
            .channels
            .get_mut(topic)
            .is_some_and(|c| c.remove(channel));
        for p in self.peers.values_mut() {
            if let Some(cs) = p.channels.get_mut(topic) {
                found |= cs.remove(channel);
            }
        }
        found
    }

    pub fn topic_exists(&self, topic: &str) -> bool {
        self.topics.contains(topic) || self.peers.values().any(|p| p.topics.contains(topic))
    }

    pub fn topics(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.topics.clone();
        for p in self.peers.values() {
            all.extend(p.topics.iter().cloned());
        }
        all.into_iter().collect()
    }

    pub fn channels(&self, topic: &str) -> Vec<String> {
        let mut all: BTreeSet<String> = self.channels.get(topic).cloned().unwrap_or_default();
        for p in self.peers.values() {
            if let Some(cs) = p.channels.get(topic) {
                all.extend(cs.iter().cloned());
            }
        }
        all.into_iter().collect()
    }

    fn active(p: &Peer, inactive: Duration) -> bool {
        p.last_update.elapsed() <= inactive
    }

    /// Producers of a topic that are alive and not tombstoned for it.
    pub fn producers(
        &self,
        topic: &str,
        inactive: Duration,
        tombstone_lifetime: Duration,
    ) -> Vec<PeerInfo> {
        self.peers
            .values()
            .filter(|p| p.topics.contains(topic) && Self::active(p, inactive))
            .filter(|p| {
                p.tombstones
                    .get(topic)
                    .is_none_or(|t| t.elapsed() > tombstone_lifetime)
            })
            .map(|p| p.info.clone())
            .collect()
    }

    /// Tombstone `topic` on the producer named `node` (broadcast_address:http_port).
    pub fn tombstone(&mut self, topic: &str, node: &str) -> bool {
        let mut found = false;
        for p in self.peers.values_mut() {
            if p.info.node_key() == node && p.topics.contains(topic) {
                p.tombstones.insert(topic.to_string(), Instant::now());
                found = true;
            }
        }
        found
    }

    /// Every live producer with its topics and, per topic, whether it is tombstoned.
    pub fn nodes(
        &self,
        inactive: Duration,
        tombstone_lifetime: Duration,
    ) -> Vec<(PeerInfo, Vec<String>, Vec<bool>)> {
        self.peers
            .values()
            .filter(|p| Self::active(p, inactive))
            .map(|p| {
                let topics: Vec<String> = p.topics.iter().cloned().collect();
                let tomb = topics
                    .iter()
                    .map(|t| {
                        p.tombstones
                            .get(t)
                            .is_some_and(|at| at.elapsed() <= tombstone_lifetime)
                    })
                    .collect();
                (p.info.clone(), topics, tomb)
            })
            .collect()
    }

    /// Everything, for GET /debug.
    pub fn dump(&self) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .peers
            .values()
            .map(|p| {
                serde_json::json!({
                    "peer": p.info,
                    "last_update_ms_ago": p.last_update.elapsed().as_millis() as u64,
                    "topics": p.topics,
                    "channels": p.channels,
                    "tombstoned_topics": p.tombstones.keys().collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "peers": peers, "created_topics": self.topics, "created_channels": self.channels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, port: u16) -> PeerInfo {
        PeerInfo {
            id,
            remote_address: format!("127.0.0.1:{}", 40000 + id),
            hostname: "h".into(),
            broadcast_address: "127.0.0.1".into(),
            tcp_port: port,
            http_port: port + 1,
            version: "1.3.0".into(),
        }
    }

    #[test]
    fn register_lookup_tombstone_remove() {
        let long = Duration::from_secs(300);
        let mut db = Db::default();
        db.add_peer(peer(1, 4150));
        db.add_peer(peer(2, 5150));
        db.register(1, "t", Some("c"));
        db.register(2, "t", None);
        assert_eq!(db.producers("t", long, long).len(), 2);
        assert_eq!(db.channels("t"), vec!["c".to_string()]);
        assert!(db.tombstone("t", "127.0.0.1:4151"));
        let live = db.producers("t", long, long);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].tcp_port, 5150);
        assert_eq!(
            db.producers("t", long, Duration::ZERO).len(),
            2,
            "tombstones expire"
        );
        db.remove_peer(2);
        assert!(db.producers("t", long, long).is_empty());
        db.unregister(1, "t", None);
        // As in NSQ the keys stay, with no producer; ephemeral ones go.
        assert!(db.topic_exists("t"));
        assert!(db.producers("t", long, long).is_empty());
        assert_eq!(db.channels("t"), vec!["c".to_string()]);
        db.register(1, "e#ephemeral", Some("c#ephemeral"));
        db.unregister(1, "e#ephemeral", None);
        assert!(!db.topic_exists("e#ephemeral"));
        db.delete_topic("t");
        db.create_channel("x", "y");
        assert_eq!(db.topics(), vec!["x".to_string()]);
        assert!(db.delete_channel("x", "y"));
    }
}
