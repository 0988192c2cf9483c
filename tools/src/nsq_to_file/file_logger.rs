//! nsq_to_file's file logger: NSQ's file naming, revisions and rotation, with crash safety.
//!
//! As NSQ's nsq_to_file, the current file is written under its final name in `--work-dir`
//! and moved to `--output-dir` when it is closed (only when the two differ). `<REV>` is
//! `-000000`, `-000001`, ... when gzip, rotation or a separate work directory is used (and
//! then required in `--filename-format`), and removed otherwise; a restart in the same
//! period appends to the period's file (plain files) or takes the next revision (gzip or
//! `--rotate-interval`: files are opened exclusively), exactly as NSQ chooses.
//!
//! Crash safety, beyond NSQ: every commit point (`FileLogger::commit`) returns a
//! [`FileState`], the current file and its length there (for gzip, the end of a complete
//! gzip member: each commit closes one, as NSQ's Sync does). The caller stores it where
//! its position lives (next to the consumer: a sidecar file in the work directory; for
//! the segment archiver: its cursor file). On restart, [`recover_file`] cuts whatever a
//! killed run wrote after that length (a torn line, a torn gzip member, or lines whose
//! messages were never acknowledged), so the file under its final name is always whole.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

/// The output flags NSQ's nsq_to_file has (shared by both modes).
#[derive(clap::Args, Debug, Clone)]
pub struct FileArgs {
    /// directory to write output files to
    #[arg(long = "output-dir", default_value = "/tmp")]
    pub output_dir: PathBuf,
    /// directory for in-progress files before moving to output-dir (default: output-dir)
    #[arg(long = "work-dir")]
    pub work_dir: Option<PathBuf>,
    /// output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced;
    /// <REV> is required when gzip, rotation or a work dir is used)
    #[arg(
        long = "filename-format",
        default_value = "<TOPIC>.<HOST><REV>.<DATETIME>.log"
    )]
    pub filename_format: String,
    /// strftime compatible format for <DATETIME> in filename format
    #[arg(long = "datetime-format", default_value = "%Y-%m-%d_%H")]
    pub datetime_format: String,
    /// value to output in log filename in place of hostname (<SHORT_HOST> and <HOSTNAME>
    /// are valid replacement tokens)
    #[arg(long = "host-identifier")]
    pub host_identifier: Option<String>,
    /// gzip output files
    #[arg(long)]
    pub gzip: bool,
    /// gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)
    #[arg(long = "gzip-level", default_value_t = 6)]
    pub gzip_level: u32,
    /// rotate the file when it grows bigger than this many bytes (before compression)
    #[arg(long = "rotate-size", default_value_t = 0)]
    pub rotate_size: u64,
    /// rotate the file every duration
    #[arg(long = "rotate-interval", value_parser = nsq_tools::parse_duration)]
    pub rotate_interval: Option<Duration>,
    /// sync file to disk every duration
    #[arg(long = "sync-interval", value_parser = nsq_tools::parse_duration, default_value = "30s")]
    pub sync_interval: Duration,
    /// skip writing empty files (always true here: files are created by their first message)
    #[arg(long = "skip-empty-files")]
    pub skip_empty_files: bool,
}

/// What file names and writing need, fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub output_dir: PathBuf,
    pub work_dir: PathBuf,
    pub filename_format: String,
    pub datetime_format: String,
    pub host: String,
    pub gzip: Option<u32>,
    pub rotate_size: u64,
    pub rotate_interval: Option<Duration>,
    pub sync_interval: Duration,
    /// NSQ numbers files (`<REV>`) when gzip, rotation or a separate work directory is
    /// used; otherwise `<REV>` is removed and a file of the same period is appended to.
    pub numbered: bool,
}

