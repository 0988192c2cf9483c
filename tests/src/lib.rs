//! Harness for the black-box tests: start the real binaries on free 127.0.0.1 ports with
//! temporary data directories, wait until they answer, and stop them by PID.
//!
//! Every helper is bounded in time: a daemon that does not come up within
//! [`START_TIMEOUT`] fails the test instead of hanging it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one of the workspace binaries; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "binary {} not found; run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// The repository root (parent of tests/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Python interpreter with pynsq installed: `$NSQ_PYTHON`, else `.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("NSQ_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "no Python with pynsq: set NSQ_PYTHON or create .venv (scripts/test does this)"
    );
    p
}

/// Run a script from tests/python with the pynsq interpreter, bounded by `timeout`.
pub fn run_python(script: &str, args: &[String], timeout: Duration) -> Result<Output> {
    let path = repo_root().join("tests/python").join(script);
    let child = Command::new(python())
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn python {}", path.display()))?;
    wait_output(child, timeout)
}

/// Wait for a child with a deadline; kill it if the deadline passes.
pub fn wait_output(mut child: Child, timeout: Duration) -> Result<Output> {
    let deadline = Instant::now() + timeout;
    // Drain pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = t_out.join().unwrap_or_default();
            let stderr = t_err.join().unwrap_or_default();
            bail!(
                "timed out after {:?}\nstdout:\n{}\nstderr:\n{}",
                timeout,
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read it back, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Minimal HTTP/1.0 client: returns (status, body). Enough for the daemons' APIs and keeps
/// the tests independent of the servers' own HTTP stack.
pub fn http(
    method: &str,
    addr: SocketAddr,
    path_and_query: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header end in {:?}", String::from_utf8_lossy(&resp)))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {head}"))?;
    Ok((status, resp[split + 4..].to_vec()))
}

pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    http("GET", addr, path, b"")
}

pub fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    http("POST", addr, path, body)
}

