//! TCP protocol V2: frames, messages and commands.
//!
//! [`parse_command`] is incremental: it looks at a buffer of bytes received so far and
//! either consumes one complete command, asks for more bytes (`Ok(None)`), or reports the
//! error NSQ would send. Sizes are checked as soon as they are read, before waiting for a
//! body, so a client announcing a huge or negative size gets its error immediately and
//! never makes the server allocate for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const MAGIC_V2: &[u8; 4] = b"  V2";
pub const FRAME_TYPE_RESPONSE: u32 = 0;
pub const FRAME_TYPE_ERROR: u32 = 1;
pub const FRAME_TYPE_MESSAGE: u32 = 2;
pub const MSG_ID_LENGTH: usize = 16;
/// timestamp (8) + attempts (2) + id (16)
pub const MESSAGE_HEADER_LENGTH: usize = 26;
/// Longest command line we wait for; real lines are well under 200 bytes.
pub const MAX_LINE_LENGTH: usize = 4096;

pub type MessageId = [u8; MSG_ID_LENGTH];

/// Size limits from nsqd's options (--max-msg-size, --max-body-size).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_msg_size: u64,
    pub max_body_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Identify(Bytes),
    Auth(Bytes),
    Sub {
        topic: String,
        channel: String,
    },
    Pub {
        topic: String,
        body: Bytes,
    },
    Mpub {
        topic: String,
        bodies: Vec<Bytes>,
    },
    Dpub {
        topic: String,
        defer_ms: i64,
        body: Bytes,
    },
    Rdy(i64),
    Fin(MessageId),
    Req {
        id: MessageId,
        timeout_ms: i64,
    },
    Touch(MessageId),
    Cls,
    Nop,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify(_) => "IDENTIFY",
            Command::Auth(_) => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
            Command::Rdy(_) => "RDY",
            Command::Fin(_) => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch(_) => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
        }
    }

    /// Encode for sending (client side).
    pub fn encode(&self, out: &mut BytesMut) {
        fn line(out: &mut BytesMut, parts: &[&[u8]]) {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b' ');
                }
                out.put_slice(p);
            }
            out.put_u8(b'\n');
        }
        fn body(out: &mut BytesMut, b: &[u8]) {
            out.put_u32(b.len() as u32);
            out.put_slice(b);
        }
        match self {
            Command::Identify(b) => {
                line(out, &[b"IDENTIFY"]);
                body(out, b);
            }
            Command::Auth(b) => {
                line(out, &[b"AUTH"]);
                body(out, b);
            }
            Command::Sub { topic, channel } => {
                line(out, &[b"SUB", topic.as_bytes(), channel.as_bytes()])
            }
            Command::Pub { topic, body: b } => {
                line(out, &[b"PUB", topic.as_bytes()]);
                body(out, b);
            }
            Command::Mpub { topic, bodies } => {
                line(out, &[b"MPUB", topic.as_bytes()]);
                let total: usize = 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
                out.put_u32(total as u32);
                out.put_u32(bodies.len() as u32);
                for b in bodies {
                    body(out, b);
                }
            }
            Command::Dpub {
                topic,
                defer_ms,
                body: b,
            } => {
                line(
                    out,
                    &[b"DPUB", topic.as_bytes(), defer_ms.to_string().as_bytes()],
                );
                body(out, b);
            }
            Command::Rdy(n) => line(out, &[b"RDY", n.to_string().as_bytes()]),
            Command::Fin(id) => line(out, &[b"FIN", id]),
            Command::Req { id, timeout_ms } => {
                line(out, &[b"REQ", id, timeout_ms.to_string().as_bytes()])
            }
            Command::Touch(id) => line(out, &[b"TOUCH", id]),
            Command::Cls => line(out, &[b"CLS"]),
            Command::Nop => line(out, &[b"NOP"]),
        }
    }
}

/// An error as NSQ sends it: `code` is e.g. `E_BAD_BODY`; the wire text is
/// `"{code} {description}"`. Every parse error is fatal (NSQ closes the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {description}")]
pub struct ProtocolError {
    pub code: &'static str,
    pub description: String,
    pub fatal: bool,
}

