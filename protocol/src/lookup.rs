//! nsqlookupd's TCP protocol V1, both sides: nsqd sends `  V1`, then newline-terminated
//! commands (`IDENTIFY` followed by a 4-byte big-endian length and a JSON body,
//! `REGISTER topic [channel]`, `UNREGISTER topic [channel]`, `PING`); nsqlookupd answers
//! each with a 4-byte big-endian length and the response (`OK`, IDENTIFY's JSON, or an
//! error text such as `E_INVALID ...`). As in NSQ, every error closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub const MAGIC_V1: &[u8; 4] = b"  V1";
/// Longest command line accepted.
pub const MAX_LINE: usize = 1024;
/// Largest IDENTIFY body accepted.
pub const MAX_IDENTIFY_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping,
    Identify(Bytes),
    Register {
        topic: String,
        channel: Option<String>,
    },
    Unregister {
        topic: String,
        channel: Option<String>,
    },
}

/// An error as nsqlookupd sends it; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// The producer an nsqd describes in IDENTIFY (NSQ's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    #[serde(default)]
    pub hostname: String,
}

impl PeerIdentity {
    /// Decode an IDENTIFY body; every field but `hostname` is required.
    pub fn from_body(body: &[u8]) -> Result<PeerIdentity, Error> {
        #[derive(Deserialize)]
        struct Loose {
            broadcast_address: Option<String>,
            tcp_port: Option<u16>,
            http_port: Option<u16>,
            version: Option<String>,
            #[serde(default)]
            hostname: String,
        }
        let v: Loose = serde_json::from_slice(body)
            .map_err(|_| Error("E_BAD_BODY IDENTIFY failed to decode JSON body".into()))?;
        match (v.broadcast_address, v.tcp_port, v.http_port, v.version) {
            (Some(b), Some(t), Some(h), Some(ver))
                if !b.is_empty() && t != 0 && h != 0 && !ver.is_empty() =>
            {
                Ok(PeerIdentity {
                    broadcast_address: b,
                    tcp_port: t,
                    http_port: h,
                    version: ver,
                    hostname: v.hostname,
                })
            }
            _ => Err(Error("E_BAD_BODY IDENTIFY missing fields".into())),
        }
    }
}

impl Command {
    /// Encode for sending (nsqd's side).
    pub fn encode(&self, out: &mut BytesMut) {
        let reg = |out: &mut BytesMut, verb: &str, topic: &str, channel: &Option<String>| {
            out.put_slice(verb.as_bytes());
            out.put_u8(b' ');
            out.put_slice(topic.as_bytes());
            if let Some(c) = channel {
                out.put_u8(b' ');
                out.put_slice(c.as_bytes());
            }
            out.put_u8(b'\n');
        };
        match self {
            Command::Ping => out.put_slice(b"PING\n"),
            Command::Identify(body) => {
                out.put_slice(b"IDENTIFY\n");
                out.put_u32(body.len() as u32);
                out.put_slice(body);
            }
            Command::Register { topic, channel } => reg(out, "REGISTER", topic, channel),
            Command::Unregister { topic, channel } => reg(out, "UNREGISTER", topic, channel),
        }
    }
}

/// nsqlookupd's side: take one complete command from `buf` (`Ok(None)` until it is all
/// there). `identified` is whether this connection has IDENTIFYed: REGISTER/UNREGISTER
/// need it and a second IDENTIFY is refused, checked before the arguments, as NSQ does.
/// A refused command line is consumed (the connection closes after any error anyway).
pub fn parse_command(buf: &mut BytesMut, identified: bool) -> Result<Option<Command>, Error> {
    let nl = match crate::v2::find_line(buf, MAX_LINE) {
        Ok(Some(nl)) => nl,
        Ok(None) => return Ok(None),
        Err(()) => return Err(Error("E_INVALID command line too long".into())),
    };
    let line = String::from_utf8_lossy(&buf[..nl]).trim().to_string();
    let params: Vec<&str> = line.split(' ').collect();
    if params[0] == "IDENTIFY" && !identified {
        return identify(buf, nl);
    }
    let cmd = line_command(&params, identified);
    buf.advance(nl + 1);
    cmd.map(Some)
}