impl Settings {
    pub fn from_args(a: &FileArgs) -> Result<Settings> {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(&a.datetime_format).any(|i| matches!(i, Item::Error)) {
            bail!("invalid --datetime-format {:?}", a.datetime_format);
        }
        // `/` makes subdirectories (as in NSQ); the names stay inside --output-dir.
        if a.filename_format.starts_with('/')
            || a.filename_format
                .split('/')
                .any(|c| c == ".." || c.is_empty())
        {
            bail!("--filename-format must be a relative path without '..' or empty parts");
        }
        if !(1..=9).contains(&a.gzip_level) {
            bail!("--gzip-level must be 1-9");
        }
        let hostname = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let short = hostname
            .split('.')
            .next()
            .unwrap_or("localhost")
            .to_string();
        let host = match &a.host_identifier {
            Some(h) => h
                .replace("<SHORT_HOST>", &short)
                .replace("<HOSTNAME>", &hostname),
            None => short,
        };
        let work_dir = a.work_dir.clone().unwrap_or_else(|| a.output_dir.clone());
        let numbered =
            a.gzip || a.rotate_size > 0 || a.rotate_interval.is_some() || work_dir != a.output_dir;
        if numbered && !a.filename_format.contains("<REV>") {
            bail!("missing <REV> in --filename-format when gzip, rotation, or work dir enabled");
        }
        for d in [&a.output_dir, &work_dir] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Settings {
            numbered,
            output_dir: a.output_dir.clone(),
            work_dir,
            filename_format: a.filename_format.clone(),
            datetime_format: a.datetime_format.clone(),
            host,
            gzip: a.gzip.then_some(a.gzip_level),
            rotate_size: a.rotate_size,
            rotate_interval: a.rotate_interval,
            sync_interval: a.sync_interval,
        })
    }

    fn separate_dirs(&self) -> bool {
        self.work_dir != self.output_dir
    }

    pub fn datetime(&self) -> String {
        chrono::Local::now()
            .format(&self.datetime_format)
            .to_string()
    }

    /// NSQ's per-topic name template: everything but `<DATETIME>` (and `<REV>` when
    /// numbered) replaced.
    pub fn template(&self, topic: &str) -> String {
        let mut t = self.filename_format.clone();
        if !self.numbered {
            t = t.replace("<REV>", "");
        }
        t = t
            .replace("<TOPIC>", topic)
            .replace("<HOST>", &self.host)
            .replace("<PID>", &std::process::id().to_string());
        if self.gzip.is_some() && !t.ends_with(".gz") {
            t.push_str(".gz");
        }
        t
    }
}

fn with_rev(name: &str, rev: u32) -> String {
    name.replace("<REV>", &format!("-{rev:06}"))
}

/// The current file and its committed length (relative to the work directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub file: String,
    pub len: u64,
}

struct Current {
    rel: String,
    path: PathBuf,
    file: std::io::BufWriter<File>,
    /// The gzip member being built (in memory until the next commit point).
    gz: Option<GzEncoder<Vec<u8>>>,
    opened: Instant,
    /// Bytes written through the logger (uncompressed), as NSQ's filesize.
    size: u64,
    /// File length once the buffer is written out.
    file_len: u64,
    /// Messages since the last commit point.
    dirty: bool,
}

/// One topic's output file (NSQ's FileLogger, minus the consumer).
pub struct FileLogger {
    s: Arc<Settings>,
    template: String,
    /// The template with `<DATETIME>` applied, as of the last open.
    filename: String,
    rev: u32,
    cur: Option<Current>,
    pub files_closed: u64,
}

impl FileLogger {
    pub fn new(s: Arc<Settings>, topic: &str) -> FileLogger {
        let template = s.template(topic);
        FileLogger {
            s,
            template,
            filename: String::new(),
            rev: 0,
            cur: None,
            files_closed: 0,
        }
    }

    fn current_filename(&self) -> String {
        self.template.replace("<DATETIME>", &self.s.datetime())
    }

    /// NSQ's needsRotation: no file yet, a new `<DATETIME>`, past `--rotate-interval`, or
    /// bigger than `--rotate-size`.
    pub fn needs_rotation(&self) -> bool {
        let Some(c) = &self.cur else { return true };
        self.current_filename() != self.filename
            || self
                .s
                .rotate_interval
                .is_some_and(|i| c.opened.elapsed() > i)
            || (self.s.rotate_size > 0 && c.size > self.s.rotate_size)
    }

    /// Has the current file outlived its period (for a periodic check without a message)?
    pub fn expired(&self) -> bool {
        self.cur.is_some() && self.needs_rotation()
    }

