//! Metadata in sled: the registry of topics and channels, pause flags, channel ids,
//! cursor state and the sequence watermark. Values are bincode (2.0.1, serde mode); this
//! module is the only place that knows that.
//!
//! Trees: `topics` (key: topic name) -> [`TopicMeta`]; `channels` (key: topic name, 0x00,
//! channel name) -> [`ChannelMeta`].

use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    pub paused: bool,
    pub next_channel_id: u32,
    /// Sequence numbers below this were handed out already (never reuse them).
    pub next_seq: u64,
    /// Messages below this were emptied away (topic empty).
    pub start_seq: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelMeta {
    pub id: u32,
    pub paused: bool,
    /// Next sequence to hand out.
    pub read: u64,
    /// Every sequence below this is finished (or was never for this channel).
    pub ack_floor: u64,
    /// Handed out and not finished, as half-open ranges [start, end), ascending. Everything
    /// else in [ack_floor, read) is finished.
    pub unacked: Vec<(u64, u64)>,
    /// Relocated stragglers at or past `read` (copies re-appended at the tail for this
    /// channel): the reader skips them when it gets there, whether or not they are finished.
    pub ahead: Vec<u64>,
}

pub struct Meta {
    db: sled::Db,
    topics: sled::Tree,
    channels: sled::Tree,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| Error::Encoding(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| Error::Encoding(e.to_string()))
}

fn channel_key(topic: &str, channel: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + channel.len() + 1);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(channel.as_bytes());
    k
}

/// Bound on sled's page cache. The store holds a few small values per topic and channel;
/// sled's default (1 GiB) lets cursor rewrites accumulate cached page versions. sled does not
/// persist this setting, so it applies to existing stores as well.
const CACHE_CAPACITY: u64 = 4 << 20;

impl Meta {
    /// Open (or create) the store. `segment_size` is left at sled's default (512 KiB), which
    /// sled persists and refuses to reopen with another value, so every existing data
    /// directory opens unchanged.
    pub fn open(path: &Path) -> Result<Meta> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_CAPACITY)
            .open()?;
        let topics = db.open_tree("topics")?;
        let channels = db.open_tree("channels")?;
        Ok(Meta {
            db,
            topics,
            channels,
        })
    }

    /// A store that lives in memory only (used when the data directory's store cannot be
    /// opened for lack of space; see `meta_recovery`).
    pub fn temporary() -> Result<Meta> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_CAPACITY)
            .open()?;
        let topics = db.open_tree("topics")?;
        let channels = db.open_tree("channels")?;
        Ok(Meta {
            db,
            topics,
            channels,
        })
    }

    pub fn topic_names(&self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        for kv in self.topics.iter() {
            let (k, _) = kv?;
            v.push(String::from_utf8_lossy(&k).to_string());
        }
        Ok(v)
    }

    pub fn topic(&self, name: &str) -> Result<Option<TopicMeta>> {
        self.topics.get(name)?.map(|v| decode(&v)).transpose()
    }

    pub fn put_topic(&self, name: &str, m: &TopicMeta) -> Result<()> {
        self.topics.insert(name, encode(m)?)?;
        Ok(())
    }

    pub fn channels(&self, topic: &str) -> Result<Vec<(String, ChannelMeta)>> {
        let mut prefix = topic.as_bytes().to_vec();
        prefix.push(0);
        let mut v = Vec::new();
        for kv in self.channels.scan_prefix(&prefix) {
            let (k, val) = kv?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
            v.push((name, decode(&val)?));
        }
        Ok(v)
    }

    pub fn put_channel(&self, topic: &str, channel: &str, m: &ChannelMeta) -> Result<()> {
        self.channels
            .insert(channel_key(topic, channel), encode(m)?)?;
        Ok(())
    }

    pub fn remove_channel(&self, topic: &str, channel: &str) -> Result<()> {
        self.channels.remove(channel_key(topic, channel))?;
        Ok(())
    }

    pub fn remove_topic(&self, topic: &str) -> Result<()> {
        for (c, _) in self.channels(topic)? {
            self.remove_channel(topic, &c)?;
        }
        self.topics.remove(topic)?;
        Ok(())
    }

    /// fsync the metadata.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// Compress a sorted set of sequences into half-open ranges.
