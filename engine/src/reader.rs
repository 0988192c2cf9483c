//! Read-only view of a data directory for tools (`nsq_inspect`, offline `nsq_to_file`).
//! Works on a stopped directory and on one a running nsqd is writing: it never takes
//! sled's lock (cursor state comes from the snapshot files the engine writes atomically
//! beside each topic's segments), never maps a segment, and stops at the first record
//! that is not valid yet.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::layout::topic_dir_name;
pub use crate::layout::CursorSnapshot;
use crate::log::{ScanItem, SegmentScanner, StoredRecord};

#[derive(Debug, Clone)]
pub struct TopicDir {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SegmentSummary {
    pub path: PathBuf,
    pub first_seq: u64,
    pub file_size: u64,
    /// Bytes holding valid records.
    pub used_bytes: u64,
    pub records: u64,
    pub last_seq: Option<u64>,
    pub corrupt: Vec<Corruption>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: &'static str,
}

pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    pub fn open(path: &Path) -> Result<DataDir> {
        let topics = path.join("topics");
        std::fs::metadata(&topics).at(&topics)?;
        Ok(DataDir {
            path: path.to_path_buf(),
        })
    }

    pub fn topics(&self) -> Result<Vec<TopicDir>> {
        let dir = self.path.join("topics");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(t) = name.strip_prefix("t_") {
                v.push(TopicDir {
                    name: t.to_string(),
                    path: e.path(),
                });
            }
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub fn topic(&self, name: &str) -> Result<TopicDir> {
        let path = self.path.join("topics").join(topic_dir_name(name));
        std::fs::metadata(&path).at(&path)?;
        Ok(TopicDir {
            name: name.to_string(),
            path,
        })
    }

    pub fn segment_paths(&self, t: &TopicDir) -> Result<Vec<(u64, PathBuf)>> {
        crate::log::list_segments(&t.path)
    }

    /// Scan every segment: sizes, record counts, and every bad record with its offset.
    /// `progress` gets the bytes scanned so far.
    pub fn segments(
        &self,
        t: &TopicDir,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<SegmentSummary>> {
        let mut out = Vec::new();
        let mut done = 0u64;
        for (first, path) in self.segment_paths(t)? {
            let file = File::open(&path).at(&path)?;
            let size = file.metadata().at(&path)?.len();
            let mut s = SegmentSummary {
                path: path.clone(),
                first_seq: first,
                file_size: size,
                used_bytes: 0,
                records: 0,
                last_seq: None,
                corrupt: Vec::new(),
            };
            let mut sc = SegmentScanner::new(&file, &path, size, 0);
            loop {
                match sc.next_item()? {
                    ScanItem::Record { record, .. } => {
                        s.records += 1;
                        s.last_seq = Some(record.header.seq);
                        s.used_bytes = sc.offset;
                    }
                    ScanItem::Corrupt { offset, reason, .. } => {
                        s.corrupt.push(Corruption {
                            path: path.clone(),
                            offset,
                            reason,
                        });
                        // Continue with the next valid record after the damage, as the
                        // engine's recovery does.
                        let lo = s.last_seq.map_or(first, |l| l + 1);
                        if sc.resync(offset, lo..u64::MAX)?.is_none() {
                            break;
                        }
                    }
                    ScanItem::End { .. } => break,
                }
                if s.records.is_multiple_of(65536) {
                    progress(done + sc.offset);
                }
            }
            done += size;
            progress(done);
            out.push(s);
        }
        Ok(out)
    }

    /// Visit valid records with `from <= seq < to`, in order; `f` returns false to stop.
    /// Corrupt records are skipped (use [`DataDir::segments`] to report them).
    pub fn records(
        &self,
        t: &TopicDir,
        from: u64,
        to: u64,
        mut f: impl FnMut(&StoredRecord) -> bool,
    ) -> Result<()> {
        let segs = self.segment_paths(t)?;
        let start = segs
            .partition_point(|(first, _)| *first <= from)
            .saturating_sub(1);
        for &(first, ref path) in &segs[start..] {
            let file = File::open(path).at(path)?;
            let size = file.metadata().at(path)?.len();
            let mut sc = SegmentScanner::new(&file, path, size, 0);
            loop {
                match sc.next_item()? {
                    ScanItem::Record { record, .. } => {
                        let seq = record.header.seq;
                        if seq >= to {
                            return Ok(());
                        }
                        if seq >= from && !f(&record) {
                            return Ok(());
                        }
                    }
                    ScanItem::Corrupt { offset, .. } => {
                        if sc.resync(offset, from.max(first)..u64::MAX)?.is_none() {
                            break;
                        }
                    }
                    ScanItem::End { .. } => break,
                }
            }
        }
        Ok(())
    }

    /// Cursor states of a topic's durable channels, as last persisted.
    pub fn cursors(&self, t: &TopicDir) -> Result<Vec<CursorSnapshot>> {
        let dir = t.path.join("channels");
        let mut v = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(v);
        };
        for e in entries {
            let e = e.at(&dir)?;
            let name = e.file_name().to_string_lossy().to_string();
            if !(name.starts_with("c_") && name.ends_with(".json")) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).at(&e.path())?;
            match serde_json::from_str::<CursorSnapshot>(&text) {
                Ok(c) => v.push(c),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "unreadable cursor snapshot")
                }
            }
        }
        v.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(v)
    }
}
