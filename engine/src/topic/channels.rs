//! A topic's channels: creating, finding, deleting and rewinding them, persisting their
//! cursors, relocating their stragglers and the GC floor they set.

use super::*;

impl Topic {
    pub fn channel(&self, name: &str) -> Result<Arc<Channel>> {
        self.channel_from(name, false)
    }

    /// Get or create a channel; a new one starts at the oldest message still stored
    /// (retained history included) when `earliest`, else as in NSQ (the first channel gets
    /// the backlog, later ones only new messages).
    pub fn channel_from(&self, name: &str, earliest: bool) -> Result<Arc<Channel>> {
        if let Some(c) = self.get_channel(name) {
            return Ok(c);
        }
        if !crate::valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let mut channels = self.channels.write();
        if let Some(c) = channels.get(name) {
            return Ok(c.clone());
        }
        let id = {
            let mut n = self.next_channel_id.lock();
            let id = *n;
            *n += 1;
            id
        };
        // The first channel gets the backlog; later ones start at the end, as in NSQ.
        let start = {
            let st = self.core.state.lock();
            if channels.is_empty() || earliest {
                self.core.earliest(&st)
            } else {
                st.next_seq
            }
        };
        let ephemeral = self.core.ephemeral || name.ends_with("#ephemeral");
        let ch = Arc::new(Channel::new(&self.core, name, id, start, ephemeral));
        self.core.floors.write().insert(id, ch.marks.clone());
        channels.insert(name.to_string(), ch.clone());
        drop(channels);
        // Creating a channel promises nothing about durability: if its cursor cannot be
        // written now (a full disk), the sync thread writes it later (it is dirty), and
        // consumers are served meanwhile.
        if let Err(e) = self.persist_meta().and_then(|_| self.persist_channel(&ch)) {
            tracing::warn!(topic = %self.core.name, channel = %name, error = %e, "channel created in memory; its cursor will be persisted when the disk allows");
            ch.dirty.store(true, Ordering::Release);
        }
        Ok(ch)
    }

    /// Move a channel's read position and persist it before returning (so a restart at any
    /// moment after the answer keeps it). Returns the sequence it reads from next. Blocks
    /// on disk (cursor write and metadata flush).
    pub fn rewind_channel(&self, name: &str, to: RewindTo) -> Result<Option<u64>> {
        let Some(ch) = self.get_channel(name) else {
            return Ok(None);
        };
        let seq = ch.rewind(to)?;
        if !ch.ephemeral {
            self.persist_channel(&ch)?;
            if let Some(m) = &self.meta {
                m.flush()?;
            }
        }
        Ok(Some(seq))
    }

    pub fn get_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().get(name).cloned()
    }

    pub fn channel_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.channels.read().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn delete_channel(&self, name: &str) -> Result<()> {
        let Some(ch) = self.channels.write().remove(name) else {
            return Ok(());
        };
        ch.deleted.store(true, Ordering::Release);
        self.core.floors.write().remove(&ch.id);
        if let Some(m) = &self.meta {
            m.remove_channel(&self.core.name, name)?;
            let snap = self
                .core
                .dir
                .join("channels")
                .join(channel_snapshot_name(name));
            let _ = std::fs::remove_file(snap);
        }
        self.core.trim_mem();
        Ok(())
    }

    /// Persist every channel's cursor (sled + snapshot file). Called by the sync thread.
    pub(crate) fn persist_channels(&self, all: bool) -> Result<()> {
        for ch in self.channels.read().values() {
            if ch.ephemeral {
                continue;
            }
            if all || ch.dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.persist_channel(ch) {
                    ch.dirty.store(true, Ordering::Release); // try again next round
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    pub(super) fn persist_channel(&self, ch: &Channel) -> Result<()> {
        let Some(m) = &self.meta else { return Ok(()) };
        if ch.ephemeral {
            return Ok(());
        }
        let _writer = ch.persist_lock.lock();
        let cm = ch.snapshot();
        m.put_channel(&self.core.name, &ch.name, &cm)?;
        write_snapshot(&self.core.io, &self.core.dir, &ch.name, &cm)
    }

    /// Relocate the few unfinished messages that keep old segments alive (see
    /// [`Channel::relocate_stragglers`]): for each durable channel, those below the start of
    /// the next-to-last segment. Returns how many moved.
    pub(crate) fn relocate_stragglers(&self, max: usize) -> Result<usize> {
        if self.core.ephemeral {
            return Ok(0);
        }
        let Some(boundary) = self
            .core
            .state
            .lock()
            .log
            .as_ref()
            .and_then(|l| l.relocation_boundary())
        else {
            return Ok(0);
        };
        let channels: Vec<Arc<Channel>> = self.channels.read().values().cloned().collect();
        let mut moved = 0;
        for ch in channels.iter().filter(|c| !c.ephemeral) {
            moved += ch.relocate_stragglers(boundary, max)?;
        }
        Ok(moved)
    }

    /// Lowest sequence any durable reader may still need.
    pub(crate) fn gc_floor(&self) -> u64 {
        let channels = self.channels.read();
        let durable: Vec<u64> = channels
            .values()
            .filter(|c| !c.ephemeral)
            .map(|c| c.ack_floor())
            .collect();
        if let Some(m) = durable.iter().min() {
            return *m;
        }
        if let Some(m) = channels.values().map(|c| c.ack_floor()).min() {
            return m;
        }
        self.core.state.lock().start_seq
    }
}
