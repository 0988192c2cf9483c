//! The writable tail segment of a topic log.
//!
//! Records are appended with `pwrite` (through the persistence seam, [`Io`]), never through
//! a memory map: a write into a mapped page that the file system cannot allocate (a full
//! disk) or read back (an I/O error) kills the process with SIGBUS, while `pwrite` returns
//! an error the publish can be answered with. No blocks are reserved ahead of a write: the
//! file system allocates them when it writes the pages back (delayed allocation, off the
//! publish path), and a write it has no room for fails with ENOSPC at once. Reserving
//! with `fallocate` before each step cost the writer a system call that waits for the
//! disk (for the file system's block bitmaps, up to 50 ms measured) and the publish path
//! 17-22 % of its 16 KiB throughput (docs/BENCHMARKS.md), for nothing a `pwrite` does not
//! already report. The file's size is always the end of the last complete record;
//! readers `pread` up to the length the log committed.
//!
//! A batch is written with one `pwrite`, or one `pwritev` of pieces taken from where they
//! are. If it fails part-way, the file is cut back to where the batch started, so a
//! half-written record is never there to be read.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{IoContext, Result};
use crate::fs::Io;

pub(crate) struct SegmentWriter {
    path: PathBuf,
    file: Arc<File>,
    /// End of the last complete record written (the file's size).
    pos: u64,
    /// Blocks are reserved below this offset (by the full-disk probe, past `pos`).
    reserved: u64,
    /// Largest size this segment may reach (`--max-bytes-per-file`, or one bigger record).
    capacity: u64,
    io: Io,
    /// A sync of this file failed: what it holds since the last good sync may never reach
    /// the disk, and a later "successful" sync would prove nothing (the kernel dropped the
    /// dirty state). The log stops writing here and rolls to a fresh segment.
    poisoned: Arc<AtomicBool>,
}

/// What the sync thread needs to make a segment durable without the topic lock.
#[derive(Clone)]
pub(crate) struct SyncHandle {
    file: Arc<File>,
    path: PathBuf,
    io: Io,
    poisoned: Arc<AtomicBool>,
    /// For a sealed segment: cut the file to this length after syncing (returns the
    /// unused reservation to the file system).
    trim_to: Option<u64>,
    /// For a sealed segment: its summary (see `seal.rs`), written once its data is synced.
    summary: Option<Arc<(PathBuf, Vec<u8>)>>,
}