/// IDENTIFY's 4-byte size and JSON body after the line ending at `nl`.
fn identify(buf: &mut BytesMut, nl: usize) -> Result<Option<Command>, Error> {
    let Some(size) = buf
        .get(nl + 1..nl + 5)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return Ok(None);
    };
    if size <= 0 || size as usize > MAX_IDENTIFY_BODY {
        return Err(Error(format!(
            "E_BAD_BODY IDENTIFY invalid body size {size}"
        )));
    }
    if buf.len() < nl + 5 + size as usize {
        return Ok(None);
    }
    buf.advance(nl + 5);
    Ok(Some(Command::Identify(
        buf.split_to(size as usize).freeze(),
    )))
}

/// A command that is its line alone (`params[0]` is its name).
fn line_command(params: &[&str], identified: bool) -> Result<Command, Error> {
    match params[0] {
        "PING" => Ok(Command::Ping),
        "IDENTIFY" => Err(Error("E_INVALID cannot IDENTIFY again".into())),
        verb @ ("REGISTER" | "UNREGISTER") => {
            if !identified {
                return Err(Error("E_INVALID client must IDENTIFY".into()));
            }
            let (topic, channel) = registration(verb, params)?;
            Ok(if verb == "REGISTER" {
                Command::Register { topic, channel }
            } else {
                Command::Unregister { topic, channel }
            })
        }
        other => Err(Error(format!("E_INVALID invalid command {other}"))),
    }
}

/// REGISTER / UNREGISTER's `topic [channel]`, validated.
fn registration(verb: &str, params: &[&str]) -> Result<(String, Option<String>), Error> {
    let Some(topic) = params.get(1).filter(|t| !t.is_empty()) else {
        return Err(Error(format!(
            "E_INVALID {verb} insufficient number of params"
        )));
    };
    if !crate::names::is_valid_topic_name(topic) {
        return Err(Error(format!(
            "E_BAD_TOPIC {verb} topic name '{topic}' is not valid"
        )));
    }
    let channel = params.get(2).filter(|c| !c.is_empty());
    if let Some(c) = channel {
        if !crate::names::is_valid_channel_name(c) {
            return Err(Error(format!(
                "E_BAD_CHANNEL {verb} channel name '{c}' is not valid"
            )));
        }
    }
    Ok((topic.to_string(), channel.map(|c| c.to_string())))
}

/// Frame a response (nsqlookupd's side).
pub fn encode_response(out: &mut BytesMut, data: &[u8]) {
    out.put_u32(data.len() as u32);
    out.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], identified: bool) -> Result<Option<Command>, Error> {
        parse_command(&mut BytesMut::from(bytes), identified)
    }

    #[test]
    fn round_trips_and_errors() {
        for cmd in [
            Command::Ping,
            Command::Identify(Bytes::from_static(b"{\"a\":1}")),
            Command::Register {
                topic: "t".into(),
                channel: Some("c".into()),
            },
            Command::Unregister {
                topic: "t".into(),
                channel: None,
            },
        ] {
            let mut b = BytesMut::new();
            cmd.encode(&mut b);
            let identified = !matches!(cmd, Command::Identify(_));
            // Incomplete input waits for more.
            let mut part = BytesMut::from(&b[..b.len() - 1]);
            assert_eq!(parse_command(&mut part, identified), Ok(None));
            assert_eq!(parse_command(&mut b, identified), Ok(Some(cmd)));
            assert!(b.is_empty());
        }
        let err = |b: &[u8], id| parse(b, id).unwrap_err().0;
        assert_eq!(
            err(b"REGISTER t\n", false),
            "E_INVALID client must IDENTIFY"
        );
        assert_eq!(
            err(b"REGISTER\n", true),
            "E_INVALID REGISTER insufficient number of params"
        );
        assert!(err(b"REGISTER bad/t\n", true).starts_with("E_BAD_TOPIC"));
        assert!(err(b"UNREGISTER t bad/c\n", true).starts_with("E_BAD_CHANNEL"));
        assert_eq!(err(b"BOGUS\n", true), "E_INVALID invalid command BOGUS");
        assert_eq!(err(b"IDENTIFY\n", true), "E_INVALID cannot IDENTIFY again");
        assert!(err(b"IDENTIFY\n\xff\xff\xff\xff", false).starts_with("E_BAD_BODY"));
        assert!(err(&[b'x'; MAX_LINE + 2], true).contains("too long"));
        assert!(PeerIdentity::from_body(b"{").is_err());
        assert!(PeerIdentity::from_body(br#"{"broadcast_address":"h"}"#).is_err());
        let p = PeerIdentity::from_body(
            br#"{"broadcast_address":"h","tcp_port":1,"http_port":2,"version":"1.3.0"}"#,
        )
        .unwrap();
        assert_eq!((p.tcp_port, p.http_port), (1, 2));
    }
}
