//! The one place with `unsafe`: writing a segment through a memory map.
//!
//! Soundness: the map is created over a file we preallocated with `set_len(capacity)` and
//! only this writer maps it for writing. Nobody shrinks the file while it is mapped:
//! sealing a segment (truncating it to its used length) happens only after the map is
//! dropped, and recovery truncates before mapping. Writers copy bytes into ranges
//! `[pos, pos + len)` that are inside `capacity` and that no reader looks at yet (readers
//! use `pread` on the file and stop at the committed length), so there is no aliasing of
//! Rust references: the map is only ever touched through raw pointer copies and `msync`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::error::{IoContext, Result};

/// The writable tail segment of a topic log.
pub struct SegmentWriter {
    pub path: PathBuf,
    pub file: Arc<File>,
    map: Arc<MmapRaw>,
    pub pos: usize,
    pub capacity: usize,
    /// `pos` as seen by the sync thread.
    committed: Arc<AtomicUsize>,
    /// Bytes at the start of the map already released from our resident set.
    released: Arc<AtomicUsize>,
}

/// A handle the sync thread uses to msync a segment without holding the topic lock.
#[derive(Clone)]
pub struct SyncHandle {
    map: Arc<MmapRaw>,
    path: PathBuf,
    committed: Arc<AtomicUsize>,
    released: Arc<AtomicUsize>,
}

const PAGE: usize = 4096;

impl SyncHandle {
    /// msync(MS_SYNC) the whole map: dirty pages reach stable storage. Then release the
    /// pages that are complete and synced from this process's resident set: they stay in
    /// the page cache (readers use pread), but a long write map no longer inflates RSS.
    pub fn sync(&self) -> Result<()> {
        let committed = self.committed.load(Ordering::Acquire);
        self.map.flush().at(&self.path)?;
        release_pages(&self.map, &self.released, committed / PAGE * PAGE);
        Ok(())
    }
}

impl SegmentWriter {
    /// Open (or create) `path` for appending at `pos`, making sure the file is exactly
    /// `capacity` bytes with zeros after `pos` (anything there is a torn or corrupt tail
    /// that recovery decided to drop).
    pub fn open(path: &Path, pos: usize, capacity: usize) -> Result<SegmentWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        file.set_len(pos as u64).at(path)?;
        file.set_len(capacity as u64).at(path)?;
        let map = MmapRaw::map_raw(&file).at(path)?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            file: Arc::new(file),
            map: Arc::new(map),
            pos,
            capacity,
            committed: Arc::new(AtomicUsize::new(pos)),
            released: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn remaining(&self) -> usize {
        self.capacity - self.pos
    }

    /// Reserve `len` bytes at the end and let `fill` write them in place.
    pub fn append_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        assert!(len <= self.remaining(), "caller checks remaining()");
        // SAFETY: see the module comment: `[pos, pos + len)` is inside the mapping, only
        // this writer touches it, and the slice does not outlive this call.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(self.pos), len) };
        fill(buf);
        self.pos += len;
        self.committed.store(self.pos, Ordering::Release);
        self.release_behind();
    }

    /// Every few MiB, drop the pages behind the write position from our resident set, even
    /// before they are synced, so a fast writer between two sync rounds does not grow RSS
    /// by everything it wrote meanwhile.
    fn release_behind(&mut self) {
        const STEP: usize = 8 << 20;
        if self.pos / PAGE * PAGE >= self.released.load(Ordering::Acquire) + STEP {
            release_pages(&self.map, &self.released, self.pos / PAGE * PAGE);
        }
    }

    /// Copy already-encoded bytes to the end.
    pub fn write_at_end(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.remaining(), "caller checks remaining()");
        // SAFETY: see the module comment: the range is inside the mapping, only this
        // writer writes it, and no Rust reference to the mapped memory exists.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(self.pos),
                bytes.len(),
            );
        }
        self.pos += bytes.len();
        self.committed.store(self.pos, Ordering::Release);
        self.release_behind();
    }

    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            map: self.map.clone(),
            path: self.path.clone(),
            committed: self.committed.clone(),
            released: self.released.clone(),
        }
    }

    /// Flush and stop writing. The file keeps its preallocated size (a segment is only
    /// sealed when the next record does not fit, so the zero tail is shorter than one
    /// record); not truncating means no map anywhere can ever point past the file's end.
    pub fn seal(self) -> Result<Arc<File>> {
        self.map.flush().at(&self.path)?;
        Ok(self.file)
    }
}

/// Drop the map's pages below `upto` (page-aligned, at or below what the writer has
/// written) from this process's resident set, starting where the last release stopped.
fn release_pages(map: &MmapRaw, released: &AtomicUsize, upto: usize) {
    let from = released.load(Ordering::Acquire);
    if upto <= from {
        return;
    }
    // SAFETY: [from, upto) is inside the mapping and entirely below the write position:
    // the writer never writes there again and no Rust reference into it exists. On a
    // shared file mapping MADV_DONTNEED only removes our page-table entries; a dirty page
    // keeps its data and dirty state in the page cache (the kernel marks it dirty as it
    // unmaps), and msync(MS_SYNC) writes back the whole file range, mapped or not.
    let rc = unsafe {
        libc::madvise(
            map.as_mut_ptr().add(from) as *mut libc::c_void,
            upto - from,
            libc::MADV_DONTNEED,
        )
    };
    if rc == 0 {
        released.fetch_max(upto, Ordering::AcqRel);
    }
}

/// Make a new directory entry durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_released_behind_the_writer_keep_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.seg");
        let mut w = SegmentWriter::open(&path, 0, 24 << 20).unwrap();
        let chunk: Vec<u8> = (0..4099u32).map(|i| (i % 251) as u8).collect();
        let mut written = Vec::new();
        while w.remaining() >= chunk.len() && written.len() < 20 << 20 {
            w.write_at_end(&chunk);
            written.extend_from_slice(&chunk);
        }
        assert!(
            w.released.load(Ordering::Acquire) >= 8 << 20,
            "released behind"
        );
        // Not synced yet: the data is in the page cache all the same.
        let on_file = std::fs::read(&path).unwrap();
        assert_eq!(&on_file[..written.len()], &written[..]);
        w.sync_handle().sync().unwrap();
        let on_file = std::fs::read(&path).unwrap();
        assert_eq!(&on_file[..written.len()], &written[..]);
    }
}
