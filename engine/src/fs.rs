//! The persistence seam: every file operation of the log and of the cursor snapshots goes
//! through [`Io`], so tests can make any one of them fail the way a disk does (ENOSPC,
//! EIO, a short write) and check that nothing acknowledged is lost.
//!
//! In a normal build `Io` is a zero-sized value and each method is the system call itself.
//! Under `cfg(test)` it may carry a [`FaultPlan`] that is consulted before each call.
//! sled (the metadata store) does its own IO and is not behind this seam.
//!
//! This is the engine's one module with `unsafe` (the `fallocate`, `flock` and `pwritev` calls).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The kinds of operation a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Allocate,
    Write,
    Sync,
    Rename,
    Read,
}

#[derive(Clone, Default)]
pub struct Io {
    #[cfg(test)]
    pub(crate) faults: Option<std::sync::Arc<FaultPlan>>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

/// What an injected fault does.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    NoSpace,
    Eio,
    /// Writes only part of the buffer (then the next call fails with ENOSPC).
    ShortWrite,
}

/// Fails chosen calls: the `n`th call (counting from 1) of an operation kind, or every call
/// of a kind while `always` holds it. Counters are global to the plan.
#[cfg(test)]
#[derive(Default)]
pub struct FaultPlan {
    state: parking_lot::Mutex<PlanState>,
}

#[cfg(test)]
#[derive(Default)]
struct PlanState {
    counts: std::collections::HashMap<Op, u64>,
    nth: Vec<(Op, u64, Fault)>,
    always: std::collections::HashMap<Op, Fault>,
}

#[cfg(test)]
impl FaultPlan {
    pub fn new() -> std::sync::Arc<FaultPlan> {
        std::sync::Arc::new(FaultPlan::default())
    }

    /// Fail the `n`th call of `op` from now on (1 = the next one).
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        let mut s = self.state.lock();
        let base = s.counts.get(&op).copied().unwrap_or(0);
        s.nth.push((op, base + n, fault));
    }

    /// Fail every call of `op` until [`FaultPlan::heal`].
    pub fn fail_always(&self, op: Op, fault: Fault) {
        self.state.lock().always.insert(op, fault);
    }

    /// How many calls of `op` were made so far (failed ones included).
    pub fn count(&self, op: Op) -> u64 {
        self.state.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// Whether every `fail_nth` fault has fired.
    pub fn all_fired(&self) -> bool {
        self.state.lock().nth.is_empty()
    }

    pub fn heal(&self) {
        let mut s = self.state.lock();
        s.always.clear();
        s.nth.clear();
    }

    fn check(&self, op: Op) -> Option<Fault> {
        let mut s = self.state.lock();
        let c = s.counts.entry(op).or_insert(0);
        *c += 1;
        let now = *c;
        let hit = match s.always.get(&op) {
            Some(f) => Some(*f),
            None => s
                .nth
                .iter()
                .position(|&(o, n, _)| o == op && n == now)
                .map(|i| s.nth.swap_remove(i).2),
        };
        hit
    }
}

#[cfg(test)]
fn fault_error(f: Fault) -> io::Error {
    match f {
        Fault::NoSpace | Fault::ShortWrite => io::Error::from_raw_os_error(libc::ENOSPC),
        Fault::Eio => io::Error::from_raw_os_error(libc::EIO),
    }
}

impl Io {
    #[cfg(test)]
    pub(crate) fn with_faults(plan: std::sync::Arc<FaultPlan>) -> Io {
        Io { faults: Some(plan) }
    }

    #[inline]
    fn fault(&self, _op: Op) -> io::Result<()> {
        #[cfg(test)]
        if let Some(f) = self.faults.as_ref().and_then(|p| p.check(_op)) {
            if f != Fault::ShortWrite || _op != Op::Write {
                return Err(fault_error(f));
            }
        }
        Ok(())
    }