impl SyncHandle {
    /// fdatasync. A failure poisons the segment (see [`SegmentWriter`]); a poisoned segment
    /// is never reported as synced again.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(crate::Error::Io {
                path: self.path.clone(),
                source: std::io::Error::other("an earlier sync of this segment failed"),
            });
        }
        if let Err(e) = self.io.sync_data(&self.file) {
            self.poisoned.store(true, Ordering::Release);
            // The data may not be what a provisional summary (written at the seal, see
            // seal.rs) describes: let the next start scan the segment.
            if let Some(summary) = &self.summary {
                let _ = std::fs::remove_file(&summary.0);
            }
            return Err(e).at(&self.path);
        }
        if let Some(len) = self.trim_to {
            // Only gives back reserved blocks past the data; failing is harmless.
            let _ = self.io.set_len(&self.file, len);
        }
        if let Some(summary) = &self.summary {
            // Best effort: without it the next start scans this segment.
            let (path, bytes) = summary.as_ref();
            let tmp = path.with_extension("idx.tmp");
            let written = self
                .io
                .write_file(&tmp, bytes)
                .and_then(|_| self.io.rename(&tmp, path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "could not write a segment summary");
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

impl SegmentWriter {
    /// Open (or create) `path` for appending at `pos`. Anything after `pos` is a torn or
    /// corrupt tail recovery decided to drop (or the zero tail of a segment preallocated
    /// by an older version): the file is cut to `pos`.
    pub(crate) fn open(io: &Io, path: &Path, pos: u64, capacity: u64) -> Result<SegmentWriter> {
        let create = !path.exists();
        let file = io.open_rw(path, create).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len != pos {
            io.set_len(&file, pos).at(path)?;
        }
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            file: Arc::new(file),
            pos,
            reserved: pos,
            capacity: capacity.max(pos),
            io: io.clone(),
            poisoned: Arc::new(AtomicBool::new(false)),
        })
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.capacity.saturating_sub(self.pos)
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Reserve a step ahead now (used to notice that a full disk has room again).
    pub(crate) fn probe_space(&mut self) -> Result<()> {
        // Room for a typical batch, not merely a page: a fault cleared too early would
        // only come back with the next publish.
        const PROBE: u64 = 256 * 1024;
        let from = self.reserved.max(self.pos);
        match self.io.allocate(&self.file, from, PROBE) {
            Ok(true) => {
                self.reserved = from + PROBE;
                Ok(())
            }
            Ok(false) => {
                Err(std::io::Error::other("file system cannot reserve space")).at(&self.path)
            }
            Err(e) => Err(e).at(&self.path),
        }
    }

    /// Write whole encoded records at the end. On error nothing of `bytes` counts: the
    /// file is cut back to where it was, and `pos` is unchanged.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.append_with(bytes.len() as u64, |io, file, at| {
            io.write_all_at(file, bytes, at)
        })
    }

    /// [`append`](Self::append) for a batch given in pieces (`len` bytes in all), written
    /// with one `pwritev`: bodies go to the file from where they are. Same guarantees.
    pub(crate) fn append_vectored(
        &mut self,
        bufs: &mut [std::io::IoSlice<'_>],
        len: u64,
    ) -> Result<()> {
        debug_assert_eq!(len, bufs.iter().map(|b| b.len() as u64).sum::<u64>());
        self.append_with(len, |io, file, at| io.write_all_vectored_at(file, bufs, at))
    }

    /// `write` `len` bytes at the end; on error drop any part that was written (and any
    /// reservation past it), leaving `pos` unchanged.
    fn append_with(
        &mut self,
        len: u64,
        write: impl FnOnce(&Io, &File, u64) -> std::io::Result<()>,
    ) -> Result<()> {
        let at = self.begin_external(len);
        let written = write(&self.io, &self.file, at);
        self.end_external(at, len, written)
    }

    /// Plan a write of `len` bytes at the end that the caller makes itself, without this
    /// writer (see `Log::begin_append`): returns where it goes. Nothing counts until
    /// [`end_external`](Self::end_external) with the write's result.
    pub(crate) fn begin_external(&self, len: u64) -> u64 {
        debug_assert!(len <= self.remaining(), "caller checks remaining()");
        self.pos
    }

    /// The end of a write [`begin_external`](Self::begin_external) planned at `at`: on
    /// success its bytes count; on error whatever part was written is dropped, as in
    /// [`append`](Self::append).
    pub(crate) fn end_external(&mut self, at: u64, len: u64, r: std::io::Result<()>) -> Result<()> {
        debug_assert_eq!(at, self.pos, "one external write at a time");
        if let Err(e) = r {
            let _ = self.io.set_len(&self.file, self.pos);
            self.reserved = self.pos;
            return Err(e).at(&self.path);
        }
        self.pos += len;
        Ok(())
    }

    pub(crate) fn io(&self) -> &Io {
        &self.io
    }

    pub(crate) fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.file.clone(),
            path: self.path.clone(),
            io: self.io.clone(),
            poisoned: self.poisoned.clone(),
            trim_to: None,
            summary: None,
        }
    }

    /// Stop writing here. Returns the handle the sync thread uses to make the rest of it
    /// durable and trim the reservation (no disk work happens on the caller's thread).
    pub(crate) fn seal(self, summary: Option<(PathBuf, Vec<u8>)>) -> SyncHandle {
        let mut h = self.sync_handle();
        h.trim_to = (self.reserved > self.pos).then_some(self.pos);
        h.summary = summary.map(Arc::new);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Fault, FaultPlan, Op};

    #[test]
    fn appends_extend_the_file_and_reserve_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.seg");
        let plan = FaultPlan::new();
        // An append makes no `fallocate`: one that would fail does not matter.
        plan.fail_always(Op::Allocate, Fault::NoSpace);
        let mut w = SegmentWriter::open(&Io::with_faults(plan), &path, 0, 1 << 20).unwrap();
        w.append(b"hello").unwrap();
        w.append(b" world").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(w.pos(), 11);
        w.sync_handle().sync().unwrap();
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.seg");
        let plan = FaultPlan::new();
        let io = Io::with_faults(plan.clone());
        let mut w = SegmentWriter::open(&io, &path, 0, 1 << 20).unwrap();
        w.append(b"first").unwrap();
        plan.fail_nth(Op::Write, 1, Fault::ShortWrite);
        assert!(w.append(b"second record").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // No room: refused, nothing written, and the probe says so too.
        plan.fail_always(Op::Write, Fault::NoSpace);
        plan.fail_always(Op::Allocate, Fault::NoSpace);
        assert!(w.append(b"third").unwrap_err().is_no_space());
        assert!(w.probe_space().unwrap_err().is_no_space());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(w.pos(), 5);
        // Room again: the probe reserves past the end, writes go on, and sealing gives
        // back what the probe reserved and no record used.
        plan.heal();
        if w.probe_space().is_ok() {
            assert!(w.reserved > w.pos());
        }
        w.append(b"-ok").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first-ok");
        let pos = w.pos();
        let reserved = w.reserved;
        let h = w.seal(None);
        assert_eq!(h.trim_to, (reserved > pos).then_some(pos));
    }

    #[test]
    fn vectored_appends_write_the_pieces_in_order_or_nothing() {
        use std::io::IoSlice;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.seg");
        let plan = FaultPlan::new();
        let io = Io::with_faults(plan.clone());
        let mut w = SegmentWriter::open(&io, &path, 0, 1 << 20).unwrap();
        let big = vec![b'x'; 9000];
        let mut pieces = [
            IoSlice::new(b"head"),
            IoSlice::new(&big),
            IoSlice::new(b"tail"),
        ];
        w.append_vectored(&mut pieces, 9008).unwrap();
        let mut expect = b"head".to_vec();
        expect.extend_from_slice(&big);
        expect.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(&path).unwrap(), expect);
        // A short write: cut back to where the batch started, position unchanged.
        plan.fail_nth(Op::Write, 1, Fault::ShortWrite);
        let mut pieces = [IoSlice::new(b"more"), IoSlice::new(&big)];
        assert!(w.append_vectored(&mut pieces, 9004).is_err());
        assert_eq!(w.pos(), 9008);
        assert_eq!(std::fs::read(&path).unwrap(), expect);
        // More pieces than one pwritev takes (IOV_MAX): still all of them, in order.
        let many: Vec<[u8; 3]> = (0..3000u32)
            .map(|i| [i as u8, (i >> 8) as u8, b'.'])
            .collect();
        let mut pieces: Vec<IoSlice<'_>> = many.iter().map(|p| IoSlice::new(p)).collect();
        w.append_vectored(&mut pieces, 9000).unwrap();
        for p in &many {
            expect.extend_from_slice(p);
        }
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }

    #[test]
    fn a_failed_sync_poisons_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.seg");
        let plan = FaultPlan::new();
        let io = Io::with_faults(plan.clone());
        let mut w = SegmentWriter::open(&io, &path, 0, 1 << 20).unwrap();
        w.append(b"x").unwrap();
        plan.fail_nth(Op::Sync, 1, Fault::Eio);
        let h = w.sync_handle();
        assert!(h.sync().is_err());
        assert!(w.is_poisoned());
        // Never "succeeds" later.
        assert!(h.sync().is_err());
    }
}