    /// Close the current file (moved into place) and open the next one, choosing its
    /// revision as NSQ does. Returns the new file's state (its length at open: a file of
    /// the same period may be appended to).
    pub fn update_file(&mut self) -> Result<FileState> {
        self.close()?;
        let filename = self.current_filename();
        if filename != self.filename {
            self.rev = 0;
        } else {
            self.rev += 1;
        }
        self.filename = filename;
        let exclusive = self.s.gzip.is_some() || self.s.rotate_interval.is_some();
        for _ in 0..1_000_000 {
            let rel = with_rev(&self.filename, self.rev);
            if rel.split('/').any(|c| c == ".." || c == ".") {
                bail!("file name {rel:?} would leave the output directory");
            }
            let path = self.s.work_dir.join(&rel);
            make_parent(&path)?;
            if self.s.separate_dirs() {
                let out = self.s.output_dir.join(&rel);
                make_parent(&out)?;
                if out.exists() {
                    tracing::warn!(file = %out.display(), "output file already exists");
                    self.rev += 1;
                    continue;
                }
            }
            let mut o = OpenOptions::new();
            o.write(true);
            if exclusive {
                o.create_new(true);
            } else {
                o.create(true).append(true);
            }
            let file = match o.open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::warn!(file = %path.display(), "working file already exists");
                    self.rev += 1;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
            };
            let len = file
                .metadata()
                .with_context(|| format!("stat {}", path.display()))?
                .len();
            if self.s.rotate_size > 0 && len > self.s.rotate_size {
                self.rev += 1;
                continue;
            }
            tracing::info!(file = %path.display(), "opening");
            self.cur = Some(Current {
                rel: rel.clone(),
                path,
                file: std::io::BufWriter::with_capacity(256 * 1024, file),
                gz: self
                    .s
                    .gzip
                    .map(|l| GzEncoder::new(Vec::new(), flate2::Compression::new(l))),
                opened: Instant::now(),
                size: len,
                file_len: len,
                dirty: false,
            });
            return Ok(FileState { file: rel, len });
        }
        bail!("no free revision for {}", self.filename)
    }

    /// Write one message as a line. Call [`FileLogger::needs_rotation`] /
    /// [`FileLogger::update_file`] first.
    pub fn write(&mut self, body: &[u8]) -> Result<()> {
        let Some(c) = self.cur.as_mut() else {
            bail!("no open file");
        };
        match c.gz.as_mut() {
            Some(gz) => {
                gz.write_all(body)?;
                gz.write_all(b"\n")?;
                // Move compressed output to the file as it comes (the member goes on).
                if gz.get_ref().len() >= 1 << 20 {
                    let bytes = std::mem::take(gz.get_mut());
                    c.file.write_all(&bytes)?;
                    c.file_len += bytes.len() as u64;
                }
            }
            None => {
                c.file.write_all(body)?;
                c.file.write_all(b"\n")?;
                c.file_len += body.len() as u64 + 1;
            }
        }
        c.size += body.len() as u64 + 1;
        c.dirty = true;
        Ok(())
    }

    /// A commit point: everything written so far reaches the operating system (a gzip
    /// member is completed) and, with `fsync`, the disk. Returns the state to store.
    pub fn commit(&mut self, fsync: bool) -> Result<Option<FileState>> {
        let Some(c) = self.cur.as_mut() else {
            return Ok(None);
        };
        if c.dirty {
            if let (Some(gz), Some(level)) = (c.gz.take(), self.s.gzip) {
                let bytes = gz.finish().context("finishing a gzip member")?;
                c.file.write_all(&bytes)?;
                c.file_len += bytes.len() as u64;
                c.gz = Some(GzEncoder::new(Vec::new(), flate2::Compression::new(level)));
            }
            c.dirty = false;
        }
        c.file
            .flush()
            .with_context(|| format!("writing {}", c.path.display()))?;
        if fsync {
            c.file
                .get_ref()
                .sync_data()
                .with_context(|| format!("fsync {}", c.path.display()))?;
        }
        Ok(Some(FileState {
            file: c.rel.clone(),
            len: c.file_len,
        }))
    }

    /// The current file's name (relative to the work directory), if one is open.
    pub fn name(&self) -> Option<&str> {
        self.cur.as_ref().map(|c| c.rel.as_str())
    }

    /// NSQ's Close: commit and fsync, remove an empty file, and move the file to the output
    /// directory when it differs (without overwriting: the revision is bumped on a clash).
    pub fn close(&mut self) -> Result<()> {
        if self.cur.is_none() {
            return Ok(());
        }
        self.commit(true)?;
        let Some(c) = self.cur.take() else {
            return Ok(());
        };
        let Current {
            rel, path, file, ..
        } = c;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        let len = file.metadata()?.len();
        drop(file);
        if len == 0 {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            return Ok(());
        }
        self.files_closed += 1;
        if !self.s.separate_dirs() {
            tracing::info!(file = %path.display(), "closed");
            return Ok(());
        }
        let dst = move_to_output(&self.s, &path, &rel, &self.filename, self.rev)?;
        tracing::info!(file = %dst.display(), "closed and moved");
        Ok(())
    }
}

