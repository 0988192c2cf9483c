//! What a topic reports without changing anything: stats, its external readers, a peek
//! at its newest messages.

use super::*;

/// Keep the longest prefix whose bodies fit in `max_bytes` (at least one message).
pub(crate) fn trim_to_bytes(msgs: &mut Vec<Message>, max_bytes: usize) {
    let mut total = 0;
    let keep = msgs
        .iter()
        .position(|m| {
            total += m.body.len();
            total > max_bytes
        })
        .unwrap_or(msgs.len())
        .max(1)
        .min(msgs.len());
    msgs.truncate(keep);
}

impl Topic {
    pub fn stats(&self) -> TopicStats {
        let storage_error = self.core.fault();
        let no_channels = self.channels.read().is_empty();
        let st = self.core.state.lock();
        let mem_front = st.mem_front();
        let (segments, log_bytes) = st
            .log
            .as_ref()
            .map(|l| (l.segment_count(), l.bytes()))
            .unwrap_or((0, 0));
        let mut s = TopicStats {
            mem_depth: st.mem.len() as u64,
            next_seq: st.next_seq,
            segments,
            log_bytes,
            corrupt_records: self.recovery.corrupt_records,
            ..Default::default()
        };
        if no_channels {
            let oldest = st
                .log
                .as_ref()
                .and_then(|l| if l.is_empty() { None } else { l.start_seq() })
                .unwrap_or(mem_front)
                .max(st.start_seq);
            s.depth = st.next_seq.saturating_sub(oldest) - st.lost_within(oldest, st.next_seq);
            s.backend_depth = mem_front.saturating_sub(oldest) - st.lost_within(oldest, mem_front);
        }
        s.storage_error = storage_error;
        s.oldest_seq = self.core.earliest(&st);
        s.oldest_ts = st
            .log
            .as_ref()
            .and_then(|l| l.oldest_ts())
            .or_else(|| st.mem.front().map(|m| m.header.timestamp_ns))
            .unwrap_or(0);
        s
    }

    /// The topic's external readers (`external.rs`), read from their cursor files now,
    /// with their depth as a channel's: messages stored at or after their cursor.
    pub fn external_readers(&self) -> Vec<crate::external::ExternalReaderInfo> {
        if self.core.ephemeral {
            return Vec::new();
        }
        let ext = crate::external::scan_cursors(&self.core.dir);
        let st = self.core.state.lock();
        let mem_front = st.mem_front();
        let earliest = self.core.earliest(&st);
        let mut v: Vec<crate::external::ExternalReaderInfo> = ext
            .cursors
            .iter()
            .map(|c| {
                let from = c.next.max(earliest);
                crate::external::ExternalReaderInfo {
                    name: c.reader.clone(),
                    next: c.next,
                    depth: st.next_seq.saturating_sub(from) - st.lost_within(from, st.next_seq),
                    backend_depth: mem_front.saturating_sub(from) - st.lost_within(from, mem_front),
                    error: None,
                }
            })
            .collect();
        for (path, reason) in &ext.damaged {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.strip_suffix(crate::external::CURSOR_SUFFIX).unwrap_or(n))
                .unwrap_or("?")
                .to_string();
            v.push(crate::external::ExternalReaderInfo {
                name,
                next: 0,
                depth: 0,
                backend_depth: 0,
                error: Some(reason.clone()),
            });
        }
        v
    }

    /// The newest `n` messages of the topic (at most `max_bytes` of bodies), oldest first,
    /// without touching any channel.
    pub fn peek_newest(&self, n: usize, max_bytes: usize) -> Result<Vec<Message>> {
        let from = {
            let st = self.core.state.lock();
            st.next_seq
                .saturating_sub(n as u64)
                .max(self.core.earliest(&st))
        };
        let mut out = Vec::new();
        let mut hint = crate::log::ReadHint::default();
        self.core.read_from(from, n, 0, &mut hint, &mut out)?;
        trim_to_bytes(&mut out, max_bytes);
        Ok(out)
    }
}
