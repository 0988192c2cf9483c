//! `startup`: start a server command, time it to /ping and to the first deliverable
//! message, optionally give it many topics, then time its shutdown.
//!
//! Times are from just before the spawn. /ping is polled every millisecond over a raw
//! HTTP/1.0 connection (no client pool, no DNS); the first message is a SUB with RDY 1 on
//! `--topic`/`--channel`, retried until the server accepts connections. The stop is
//! SIGTERM (`kill -TERM`, then wait for the exit) or SIGKILL; the time is from the signal
//! to the exit being reaped.

use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use protocol::v2::{self, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{connect, read_frame};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stop {
    /// SIGTERM and wait for the exit
    Term,
    /// SIGKILL
    Kill,
    /// leave the server running (its pid is printed)
    None,
}

pub struct Params {
    pub http: String,
    pub tcp: String,
    pub first_message: Option<(String, String)>,
    pub populate_topics: usize,
    pub populate_messages: usize,
    pub timeout: Duration,
    pub stop: Stop,
    pub log: Option<std::path::PathBuf>,
    pub command: Vec<String>,
}

/// Whether an HTTP response's status line says 200.
pub fn is_http_200(resp: &[u8]) -> bool {
    let line = resp.split(|&b| b == b'\n').next().unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    matches!(
        (parts.next(), parts.next()),
        (Some(v), Some(b"200")) if v.starts_with(b"HTTP/")
    )
}

async fn ping_once(http: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(http).await else {
        return false;
    };
    let req = format!("GET /ping HTTP/1.0\r\nHost: {http}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    loop {
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if buf.contains(&b'\n') => break,
            Ok(_) => {}
        }
    }
    is_http_200(&buf)
}

async fn first_message(tcp: &str, topic: &str, channel: &str, until: Instant) -> Result<()> {
    loop {
        if Instant::now() >= until {
            bail!("no message on {topic}/{channel} before the timeout");
        }
        let mut s = match connect(tcp).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let mut out = BytesMut::new();
        Command::Sub {
            topic: topic.to_string(),
            channel: channel.to_string(),
        }
        .encode(&mut out);
        Command::Rdy(1).encode(&mut out);
        s.write_all(&out).await?;
        let mut buf = BytesMut::new();
        let left = until.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, async {
            loop {
                let f = read_frame(&mut s, &mut buf).await?;
                match f.frame_type {
                    v2::FRAME_TYPE_MESSAGE => return anyhow::Ok(()),
                    v2::FRAME_TYPE_ERROR => {
                        bail!("SUB failed: {}", String::from_utf8_lossy(&f.data))
                    }
                    _ => {}
                }
            }
        })
        .await;
        return match got {
            Ok(r) => r,
            Err(_) => bail!("no message on {topic}/{channel} before the timeout"),
        };
    }
}

/// Publishes `per_topic` messages to each of `topics` topics named `t00000`, ... over one
/// connection, one MPUB per topic.
async fn populate(tcp: &str, topics: usize, per_topic: usize) -> Result<()> {
    let mut s = connect(tcp).await?;
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let body = Bytes::from(vec![b'p'; 200]);
    for i in 0..topics {
        out.clear();
        Command::Mpub {
            topic: format!("t{i:05}"),
            bodies: vec![body.clone(); per_topic.max(1)],
        }
        .encode(&mut out);
        s.write_all(&out).await?;
        let f = read_frame(&mut s, &mut buf).await?;
        if f.frame_type != v2::FRAME_TYPE_RESPONSE {
            bail!("MPUB to t{i:05}: {}", String::from_utf8_lossy(&f.data));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn spawn(p: &Params) -> Result<Child> {
    let (prog, args) = p
        .command
        .split_first()
        .context("startup needs the server command after --")?;
    let out = match &p.log {
        Some(path) => Stdio::from(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let err = match &p.log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    Proc::new(prog)
        .args(args)
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {prog}"))
}

pub async fn run(p: Params) -> Result<()> {
    let t0 = Instant::now();
    let mut child = spawn(&p)?;
    let until = t0 + p.timeout;
    let mut line = format!("startup: pid {}", child.id());
    let res: Result<()> = async {
        loop {
            if ping_once(&p.http).await {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("server exited before answering /ping: {status}");
            }
            if Instant::now() >= until {
                bail!("no /ping answer within {:?}", p.timeout);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        line.push_str(&format!(" ping_ms={}", ms(t0.elapsed())));
        if let Some((topic, channel)) = &p.first_message {
            first_message(&p.tcp, topic, channel, until).await?;
            line.push_str(&format!(" first_msg_ms={}", ms(t0.elapsed())));
        }
        if p.populate_topics > 0 {
            let t = Instant::now();
            populate(&p.tcp, p.populate_topics, p.populate_messages).await?;
            line.push_str(&format!(
                " populated={}x{} in {}ms",
                p.populate_topics,
                p.populate_messages,
                ms(t.elapsed())
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    match p.stop {
        Stop::None => {}
        Stop::Term | Stop::Kill => {
            let t = Instant::now();
            if p.stop == Stop::Term {
                let st = Proc::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status()
                    .context("run kill -TERM")?;
                if !st.success() {
                    bail!("kill -TERM {} failed", child.id());
                }
            } else {
                child.kill().context("SIGKILL the server")?;
            }
            let status = child.wait().context("wait for the server")?;
            line.push_str(&format!(
                " stop={:?} stop_ms={} exit={status}",
                p.stop,
                ms(t.elapsed())
            ));
        }
    }
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert!(is_http_200(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK"
        ));
        assert!(is_http_200(b"HTTP/1.0 200 OK\r\n"));
        assert!(!is_http_200(b"HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(!is_http_200(b""));
        assert!(!is_http_200(b"200 HTTP/1.1"));
    }
}