/// Whether two paths name the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn make_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Move a complete file from the work directory to the output directory without
/// overwriting (link + unlink, as NSQ); on a clash, the next free revision of `template`.
fn move_to_output(
    s: &Settings,
    src: &Path,
    rel: &str,
    template: &str,
    rev: u32,
) -> Result<PathBuf> {
    let mut dst = s.output_dir.join(rel);
    make_parent(&dst)?;
    let mut next = rev + 1;
    loop {
        match fs::hard_link(src, &dst) {
            Ok(()) => break,
            // A run killed between the link and the unlink left both names on one file:
            // the move is done but for the unlink.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && same_file(src, &dst) => {
                break
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists && template.contains("<REV>") =>
            {
                tracing::warn!(file = %dst.display(), "destination file already exists");
                dst = s.output_dir.join(with_rev(template, next));
                next += 1;
                if next > rev + 1_000_000 {
                    bail!("no free revision to move {} to", src.display());
                }
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("moving {} to {}", src.display(), dst.display()))
            }
        }
    }
    if let Some(d) = dst.parent() {
        if let Ok(d) = File::open(d) {
            let _ = d.sync_all();
        }
    }
    fs::remove_file(src).with_context(|| format!("removing {}", src.display()))?;
    Ok(dst)
}

/// After a crash: cut what follows the committed length of the file a state names, so
/// it holds exactly what was committed. A file that would have been moved to the output
/// directory when closed (work dir differs) is then moved; a gzip or interval-rotated
/// file stays complete where it is (the next run opens the next revision, as NSQ).
/// Returns whether something was cut.
pub fn recover_file(s: &Settings, state: &FileState) -> Result<bool> {
    if state
        .file
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        bail!("bad file name {:?} in the saved state", state.file);
    }
    let path = s.work_dir.join(&state.file);
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = file.metadata()?.len();
    let cut = len > state.len;
    if cut {
        tracing::warn!(
            file = %path.display(),
            bytes = len - state.len,
            "cutting what a killed run wrote after its last commit"
        );
        file.set_len(state.len)?;
        file.sync_all()?;
    }
    drop(file);
    if s.separate_dirs() {
        if state.len == 0 {
            fs::remove_file(&path)?;
        } else {
            // The template is unknown here; a clash is resolved by a suffix.
            let dst = move_to_output(s, &path, &state.file, &state.file, 0);
            match dst {
                Ok(d) => tracing::info!(file = %d.display(), "completed file moved into place"),
                Err(e) => {
                    let alt = format!("{}.recovered-{}", state.file, std::process::id());
                    tracing::warn!(error = %e, "moving {}: trying {alt}", path.display());
                    move_to_output(s, &path, &alt, &alt, 0)?;
                }
            }
        }
    }
    Ok(cut)
}

/// The sidecar that records the current file's committed state for the consumer mode
/// (the segment archiver keeps it in its cursor file instead).
pub fn sidecar_path(s: &Settings, topic: &str) -> PathBuf {
    s.work_dir.join(format!(".nsq_to_file.{topic}.state"))
}