pub fn http_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http_get(addr, path)?;
    if status != 200 {
        bail!(
            "GET {path}: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// A running daemon started from one of the workspace binaries.
pub struct Daemon {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for exit (SIGKILL after `timeout`). Returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>> {
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s.code());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not exit within {:?} of SIGTERM", self.name, timeout);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, as a crash.
    pub fn kill9(&mut self) {
        signal(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a PID we spawned; no memory is shared.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

pub fn spawn_logged(name: &str, args: &[String], log: &Path) -> Result<Child> {
    let f = std::fs::File::create(log)?;
    let f2 = f.try_clone()?;
    Command::new(bin(name))
        .args(args)
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .with_context(|| format!("spawn {name}"))
}

/// nsqd on free loopback ports with its own data directory.
pub struct Nsqd {
    pub daemon: Daemon,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// Where HTTPS listens when the test passes --tls-cert/--tls-key (NSQ's default
    /// 0.0.0.0:4152 would clash between tests).
    pub https: SocketAddr,
    pub data: PathBuf,
    pub extra: Vec<String>,
    /// Keeps the temporary directory alive (unless the caller passed its own data dir).
    pub _tmp: Option<tempfile::TempDir>,
}

impl Nsqd {
    /// Start with a fresh temporary data directory.
    pub fn start(extra: &[&str]) -> Result<Nsqd> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().to_path_buf();
        let mut n = Self::start_in(&data, extra)?;
        n._tmp = Some(tmp);
        Ok(n)
    }

    /// Start on an existing data directory (for restart tests).
    pub fn start_in(data: &Path, extra: &[&str]) -> Result<Nsqd> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut last_err = anyhow!("not started");
        for _ in 0..3 {
            let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
            let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
            match Self::try_start(data, tcp, http, https, &extra) {
                Ok(d) => {
                    return Ok(Nsqd {
                        daemon: d,
                        tcp,
                        http,
                        https,
                        data: data.to_path_buf(),
                        extra,
                        _tmp: None,
                    })
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn try_start(
        data: &Path,
        tcp: SocketAddr,
        http: SocketAddr,
        https: SocketAddr,
        extra: &[String],
    ) -> Result<Daemon> {
        let mut args = vec![
            format!("--tcp-address={tcp}"),
            format!("--http-address={http}"),
            format!("--https-address={https}"),
            format!("--data-path={}", data.display()),
        ];
        args.extend(extra.iter().cloned());
        let log = data.join(format!("nsqd-{}.log", tcp.port()));
        let child = spawn_logged("nsqd", &args, &log)?;
        let mut d = Daemon {
            child,
            name: "nsqd".into(),
            log,
        };
        wait_ready(&mut d, http)?;
        Ok(d)
    }

    /// SIGTERM and restart on the same data directory and ports-of-choice (new ports).
    pub fn restart(mut self) -> Result<Nsqd> {
        let code = self.daemon.terminate(Duration::from_secs(20))?;
        if code != Some(0) {
            bail!(
                "nsqd exited with {code:?} on SIGTERM:\n{}",
                self.daemon.log_text()
            );
        }
        let tmp = self._tmp.take();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut n = Nsqd::start_in(&self.data, &extra)?;
        n._tmp = tmp;
        Ok(n)
    }

    /// kill -9 and restart on the same data directory.
    pub fn crash_restart(mut self) -> Result<Nsqd> {
        self.daemon.kill9();
        let tmp = self._tmp.take();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut n = Nsqd::start_in(&self.data, &extra)?;
        n._tmp = tmp;
        Ok(n)
    }

    pub fn tcp_arg(&self) -> String {
        self.tcp.to_string()
    }

    pub fn http_arg(&self) -> String {
        self.http.to_string()
    }

    pub fn stats(&self) -> Result<serde_json::Value> {
        http_json(self.http, "/stats?format=json")
    }
}

/// Wait until the daemon answers `GET /ping` with 200, or fail with its log.
pub fn wait_ready(d: &mut Daemon, http_addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(s) = d.child.try_wait()? {
            bail!("{} exited early ({s}):\n{}", d.name, d.log_text());
        }
        if let Ok((200, _)) = http_get(http_addr, "/ping") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready within {:?}:\n{}",
                d.name,
                START_TIMEOUT,
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A raw protocol V2 connection for byte-level tests.
pub struct RawConn {
    pub stream: TcpStream,
}

pub const FRAME_RESPONSE: u32 = 0;
pub const FRAME_ERROR: u32 = 1;
pub const FRAME_MESSAGE: u32 = 2;

impl RawConn {
    /// Connect and send the `  V2` magic.
    pub fn connect(addr: SocketAddr) -> Result<RawConn> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        stream.write_all(b"  V2")?;
        Ok(RawConn { stream })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Send a command line (without the trailing newline) and an optional body.
    pub fn cmd(&mut self, line: &str, body: Option<&[u8]>) -> Result<()> {
        let mut v = line.as_bytes().to_vec();
        v.push(b'\n');
        if let Some(b) = body {
            v.extend_from_slice(&(b.len() as u32).to_be_bytes());
            v.extend_from_slice(b);
        }
        self.send(&v)
    }

    /// Read one frame: (type, data).
    pub fn read_frame(&mut self) -> Result<(u32, Vec<u8>)> {
        let mut hdr = [0u8; 8];
        self.stream.read_exact(&mut hdr)?;
        let size = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        if size < 4 {
            bail!("frame size {size} < 4");
        }
        let mut data = vec![0u8; size - 4];
        self.stream.read_exact(&mut data)?;
        Ok((ty, data))
    }

    /// Read frames, answering heartbeats, until a non-heartbeat frame arrives.
    pub fn read_non_heartbeat(&mut self) -> Result<(u32, Vec<u8>)> {
        loop {
            let (ty, data) = self.read_frame()?;
            if ty == FRAME_RESPONSE && data == b"_heartbeat_" {
                self.cmd("NOP", None)?;
                continue;
            }
            return Ok((ty, data));
        }
    }

    /// Expect a response frame with exactly `want`.
    pub fn expect_response(&mut self, want: &str) -> Result<()> {
        let (ty, data) = self.read_non_heartbeat()?;
        if ty != FRAME_RESPONSE || data != want.as_bytes() {
            bail!(
                "expected response {want:?}, got type {ty} {:?}",
                String::from_utf8_lossy(&data)
            );
        }
        Ok(())
    }

    /// Expect an error frame starting with `prefix`; returns its full text.
    pub fn expect_error(&mut self, prefix: &str) -> Result<String> {
        let (ty, data) = self.read_non_heartbeat()?;
        let text = String::from_utf8_lossy(&data).to_string();
        if ty != FRAME_ERROR || !text.starts_with(prefix) {
            bail!("expected error {prefix:?}, got type {ty} {text:?}");
        }
        Ok(text)
    }

    /// Read a message frame: (timestamp, attempts, id, body).
    pub fn read_message(&mut self) -> Result<RawMessage> {
        let (ty, data) = self.read_non_heartbeat()?;
        if ty != FRAME_MESSAGE {
            bail!(
                "expected message, got type {ty} {:?}",
                String::from_utf8_lossy(&data)
            );
        }
        RawMessage::decode(&data)
    }

    /// True if the server closed the connection (EOF) within `timeout`.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + timeout;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RawMessage {
    pub timestamp: i64,
    pub attempts: u16,
    pub id: String,
    pub body: Vec<u8>,
}

impl RawMessage {
    pub fn decode(data: &[u8]) -> Result<RawMessage> {
        if data.len() < 26 {
            bail!("message frame too short: {}", data.len());
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&data[..8]);
        Ok(RawMessage {
            timestamp: i64::from_be_bytes(ts),
            attempts: u16::from_be_bytes([data[8], data[9]]),
            id: String::from_utf8_lossy(&data[10..26]).to_string(),
            body: data[26..].to_vec(),
        })
    }
}

/// MPUB body: count u32 BE, then size u32 BE + bytes per message.
pub fn mpub_body(msgs: &[&[u8]]) -> Vec<u8> {
    let mut v = (msgs.len() as u32).to_be_bytes().to_vec();
    for m in msgs {
        v.extend_from_slice(&(m.len() as u32).to_be_bytes());
        v.extend_from_slice(m);
    }
    v
}

/// A self-signed certificate for 127.0.0.1/localhost made with the openssl CLI.
/// Returns (cert.pem, key.pem).
pub fn self_signed_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-addext")
        .arg("subjectAltName=IP:127.0.0.1,DNS:localhost")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (install the openssl package)")?;
    if !out.status.success() {
        bail!("openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((cert, key))
}

/// A running nsqlookupd on loopback ports.
pub struct Lookupd {
    pub daemon: Daemon,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    _dir: tempfile::TempDir,
}

pub fn start_lookupd_on(tcp: SocketAddr, http: SocketAddr) -> Lookupd {
    let dir = tempfile::tempdir().expect("start nsqlookupd");
    let log = dir.path().join("lookupd.log");
    let f = std::fs::File::create(&log).expect("start nsqlookupd");
    let child = Command::new(bin("nsqlookupd"))
        .args([
            format!("--tcp-address={tcp}"),
            format!("--http-address={http}"),
            "--broadcast-address=127.0.0.1".into(),
        ])
        .stdout(Stdio::from(f.try_clone().expect("start nsqlookupd")))
        .stderr(Stdio::from(f))
        .spawn()
        .expect("start nsqlookupd");
    let mut daemon = Daemon {
        child,
        name: "nsqlookupd".into(),
        log,
    };
    wait_ready(&mut daemon, http).expect("start nsqlookupd");
    Lookupd {
        daemon,
        tcp,
        http,
        _dir: dir,
    }
}

pub fn start_lookupd() -> Lookupd {
    let tcp = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("start nsqlookupd");
    let http = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("start nsqlookupd");
    start_lookupd_on(tcp, http)
}

/// Start one of the workspace binaries with its output in `log`.
pub fn start_daemon(name: &str, args: &[String], log: &Path) -> Result<Daemon> {
    Ok(Daemon {
        child: spawn_logged(name, args, log)?,
        name: name.to_string(),
        log: log.to_path_buf(),
    })
}

/// Run a workspace binary to completion (killed after `timeout`), require exit status 0,
/// and return what it printed on stdout.
pub fn run_tool(name: &str, args: &[&str], timeout: Duration) -> String {
    let child = Command::new(bin(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let out = wait_output(child, timeout).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running nsqadmin on a free loopback port.
pub struct Nsqadmin {
    pub daemon: Daemon,
    pub http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nsqadmin {
    /// Start nsqadmin with `args` (e.g. `--lookupd-http-address=...`) and wait for /ping.
    pub fn start(args: &[String]) -> Result<Nsqadmin> {
        let dir = tempfile::tempdir()?;
        let mut last_err = anyhow!("not started");
        for _ in 0..3 {
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
            let mut all = vec![format!("--http-address={http}")];
            all.extend(args.iter().cloned());
            let log = dir.path().join(format!("nsqadmin-{}.log", http.port()));
            let mut daemon = start_daemon("nsqadmin", &all, &log)?;
            let ping = if let Some(b) = args.iter().find_map(|a| a.strip_prefix("--base-path=")) {
                format!("{}/ping", b.trim_end_matches('/'))
            } else {
                "/ping".to_string()
            };
            match wait_ready_path(&mut daemon, http, &ping) {
                Ok(()) => {
                    return Ok(Nsqadmin {
                        daemon,
                        http,
                        _dir: dir,
                    })
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }
}

/// Like [`wait_ready`] for a daemon whose ping path is not `/ping` (a base path).
pub fn wait_ready_path(d: &mut Daemon, http_addr: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(s) = d.child.try_wait()? {
            bail!("{} exited early ({s}):\n{}", d.name, d.log_text());
        }
        if let Ok((200, _)) = http_get(http_addr, path) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready within {:?}:\n{}",
                d.name,
                START_TIMEOUT,
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