impl ProtocolError {
    /// An error after which the server closes the connection (NSQ's `FatalClientErr`).
    pub fn fatal(code: &'static str, description: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            description: description.into(),
            fatal: true,
        }
    }

    /// An error the connection survives (NSQ's `ClientErr`, e.g. `E_FIN_FAILED`).
    pub fn soft(code: &'static str, description: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            description: description.into(),
            fatal: false,
        }
    }

    /// The HTTP API reports these codes without the `E_` prefix (e.g. `BAD_BODY`).
    pub fn http_code(&self) -> &'static str {
        self.code.strip_prefix("E_").unwrap_or(self.code)
    }
}

fn invalid(desc: impl Into<String>) -> ProtocolError {
    ProtocolError::fatal("E_INVALID", desc)
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    buf.get(at..at + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parse a decimal the way NSQ's ByteToBase10 does: digits only, no sign.
fn parse_base10(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn message_id(p: &[u8]) -> Result<MessageId, ProtocolError> {
    p.try_into().map_err(|_| invalid("Invalid Message ID"))
}

fn topic_param(cmd: &str, p: &[u8]) -> Result<String, ProtocolError> {
    let s = String::from_utf8_lossy(p).to_string();
    if !crate::names::is_valid_topic_name(&s) {
        return Err(ProtocolError::fatal(
            "E_BAD_TOPIC",
            format!("{cmd} topic name {s:?} is not valid"),
        ));
    }
    Ok(s)
}

fn channel_param(cmd: &str, p: &[u8]) -> Result<String, ProtocolError> {
    let s = String::from_utf8_lossy(p).to_string();
    if !crate::names::is_valid_channel_name(&s) {
        return Err(ProtocolError::fatal(
            "E_BAD_CHANNEL",
            format!("{cmd} channel name {s:?} is not valid"),
        ));
    }
    Ok(s)
}

/// How a command's body size is checked (NSQ words each command's errors differently).
enum BodyKind {
    /// IDENTIFY, AUTH: E_BAD_BODY "... invalid body size" / "... body too big"
    Plain,
    /// PUB, DPUB: E_BAD_MESSAGE "... invalid message body size" / "... message too big"
    Message,
    /// MPUB: E_BAD_BODY, limited by --max-body-size
    Multi,
}

fn check_body_size(
    cmd: &str,
    kind: &BodyKind,
    size: i32,
    limits: &Limits,
) -> Result<usize, ProtocolError> {
    let (code, invalid_desc, too_big_desc, max) = match kind {
        BodyKind::Plain => (
            "E_BAD_BODY",
            "invalid body size",
            "body too big",
            limits.max_body_size,
        ),
        BodyKind::Message => (
            "E_BAD_MESSAGE",
            "invalid message body size",
            "message too big",
            limits.max_msg_size,
        ),
        BodyKind::Multi => (
            "E_BAD_BODY",
            "invalid body size",
            "body too big",
            limits.max_body_size,
        ),
    };
    if size <= 0 {
        return Err(ProtocolError::fatal(
            code,
            format!("{cmd} {invalid_desc} {size}"),
        ));
    }
    if size as u64 > max {
        return Err(ProtocolError::fatal(
            code,
            format!("{cmd} {too_big_desc} {size} > {max}"),
        ));
    }
    Ok(size as usize)
}

/// Where the first `\n` in `buf` is: `Ok(None)` while it has not arrived and the line is
/// still within `max` bytes, `Err(())` once the line is longer (both protocols refuse it).
pub(crate) fn find_line(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    match buf.iter().take(max + 1).position(|&b| b == b'\n') {
        Some(nl) => Ok(Some(nl)),
        None if buf.len() > max => Err(()),
        None => Ok(None),
    }
}

/// Try to take one complete command from `buf`. On `Ok(None)` nothing is consumed.
pub fn parse_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Command>, ProtocolError> {
    let Some(nl) = find_line(buf, MAX_LINE_LENGTH)
        .map_err(|()| invalid(format!("command line longer than {MAX_LINE_LENGTH} bytes")))?
    else {
        return Ok(None);
    };
    let mut line = &buf[..nl];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    let params: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let line_len = nl + 1;

    // Commands without a body are complete once the line is.
    let cmd = match params[0] {
        b"IDENTIFY" | b"AUTH" | b"PUB" | b"MPUB" | b"DPUB" => BodyCommand::parse(&params)?,
        _ => {
            let cmd = line_command(&params)?;
            buf.advance(line_len);
            return Ok(Some(cmd));
        }
    };

    // Commands with a 4-byte size and a body: the line is valid; now the size.
    let Some(size) = read_i32(buf, line_len) else {
        return Ok(None);
    };
    let size = check_body_size(cmd.name(), &cmd.body_kind(), size, limits)?;
    let total = line_len + 4 + size;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(line_len + 4);
    let body = buf.split_to(size).freeze();
    cmd.with_body(body, limits).map(Some)
}

/// A command that is its line alone (`params[0]` is its name).
fn line_command(params: &[&[u8]]) -> Result<Command, ProtocolError> {
    Ok(match params[0] {
        b"NOP" => Command::Nop,
        b"CLS" => Command::Cls,
        b"RDY" => {
            let count = match params.get(1) {
                None => 1,
                Some(p) => parse_base10(p).ok_or_else(|| {
                    invalid(format!(
                        "RDY could not parse count {}",
                        String::from_utf8_lossy(p)
                    ))
                })?,
            };
            Command::Rdy(count)
        }
        b"FIN" => {
            let p = params
                .get(1)
                .ok_or_else(|| invalid("FIN insufficient number of params"))?;
            Command::Fin(message_id(p)?)
        }
        b"TOUCH" => {
            let p = params
                .get(1)
                .ok_or_else(|| invalid("TOUCH insufficient number of params"))?;
            Command::Touch(message_id(p)?)
        }
        b"REQ" => {
            if params.len() < 3 {
                return Err(invalid("REQ insufficient number of params"));
            }
            let id = message_id(params[1])?;
            let timeout_ms = parse_base10(params[2]).ok_or_else(|| {
                invalid(format!(
                    "REQ could not parse timeout {}",
                    String::from_utf8_lossy(params[2])
                ))
            })?;
            Command::Req { id, timeout_ms }
        }
        b"SUB" => {
            if params.len() < 3 {
                return Err(invalid("SUB insufficient number of parameters"));
            }
            let topic = topic_param("SUB", params[1])?;
            let channel = channel_param("SUB", params[2])?;
            Command::Sub { topic, channel }
        }
        other => {
            return Err(invalid(format!(
                "invalid command {}",
                String::from_utf8_lossy(other)
            )))
        }
    })
}

/// A command followed by a 4-byte size and a body, with what its line said.
enum BodyCommand {
    Identify,
    Auth,
    Pub { topic: String },
    Mpub { topic: String },
    Dpub { topic: String, defer_ms: i64 },
}

impl BodyCommand {
    /// Validate the line of IDENTIFY, AUTH, PUB, MPUB or DPUB (`params[0]`).
    fn parse(params: &[&[u8]]) -> Result<BodyCommand, ProtocolError> {
        Ok(match params[0] {
            b"IDENTIFY" => BodyCommand::Identify,
            b"AUTH" => {
                if params.len() != 1 {
                    return Err(invalid("AUTH invalid number of parameters"));
                }
                BodyCommand::Auth
            }
            name @ (b"PUB" | b"MPUB") => {
                let cmd = if name == b"PUB" { "PUB" } else { "MPUB" };
                if params.len() < 2 {
                    return Err(invalid(format!("{cmd} insufficient number of parameters")));
                }
                let topic = topic_param(cmd, params[1])?;
                if name == b"PUB" {
                    BodyCommand::Pub { topic }
                } else {
                    BodyCommand::Mpub { topic }
                }
            }
            _ => {
                if params.len() < 3 {
                    return Err(invalid("DPUB insufficient number of parameters"));
                }
                let topic = topic_param("DPUB", params[1])?;
                let defer_ms = parse_base10(params[2]).ok_or_else(|| {
                    invalid(format!(
                        "DPUB could not parse timeout {}",
                        String::from_utf8_lossy(params[2])
                    ))
                })?;
                BodyCommand::Dpub { topic, defer_ms }
            }
        })
    }

    fn name(&self) -> &'static str {
        match self {
            BodyCommand::Identify => "IDENTIFY",
            BodyCommand::Auth => "AUTH",
            BodyCommand::Pub { .. } => "PUB",
            BodyCommand::Mpub { .. } => "MPUB",
            BodyCommand::Dpub { .. } => "DPUB",
        }
    }

    fn body_kind(&self) -> BodyKind {
        match self {
            BodyCommand::Identify | BodyCommand::Auth => BodyKind::Plain,
            BodyCommand::Pub { .. } | BodyCommand::Dpub { .. } => BodyKind::Message,
            BodyCommand::Mpub { .. } => BodyKind::Multi,
        }
    }

    fn with_body(self, body: Bytes, limits: &Limits) -> Result<Command, ProtocolError> {
        Ok(match self {
            BodyCommand::Identify => Command::Identify(body),
            BodyCommand::Auth => Command::Auth(body),
            BodyCommand::Pub { topic } => Command::Pub { topic, body },
            BodyCommand::Mpub { topic } => Command::Mpub {
                bodies: parse_mpub_body(&body, limits.max_msg_size)?,
                topic,
            },
            BodyCommand::Dpub { topic, defer_ms } => Command::Dpub {
                topic,
                defer_ms,
                body,
            },
        })
    }
}

/// Split an MPUB body (count, then size + bytes per message) into message bodies. Used by
/// the TCP command and by HTTP `/mpub?binary=true`.
pub fn parse_mpub_body(body: &Bytes, max_msg_size: u64) -> Result<Vec<Bytes>, ProtocolError> {
    let Some(n) = read_i32(body, 0) else {
        return Err(ProtocolError::fatal(
            "E_BAD_BODY",
            "MPUB failed to read message count",
        ));
    };
    if n <= 0 {
        return Err(ProtocolError::fatal(
            "E_BAD_BODY",
            format!("MPUB invalid message count {n}"),
        ));
    }
    // Each message needs at least 5 bytes; a count beyond that is a lie, refuse it before
    // allocating for it.
    if n as usize > body.len() / 5 {
        return Err(ProtocolError::fatal(
            "E_BAD_MESSAGE",
            "MPUB failed to read message body size",
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut at = 4;
    for _ in 0..n {
        let Some(size) = read_i32(body, at) else {
            return Err(ProtocolError::fatal(
                "E_BAD_MESSAGE",
                "MPUB failed to read message body size",
            ));
        };
        if size <= 0 {
            return Err(ProtocolError::fatal(
                "E_BAD_MESSAGE",
                format!("MPUB invalid message body size {size}"),
            ));
        }
        if size as u64 > max_msg_size {
            return Err(ProtocolError::fatal(
                "E_BAD_MESSAGE",
                format!("MPUB message too big {size} > {max_msg_size}"),
            ));
        }
        at += 4;
        let end = at + size as usize;
        if end > body.len() {
            return Err(ProtocolError::fatal(
                "E_BAD_MESSAGE",
                "MPUB failed to read message body",
            ));
        }
        out.push(body.slice(at..end));
        at = end;
    }
    Ok(out)
}

/// Append one frame: size (4 + data), type, data.
pub fn encode_frame(out: &mut BytesMut, frame_type: u32, data: &[u8]) {
    out.reserve(8 + data.len());
    out.put_u32(4 + data.len() as u32);
    out.put_u32(frame_type);
    out.put_slice(data);
}

/// A message as carried in a message frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub id: MessageId,
    pub body: Bytes,
}

/// Append a complete message frame.
pub fn encode_message_frame(
    out: &mut BytesMut,
    timestamp_ns: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    let len = 4 + MESSAGE_HEADER_LENGTH + body.len();
    out.reserve(4 + len);
    out.put_u32(len as u32);
    out.put_u32(FRAME_TYPE_MESSAGE);
    out.put_i64(timestamp_ns);
    out.put_u16(attempts);
    out.put_slice(id);
    out.put_slice(body);
}

pub fn decode_message(data: Bytes) -> Result<Message, ProtocolError> {
    if data.len() < MESSAGE_HEADER_LENGTH {
        return Err(ProtocolError::fatal(
            "E_BAD_MESSAGE",
            format!("message frame too short ({})", data.len()),
        ));
    }
    let mut d = data;
    let timestamp_ns = d.get_i64();
    let attempts = d.get_u16();
    let mut id = [0u8; MSG_ID_LENGTH];
    d.copy_to_slice(&mut id);
    Ok(Message {
        timestamp_ns,
        attempts,
        id,
        body: d,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub frame_type: u32,
    pub data: Bytes,
}

/// Client side: take one complete frame from `buf` (or `Ok(None)`), refusing frames larger
/// than `max_size`.
pub fn parse_frame(buf: &mut BytesMut, max_size: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some(size) = read_i32(buf, 0) else {
        return Ok(None);
    };
    if size < 4 || size as usize > max_size {
        return Err(ProtocolError::fatal(
            "E_BAD_FRAME",
            format!("invalid frame size {size}"),
        ));
    }
    let size = size as usize;
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    let frame_type = buf.get_u32();
    let data = buf.split_to(size - 4).freeze();
    Ok(Some(Frame { frame_type, data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Command>, ProtocolError> {
        let mut b = BytesMut::from(bytes);
        parse_command(
            &mut b,
            &Limits {
                max_msg_size: 100,
                max_body_size: 1000,
            },
        )
    }

    fn err(bytes: &[u8]) -> String {
        parse(bytes).unwrap_err().to_string()
    }

    fn with_body(line: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!("{line}\n").into_bytes();
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse(b"NOP\n").unwrap(), Some(Command::Nop));
        assert_eq!(parse(b"CLS\r\n").unwrap(), Some(Command::Cls));
        assert_eq!(parse(b"RDY 10\n").unwrap(), Some(Command::Rdy(10)));
        assert_eq!(parse(b"RDY\n").unwrap(), Some(Command::Rdy(1)));
        assert_eq!(
            parse(b"SUB t c\n").unwrap(),
            Some(Command::Sub {
                topic: "t".into(),
                channel: "c".into()
            })
        );
        assert_eq!(
            parse(b"FIN 0123456789abcdef\n").unwrap(),
            Some(Command::Fin(*b"0123456789abcdef"))
        );
        assert_eq!(
            parse(b"REQ 0123456789abcdef 500\n").unwrap(),
            Some(Command::Req {
                id: *b"0123456789abcdef",
                timeout_ms: 500
            })
        );
        assert_eq!(parse(b"NO").unwrap(), None);
    }

    #[test]
    fn errors_match_nsq() {
        assert_eq!(err(b"BOGUS\n"), "E_INVALID invalid command BOGUS");
        assert_eq!(err(b"RDY -1\n"), "E_INVALID RDY could not parse count -1");
        assert_eq!(err(b"FIN abc\n"), "E_INVALID Invalid Message ID");
        assert_eq!(err(b"FIN\n"), "E_INVALID FIN insufficient number of params");
        assert_eq!(
            err(b"REQ 0123456789abcdef x\n"),
            "E_INVALID REQ could not parse timeout x"
        );
        assert_eq!(
            err(b"SUB t\n"),
            "E_INVALID SUB insufficient number of parameters"
        );
        assert_eq!(
            err(b"SUB t/x c\n"),
            "E_BAD_TOPIC SUB topic name \"t/x\" is not valid"
        );
        assert_eq!(
            err(b"SUB t c!\n"),
            "E_BAD_CHANNEL SUB channel name \"c!\" is not valid"
        );
        assert_eq!(
            err(&with_body("PUB t", b"")),
            "E_BAD_MESSAGE PUB invalid message body size 0"
        );
        assert_eq!(
            err(&with_body("PUB t", &[1; 101])),
            "E_BAD_MESSAGE PUB message too big 101 > 100"
        );
        assert_eq!(
            err(b"PUB t\n\xff\xff\xff\xff"),
            "E_BAD_MESSAGE PUB invalid message body size -1"
        );
        assert_eq!(
            err(b"MPUB t\n\x00\x00\x10\x00"),
            "E_BAD_BODY MPUB body too big 4096 > 1000"
        );
        assert_eq!(
            err(&with_body("MPUB t", &0u32.to_be_bytes())),
            "E_BAD_BODY MPUB invalid message count 0"
        );
        assert_eq!(
            err(b"DPUB t x\n"),
            "E_INVALID DPUB could not parse timeout x"
        );
        assert_eq!(
            err(&with_body("IDENTIFY", b"")),
            "E_BAD_BODY IDENTIFY invalid body size 0"
        );
        assert_eq!(
            err(b"AUTH x\n"),
            "E_INVALID AUTH invalid number of parameters"
        );
        assert!(err(&vec![b'A'; MAX_LINE_LENGTH + 10]).starts_with("E_INVALID"));
    }

    #[test]
    fn bodies_wait_for_all_bytes() {
        let full = with_body("PUB t", b"hello");
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut b = BytesMut::from(&full[..]);
        b.extend_from_slice(b"NOP\n");
        let lim = Limits::default();
        assert_eq!(
            parse_command(&mut b, &lim).unwrap(),
            Some(Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(parse_command(&mut b, &lim).unwrap(), Some(Command::Nop));
        assert!(b.is_empty());
    }

    #[test]
    fn encode_parse_round_trip() {
        let cmds = vec![
            Command::Identify(Bytes::from_static(b"{}")),
            Command::Auth(Bytes::from_static(b"secret")),
            Command::Sub {
                topic: "t".into(),
                channel: "c#ephemeral".into(),
            },
            Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"x"),
            },
            Command::Mpub {
                topic: "t".into(),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
            },
            Command::Dpub {
                topic: "t".into(),
                defer_ms: 1000,
                body: Bytes::from_static(b"d"),
            },
            Command::Rdy(2500),
            Command::Fin(*b"0123456789abcdef"),
            Command::Req {
                id: *b"0123456789abcdef",
                timeout_ms: 0,
            },
            Command::Touch(*b"0123456789abcdef"),
            Command::Cls,
            Command::Nop,
        ];
        let mut buf = BytesMut::new();
        for c in &cmds {
            c.encode(&mut buf);
        }
        let lim = Limits::default();
        for c in &cmds {
            assert_eq!(parse_command(&mut buf, &lim).unwrap().as_ref(), Some(c));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_round_trip() {
        let mut b = BytesMut::new();
        encode_frame(&mut b, FRAME_TYPE_RESPONSE, b"OK");
        encode_message_frame(&mut b, 42, 3, b"0123456789abcdef", b"body");
        let f = parse_frame(&mut b, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (f.frame_type, f.data.as_ref()),
            (FRAME_TYPE_RESPONSE, &b"OK"[..])
        );
        let f = parse_frame(&mut b, 1 << 20).unwrap().unwrap();
        assert_eq!(f.frame_type, FRAME_TYPE_MESSAGE);
        let m = decode_message(f.data).unwrap();
        assert_eq!(
            (m.timestamp_ns, m.attempts, &m.id, m.body.as_ref()),
            (42, 3, b"0123456789abcdef", &b"body"[..])
        );
        let mut bad = BytesMut::from(&[0u8, 0, 0, 1, 0, 0, 0, 0][..]);
        assert!(parse_frame(&mut bad, 100).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut b = BytesMut::from(&data[..]);
            let lim = Limits { max_msg_size: 64, max_body_size: 256 };
            for _ in 0..50 {
                match parse_command(&mut b, &lim) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            let mut f = BytesMut::from(&data[..]);
            let _ = parse_frame(&mut f, 1024);
            let _ = parse_mpub_body(&Bytes::from(data.clone()), 64);
        }

        #[test]
        fn pub_round_trips(topic in "[a-z0-9_.-]{1,64}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..100)) {
            let c = Command::Pub { topic, body: Bytes::from(body) };
            let mut b = BytesMut::new();
            c.encode(&mut b);
            let got = parse_command(&mut b, &Limits::default()).unwrap();
            proptest::prop_assert_eq!(got, Some(c));
        }
    }
}