pub fn read_sidecar(path: &Path) -> Result<Option<FileState>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("{} is not a saved file state", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replace the sidecar atomically; with `durable`, fsynced (when the data was).
pub fn write_sidecar(path: &Path, state: &FileState, durable: bool) -> Result<()> {
    let tmp = path.with_extension("state.tmp");
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(state)?)?;
    if durable {
        f.sync_data()?;
    }
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// `.part` files left by older versions of this tool (which wrote under a temporary
/// name): completed (a torn last line cut) and moved into place, once.
pub fn recover_legacy_parts(s: &Settings) -> Result<usize> {
    let mut parts = Vec::new();
    part_files(&s.work_dir, 0, &mut parts)?;
    let mut n = 0;
    for path in parts {
        let Some(rel) = path.strip_prefix(&s.work_dir).ok().and_then(|r| r.to_str()) else {
            continue;
        };
        let Some(final_name) = rel.strip_suffix(".part") else {
            continue;
        };
        if final_name.ends_with(".gz") {
            let mut data = Vec::new();
            let mut dec = flate2::read::MultiGzDecoder::new(File::open(&path)?);
            let _ = std::io::Read::read_to_end(&mut dec, &mut data);
            cut_torn_line(&mut data);
            let mut enc = GzEncoder::new(File::create(&path)?, flate2::Compression::default());
            enc.write_all(&data)?;
            enc.finish()?.sync_all()?;
        } else {
            let mut data = fs::read(&path)?;
            let len = data.len();
            cut_torn_line(&mut data);
            if data.len() != len {
                fs::write(&path, &data)?;
            }
            File::open(&path)?.sync_all()?;
        }
        let target = s.output_dir.join(final_name);
        make_parent(&target)?;
        if target.exists() {
            let mut src = File::open(&path)?;
            let mut dst = OpenOptions::new().append(true).open(&target)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            fs::remove_file(&path)?;
        } else {
            fs::rename(&path, &target)?;
        }
        tracing::info!(file = %target.display(), "recovered an unfinished .part file");
        n += 1;
    }
    Ok(n)
}

fn part_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            if depth < 16 {
                part_files(&path, depth + 1, out)?;
            }
        } else if path.extension().is_some_and(|x| x == "part") {
            out.push(path);
        }
    }
    Ok(())
}