pub fn to_ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some(last) if last.1 == s => last.1 = s + 1,
            _ => out.push((s, s + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta")).unwrap();
        let t = TopicMeta {
            paused: true,
            next_channel_id: 3,
            next_seq: 99,
            start_seq: 5,
        };
        m.put_topic("a", &t).unwrap();
        let c = ChannelMeta {
            id: 1,
            paused: false,
            read: 50,
            ack_floor: 10,
            unacked: vec![(10, 12), (20, 21)],
            ahead: vec![60],
        };
        m.put_channel("a", "c", &c).unwrap();
        m.put_channel("ab", "x", &c).unwrap();
        assert_eq!(m.topic("a").unwrap(), Some(t));
        assert_eq!(m.channels("a").unwrap(), vec![("c".to_string(), c.clone())]);
        m.remove_topic("a").unwrap();
        assert!(m.topic("a").unwrap().is_none());
        assert_eq!(m.channels("ab").unwrap().len(), 1);
        assert_eq!(
            to_ranges([1, 2, 3, 7, 9, 10]),
            vec![(1, 4), (7, 8), (9, 11)]
        );
    }

    /// A store written with the settings nsqd used before (sled's defaults but for the
    /// mode) opens with today's, keeps every topic, channel and cursor, and keeps the
    /// persisted segment size (sled refuses to open a store with a different one).
    #[test]
    fn a_store_written_with_the_old_settings_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let topics: Vec<(String, TopicMeta)> = (0..50u64)
            .map(|i| {
                let t = TopicMeta {
                    paused: i % 2 == 0,
                    next_channel_id: 3,
                    next_seq: 1_000 + i,
                    start_seq: i,
                };
                (format!("topic{i}"), t)
            })
            .collect();
        let channel = |i: u64, c: u32| ChannelMeta {
            id: c,
            paused: c == 2,
            read: 900 + i,
            ack_floor: 100 + i,
            unacked: vec![(100 + i, 102 + i)],
            ahead: vec![950 + i],
        };
        {
            let db = sled::Config::new()
                .path(&path)
                .mode(sled::Mode::HighThroughput)
                .open()
                .unwrap();
            let old = Meta {
                topics: db.open_tree("topics").unwrap(),
                channels: db.open_tree("channels").unwrap(),
                db,
            };
            for (i, (name, t)) in topics.iter().enumerate() {
                old.put_topic(name, t).unwrap();
                for c in 1..3 {
                    old.put_channel(name, &format!("ch{c}"), &channel(i as u64, c))
                        .unwrap();
                }
            }
            old.flush().unwrap();
        }
        // sled's `conf`: text lines, then a CRC.
        let conf = std::fs::read(path.join("conf")).unwrap();
        let conf = String::from_utf8_lossy(&conf);
        assert!(conf.contains("segment_size: 524288"), "{conf}");
        let m = Meta::open(&path).unwrap();
        let mut names = m.topic_names().unwrap();
        names.sort();
        let mut want: Vec<String> = topics.iter().map(|(n, _)| n.clone()).collect();
        want.sort();
        assert_eq!(names, want);
        for (i, (name, t)) in topics.iter().enumerate() {
            assert_eq!(m.topic(name).unwrap().as_ref(), Some(t));
            let chans = m.channels(name).unwrap();
            assert_eq!(
                chans,
                vec![
                    ("ch1".to_string(), channel(i as u64, 1)),
                    ("ch2".to_string(), channel(i as u64, 2))
                ]
            );
        }
        // Written again with today's settings, and reopened.
        m.put_channel("topic7", "ch1", &channel(70, 1)).unwrap();
        m.flush().unwrap();
        drop(m);
        let m = Meta::open(&path).unwrap();
        assert_eq!(m.channels("topic7").unwrap()[0].1, channel(70, 1));
    }
}