    /// Open a segment for reading and writing, creating it if needed.
    pub fn open_rw(&self, path: &Path, create: bool) -> io::Result<File> {
        if create {
            self.fault(Op::Create)?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
    }

    /// Reserve disk blocks for `[offset, offset + len)` without changing the file's size,
    /// so writes into the range cannot run out of space. `Ok(false)` when the file system
    /// cannot reserve (then writes allocate as they go and may fail with ENOSPC).
    pub fn allocate(&self, file: &File, offset: u64, len: u64) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        self.fault(Op::Allocate)?;
        if len == 0 {
            return Ok(true);
        }
        loop {
            match fallocate_keep_size(file.as_raw_fd(), offset, len) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write all of `buf` at `offset`. On error, part of it may have been written.
    pub fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(f) = self.faults.as_ref().and_then(|p| p.check(Op::Write)) {
            if f == Fault::ShortWrite && buf.len() > 1 {
                file.write_all_at(&buf[..buf.len() / 2], offset)?;
            }
            return Err(fault_error(f));
        }
        file.write_all_at(buf, offset)
    }

    /// Write all of `bufs`, one after another, at `offset` (`pwritev`: the pieces go to
    /// the file from where they are, with no copy into one buffer first). On error, part
    /// of them may have been written.
    pub fn write_all_vectored_at(
        &self,
        file: &File,
        mut bufs: &mut [io::IoSlice<'_>],
        mut offset: u64,
    ) -> io::Result<()> {
        #[cfg(test)]
        if let Some(f) = self.faults.as_ref().and_then(|p| p.check(Op::Write)) {
            if f == Fault::ShortWrite {
                if let Some(first) = bufs.first().filter(|b| b.len() > 1) {
                    file.write_all_at(&first[..first.len() / 2], offset)?;
                }
            }
            return Err(fault_error(f));
        }
        use std::os::fd::AsRawFd;
        /// Linux's IOV_MAX: at most this many pieces per call.
        const MAX_IOV: usize = 1024;
        io::IoSlice::advance_slices(&mut bufs, 0); // drop leading empty pieces
        while !bufs.is_empty() {
            let n = bufs.len().min(MAX_IOV);
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the `n` pieces are
            // valid for reads for the duration of the call.
            let r = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    bufs.as_ptr().cast::<libc::iovec>(),
                    n as libc::c_int,
                    off,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            offset += r as u64;
            io::IoSlice::advance_slices(&mut bufs, r as usize);
        }
        Ok(())
    }

    pub fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fault(Op::Read)?;
        file.read_at(buf, offset)
    }

    /// fdatasync: written data (and the size needed to read it) reaches stable storage.
    pub fn sync_data(&self, file: &File) -> io::Result<()> {
        self.fault(Op::Sync)?;
        file.sync_data()
    }

    pub fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// Make directory entries (a new or removed file) durable.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.fault(Op::Sync)?;
        File::open(dir)?.sync_all()
    }

    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.fault(Op::Write)?;
        std::fs::write(path, bytes)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.fault(Op::Rename)?;
        std::fs::rename(from, to)
    }
}

/// `fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, len)`.
fn fallocate_keep_size(fd: std::os::fd::RawFd, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: fallocate reads no memory of ours; a bad descriptor is an error, not UB.
    let rc = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, off, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `flock(2)` on a whole file, shared or `exclusive`. With `wait` it blocks until held;
/// without, `Ok(false)` means another process holds it. Released when the file is closed.
pub(crate) fn flock(file: &File, exclusive: bool, wait: bool) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock reads no memory of ours; a bad descriptor is an error, not UB.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Is this the error of a full disk (or quota)?
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Is the byte at `offset` of `file` in the page cache (a read of it would not wait for
/// the disk)? Asked with `preadv2(RWF_NOWAIT)` of that one byte; `false` when the kernel
/// cannot tell (or past the end).
pub(crate) fn page_cached(file: &File, offset: u64) -> bool {
    page_cached_probe(file, offset).unwrap_or(false)
}

/// [`page_cached`], with the error when the kernel or file system cannot tell.
pub(crate) fn page_cached_probe(file: &File, offset: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a live local byte; the fd is open for as long as `file`.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(n == 1);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(false),
        _ => Err(e),
    }
}
