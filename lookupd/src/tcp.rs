//! nsqlookupd's TCP side: nsqd instances connect, IDENTIFY, REGISTER / UNREGISTER their
//! topics and channels, and PING (protocol V1, parsed by `protocol::lookup`; NSQ:
//! nsqlookupd/tcp.go and lookup_protocol_v1.go).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::lookup as v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::db::PeerInfo;
use crate::{Lookupd, NSQ_COMPAT_VERSION};

/// Write one V1 response: 4-byte big-endian length, then the data.
async fn respond(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut v = BytesMut::with_capacity(4 + data.len());
    v1::encode_response(&mut v, data);
    s.write_all(&v).await
}

pub(crate) async fn serve_tcp(
    l: Arc<Lookupd>,
    mut s: TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let id = l.next_id.fetch_add(1, Ordering::Relaxed);
    let mut magic = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut magic)).await {
        Ok(Ok(_)) if &magic == v1::MAGIC_V1 => {}
        Ok(Ok(_)) => {
            let _ = respond(&mut s, b"E_BAD_PROTOCOL").await;
            return;
        }
        _ => return,
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut identified = false;
    let reason = loop {
        // Execute every complete command in the buffer.
        let fatal = loop {
            match next_command(&l, id, remote, &mut buf, &mut identified) {
                Ok(None) => break None,
                Ok(Some(resp)) => {
                    if respond(&mut s, &resp).await.is_err() {
                        break Some("write failed".to_string());
                    }
                }
                Err(text) => {
                    let _ = respond(&mut s, text.as_bytes()).await;
                    break Some(text);
                }
            }
        };
        if let Some(r) = fatal {
            break r;
        }
        // Producers ping every 15 s; allow two missed pings before giving up.
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(60), s.read_buf(&mut buf)) => match r {
                Ok(Ok(0)) => break "closed".to_string(),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break e.to_string(),
                Err(_) => break "idle timeout".to_string(),
            },
            _ = stop.changed() => break "shutdown".to_string(),
        }
    };
    if identified {
        tracing::info!(client = %remote, reason, "producer disconnected");
    }
    l.db.lock().remove_peer(id);
}

/// Parse and execute one command if complete: `Ok(Some(response))`, `Ok(None)` when more
/// input is needed, `Err(text)` for an error (which closes the connection, as in NSQ).
fn next_command(
    l: &Lookupd,
    id: u64,
    remote: SocketAddr,
    buf: &mut BytesMut,
    identified: &mut bool,
) -> Result<Option<Vec<u8>>, String> {
    let cmd = match v1::parse_command(buf, *identified) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.0),
    };
    match cmd {
        v1::Command::Ping => {
            l.db.lock().touch(id);
            Ok(Some(b"OK".to_vec()))
        }
        v1::Command::Identify(body) => {
            let v = v1::PeerIdentity::from_body(&body).map_err(|e| e.0)?;
            let info = PeerInfo {
                id,
                remote_address: remote.to_string(),
                hostname: v.hostname,
                broadcast_address: v.broadcast_address,
                tcp_port: v.tcp_port,
                http_port: v.http_port,
                version: v.version,
            };
            tracing::info!(client = %remote, node = %info.node_key(), "producer identified");
            l.db.lock().add_peer(info);
            *identified = true;
            let resp = serde_json::json!({
                "tcp_port": l.tcp_addr.get().map(|a| a.port()).unwrap_or(0),
                "http_port": l.http_addr.get().map(|a| a.port()).unwrap_or(0),
                "version": NSQ_COMPAT_VERSION,
                "broadcast_address": l.opts.broadcast_address,
                "hostname": crate::options::default_hostname(),
            });
            Ok(Some(resp.to_string().into_bytes()))
        }
        v1::Command::Register { topic, channel } => {
            l.db.lock().register(id, &topic, channel.as_deref());
            Ok(Some(b"OK".to_vec()))
        }
        v1::Command::Unregister { topic, channel } => {
            l.db.lock().unregister(id, &topic, channel.as_deref());
            Ok(Some(b"OK".to_vec()))
        }
    }
}