/// A line without its newline was being written when the process died.
pub fn cut_torn_line(data: &mut Vec<u8>) {
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn settings(dir: &Path, gzip: bool, work: bool) -> Arc<Settings> {
        let out = dir.join("out");
        let work_dir = if work { dir.join("work") } else { out.clone() };
        fs::create_dir_all(&out).unwrap();
        fs::create_dir_all(&work_dir).unwrap();
        Arc::new(Settings {
            output_dir: out,
            work_dir,
            filename_format: "<TOPIC>.<HOST><REV>.<DATETIME>.log".into(),
            datetime_format: "%Y".into(),
            host: "h".into(),
            gzip: gzip.then_some(6),
            rotate_size: 0,
            rotate_interval: None,
            sync_interval: Duration::from_secs(30),
            numbered: gzip || work,
        })
    }

    fn year() -> String {
        chrono::Local::now().format("%Y").to_string()
    }

    #[test]
    fn names_as_nsq() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), true, false);
        assert_eq!(s.template("t"), "t.h<REV>.<DATETIME>.log.gz");
        assert_eq!(
            with_rev("t.h<REV>.2026.log.gz", 2),
            "t.h-000002.2026.log.gz"
        );
        let plain = settings(dir.path(), false, false);
        assert_eq!(plain.template("t"), "t.h.<DATETIME>.log");
    }

    #[test]
    fn plain_file_is_appended_after_restart_and_cut_to_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false, false);
        let mut l = FileLogger::new(s.clone(), "t");
        assert!(l.needs_rotation());
        let st = l.update_file().unwrap();
        assert_eq!(
            st,
            FileState {
                file: format!("t.h.{}.log", year()),
                len: 0
            }
        );
        l.write(b"one").unwrap();
        l.write(b"two").unwrap();
        let committed = l.commit(true).unwrap().unwrap();
        assert_eq!(committed.len, 8);
        // Written after the commit, then the process dies (no close).
        l.write(b"three-not-committed").unwrap();
        l.commit(false).unwrap();
        drop(l);
        let path = s.work_dir.join(&committed.file);
        assert_eq!(fs::read(&path).unwrap(), b"one\ntwo\nthree-not-committed\n");
        assert!(recover_file(&s, &committed).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one\ntwo\n");
        // The next run appends to the same period's file, under the same name.
        let mut l = FileLogger::new(s.clone(), "t");
        let st = l.update_file().unwrap();
        assert_eq!(st, committed);
        l.write(b"three").unwrap();
        l.close().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
    }

    #[test]
    fn gzip_takes_the_next_revision_and_torn_members_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), true, false);
        let mut l = FileLogger::new(s.clone(), "t");
        let st = l.update_file().unwrap();
        assert_eq!(st.file, format!("t.h-000000.{}.log.gz", year()));
        l.write(b"a").unwrap();
        let committed = l.commit(true).unwrap().unwrap();
        l.write(b"b").unwrap();
        l.commit(false).unwrap();
        // A torn member after the committed ones.
        drop(l);
        let path = s.work_dir.join(&committed.file);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0x1f, 0x8b, 8, 0, 0]).unwrap();
        drop(f);
        recover_file(&s, &committed).unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\n");
        let mut l = FileLogger::new(s.clone(), "t");
        let st = l.update_file().unwrap();
        assert_eq!(st.file, format!("t.h-000001.{}.log.gz", year()));
        l.close().unwrap();
        // Nothing written: the empty file is removed.
        assert!(!s.work_dir.join(&st.file).exists());
    }

    #[test]
    fn work_dir_files_move_on_close_and_revisions_skip_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false, true);
        let taken = format!("t.h-000000.{}.log", year());
        fs::write(s.output_dir.join(&taken), b"old\n").unwrap();
        let mut l = FileLogger::new(s.clone(), "t");
        let st = l.update_file().unwrap();
        assert_eq!(st.file, format!("t.h-000001.{}.log", year()));
        assert!(s.work_dir.join(&st.file).exists());
        l.write(b"x").unwrap();
        // Rotation to the same period takes the next revision.
        let st2 = l.update_file().unwrap();
        assert_eq!(st2.file, format!("t.h-000002.{}.log", year()));
        assert_eq!(fs::read(s.output_dir.join(&st.file)).unwrap(), b"x\n");
        assert!(!s.work_dir.join(&st.file).exists());
        l.write(b"y").unwrap();
        let committed = l.commit(true).unwrap().unwrap();
        drop(l);
        // Killed: recovery completes the file and moves it into place.
        recover_file(&s, &committed).unwrap();
        assert_eq!(fs::read(s.output_dir.join(&st2.file)).unwrap(), b"y\n");
        assert_eq!(fs::read(s.output_dir.join(&taken)).unwrap(), b"old\n");
    }

    #[test]
    fn a_move_killed_between_link_and_unlink_completes() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false, true);
        let mut l = FileLogger::new(s.clone(), "t");
        let st = l.update_file().unwrap();
        l.write(b"x").unwrap();
        let committed = l.commit(true).unwrap().unwrap();
        drop(l);
        // Killed after linking the file into the output dir, before unlinking it.
        fs::hard_link(s.work_dir.join(&st.file), s.output_dir.join(&st.file)).unwrap();
        recover_file(&s, &committed).unwrap();
        assert_eq!(fs::read(s.output_dir.join(&st.file)).unwrap(), b"x\n");
        assert!(!s.work_dir.join(&st.file).exists());
        let names: Vec<String> = fs::read_dir(&s.output_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![st.file.clone()], "no second copy");
    }

    #[test]
    fn legacy_parts_are_completed() {
        let mut v = b"a\nb\nc".to_vec();
        cut_torn_line(&mut v);
        assert_eq!(v, b"a\nb\n");
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false, true);
        fs::write(s.work_dir.join("x.log.part"), b"one\ntwo\nthr").unwrap();
        assert_eq!(recover_legacy_parts(&s).unwrap(), 1);
        assert_eq!(fs::read(s.output_dir.join("x.log")).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn sidecar_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false, false);
        let p = sidecar_path(&s, "t");
        assert_eq!(read_sidecar(&p).unwrap(), None);
        let st = FileState {
            file: "a".into(),
            len: 3,
        };
        write_sidecar(&p, &st, true).unwrap();
        assert_eq!(read_sidecar(&p).unwrap(), Some(st));
        fs::write(&p, b"garbage").unwrap();
        assert!(read_sidecar(&p).is_err());
    }
}
