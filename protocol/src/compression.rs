//! Stream compression negotiated in IDENTIFY: snappy (framing format) or raw deflate, as NSQ
//! and its clients speak them. Both work on byte buffers so the connection task keeps one
//! read loop whatever the transport; bytes come in from the socket, plain bytes come out.

use bytes::{Buf, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use std::io::Write;

/// Largest snappy chunk we accept from a client (the format allows 16 MiB; real chunks are
/// at most 64 KiB of data plus overhead).
const MAX_SNAPPY_CHUNK: usize = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("snappy: {0}")]
    Snappy(String),
    #[error("deflate: {0}")]
    Deflate(String),
}

pub enum Codec {
    Snappy(Box<SnappyCodec>),
    Deflate(DeflateCodec),
}

impl Codec {
    /// Decompress whatever complete input is in `wire` into `plain`, consuming it.
    pub fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
    ) -> Result<(), CompressionError> {
        match self {
            Codec::Snappy(c) => c.decode(wire, plain),
            Codec::Deflate(c) => c.decode(wire, plain),
        }
    }

    /// Compress `plain` and append the result to `wire`, flushed so the peer can decode it all.
    pub fn encode(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), CompressionError> {
        match self {
            Codec::Snappy(c) => c.encode(plain, wire),
            Codec::Deflate(c) => c.encode(plain, wire),
        }
    }
}

pub struct SnappyCodec {
    encoder: snap::write::FrameEncoder<Vec<u8>>,
    decoder: snap::raw::Decoder,
    scratch: Vec<u8>,
}

impl Default for SnappyCodec {
    fn default() -> Self {
        SnappyCodec {
            encoder: snap::write::FrameEncoder::new(Vec::new()),
            decoder: snap::raw::Decoder::new(),
            scratch: Vec::new(),
        }
    }
}

impl SnappyCodec {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
    ) -> Result<(), CompressionError> {
        loop {
            if wire.len() < 4 {
                return Ok(());
            }
            let kind = wire[0];
            let len = u32::from_le_bytes([wire[1], wire[2], wire[3], 0]) as usize;
            if len > MAX_SNAPPY_CHUNK {
                return Err(CompressionError::Snappy(format!("chunk too large ({len})")));
            }
            if wire.len() < 4 + len {
                return Ok(());
            }
            let chunk = &wire[4..4 + len];
            match kind {
                0xff if chunk != b"sNaPpY" => {
                    return Err(CompressionError::Snappy("bad stream identifier".into()));
                }
                0xff => {}
                0x00 => {
                    if len < 4 {
                        return Err(CompressionError::Snappy("short compressed chunk".into()));
                    }
                    let data = &chunk[4..];
                    let n = snap::raw::decompress_len(data)
                        .map_err(|e| CompressionError::Snappy(e.to_string()))?;
                    if n > 65536 {
                        return Err(CompressionError::Snappy(format!(
                            "chunk decompresses to {n} bytes"
                        )));
                    }
                    self.scratch.resize(n, 0);
                    let n = self
                        .decoder
                        .decompress(data, &mut self.scratch)
                        .map_err(|e| CompressionError::Snappy(e.to_string()))?;
                    plain.extend_from_slice(&self.scratch[..n]);
                }
                0x01 => {
                    if len < 4 {
                        return Err(CompressionError::Snappy("short uncompressed chunk".into()));
                    }
                    plain.extend_from_slice(&chunk[4..]);
                }
                0x02..=0x7f => {
                    return Err(CompressionError::Snappy(format!(
                        "reserved chunk type {kind:#x}"
                    )));
                }
                _ => {} // padding and skippable chunks
            }
            wire.advance(4 + len);
        }
    }

    fn encode(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), CompressionError> {
        self.encoder
            .write_all(plain)
            .and_then(|_| self.encoder.flush())
            .map_err(|e| CompressionError::Snappy(e.to_string()))?;
        let out = self.encoder.get_mut();
        wire.extend_from_slice(out);
        out.clear();
        Ok(())
    }
}

pub struct DeflateCodec {
    compress: Compress,
    decompress: Decompress,
}

impl DeflateCodec {
    pub fn new(level: u32) -> DeflateCodec {
        DeflateCodec {
            compress: Compress::new(flate2::Compression::new(level.min(9)), false),
            decompress: Decompress::new(false),
        }
    }

    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
    ) -> Result<(), CompressionError> {
        let mut out = [0u8; 16384];
        loop {
            let before_in = self.decompress.total_in();
            let before_out = self.decompress.total_out();
            let status = self
                .decompress
                .decompress(wire, &mut out, FlushDecompress::None)
                .map_err(|e| CompressionError::Deflate(e.to_string()))?;
            let used = (self.decompress.total_in() - before_in) as usize;
            let produced = (self.decompress.total_out() - before_out) as usize;
            wire.advance(used);
            plain.extend_from_slice(&out[..produced]);
            if status == Status::StreamEnd {
                return Err(CompressionError::Deflate("stream ended".into()));
            }
            // The decompressor can hold output back (a full `out`, or the end of its window)
            // even with all input consumed, so stop only when a call makes no progress.
            if used == 0 && produced == 0 {
                break; // needs more input
            }
        }
        Ok(())
    }

    fn encode(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), CompressionError> {
        let mut input = plain;
        loop {
            wire.reserve(input.len() / 2 + 64);
            let before_in = self.compress.total_in();
            let flush = FlushCompress::Sync;
            self.compress
                .compress_vec(input, wire, flush)
                .map_err(|e| CompressionError::Deflate(e.to_string()))?;
            let used = (self.compress.total_in() - before_in) as usize;
            input = &input[used..];
            // Done when all input is consumed and the sync flush fitted in the spare room.
            if input.is_empty() && wire.len() < wire.capacity() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(make: impl Fn() -> Codec) {
        let mut a = make();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..50u32 {
            let chunk: Vec<u8> = (0..(i * 977 % 70000)).map(|j| (j % 251) as u8).collect();
            a.encode(&chunk, &mut wire).unwrap();
            expected.extend_from_slice(&chunk);
        }
        // Feed the wire bytes in awkward pieces, and all at once.
        for piece_len in [1usize, 7, 333, 4096, wire.len()] {
            let mut b = make();
            let mut plain = BytesMut::new();
            let mut buf = BytesMut::new();
            for piece in wire.chunks(piece_len) {
                buf.extend_from_slice(piece);
                b.decode(&mut buf, &mut plain).unwrap();
            }
            assert!(
                plain.as_ref() == expected.as_slice(),
                "pieces of {piece_len}: got {} bytes, want {}",
                plain.len(),
                expected.len()
            );
        }
    }

    #[test]
    fn snappy_round_trip() {
        round_trip(|| Codec::Snappy(Box::default()));
    }

    #[test]
    fn deflate_round_trip() {
        round_trip(|| Codec::Deflate(DeflateCodec::new(6)));
    }

    #[test]
    fn snappy_garbage_is_an_error() {
        let mut c = SnappyCodec::default();
        let mut wire = BytesMut::from(&[0x05u8, 3, 0, 0, 1, 2, 3][..]);
        assert!(c.decode(&mut wire, &mut BytesMut::new()).is_err());
        let mut wire = BytesMut::from(&[0x00u8, 8, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(c.decode(&mut wire, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn deflate_garbage_is_an_error() {
        let mut c = DeflateCodec::new(6);
        let mut wire = BytesMut::from(&[0xffu8; 64][..]);
        assert!(c.decode(&mut wire, &mut BytesMut::new()).is_err());
    }
}
