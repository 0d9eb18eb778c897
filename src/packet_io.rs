//! Reading and writing whole packets on async streams during the connection
//! phase. After authentication nothing is framed: bytes are copied.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::packet::{split_packet, write_packet};
use crate::protocol::{PacketHeader, ParseError, HEADER_LEN};

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error("packet of {len} bytes exceeds the connection-phase limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("the bytes are a TLS record, not a MySQL packet")]
    LooksLikeTls,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One packet read off a stream: the raw bytes, header included.
#[derive(Debug)]
pub struct Packet {
    pub header: PacketHeader,
    pub bytes: BytesMut,
}

impl Packet {
    /// A packet of portcullis's own: `payload` (at most one chunk) at `seq`.
    pub fn new(seq: u8, payload: &[u8]) -> Packet {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        write_packet(&mut out, seq, payload);
        Packet {
            header: PacketHeader {
                len: payload.len(),
                seq,
            },
            bytes: BytesMut::from(&out[..]),
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[HEADER_LEN..]
    }
    /// Rewrites the sequence id in place.
    pub fn set_seq(&mut self, seq: u8) {
        self.bytes[3] = seq;
        self.header.seq = seq;
    }
}

/// Reads exactly one packet with exact-length reads: never consumes a byte
/// past the packet. Used before a TLS upgrade, where the client's
/// ClientHello may already be in flight behind the SSLRequest.
/// With `reject_tls`, a header that is the start of a TLS record is
/// reported as [`ReadError::LooksLikeTls`] instead of read as a length.
pub async fn read_packet_exact<S: AsyncRead + Unpin>(
    io: &mut S,
    limit: usize,
    reject_tls: bool,
) -> Result<Packet, ReadError> {
    let mut h = [0u8; HEADER_LEN];
    let n = read_full(io, &mut h).await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if n < HEADER_LEN {
        return Err(ReadError::Truncated);
    }
    if reject_tls && looks_like_tls(&h) {
        return Err(ReadError::LooksLikeTls);
    }
    let header = PacketHeader::decode(h);
    check_limit(header, limit)?;
    let mut bytes = BytesMut::with_capacity(HEADER_LEN + header.len);
    bytes.extend_from_slice(&h);
    bytes.resize(HEADER_LEN + header.len, 0);
    if read_full(io, &mut bytes[HEADER_LEN..]).await? < header.len {
        return Err(ReadError::Truncated);
    }
    Ok(Packet { header, bytes })
}

fn check_limit(header: PacketHeader, limit: usize) -> Result<(), ReadError> {
    if header.len > limit {
        return Err(ReadError::TooLarge {
            len: header.len,
            limit,
        });
    }
    Ok(())
}

/// Whether the first bytes of a connection are a TLS handshake record
/// (a client that starts TLS without the MySQL SSLRequest, e.g. a plain
/// TLS client or a load balancer health check).
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x00..=0x04, ..])
}

async fn read_full<S: AsyncRead + Unpin>(io: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A cancel-safe buffered packet reader: partial data stays in `buf` if the
/// read future is dropped, so it can be used in `select!`.
#[derive(Debug, Default)]
pub struct PacketReader {
    buf: BytesMut,
}

impl PacketReader {
    pub fn new() -> Self {
        PacketReader {
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Reads the next packet (one chunk: continuation chunks come as
    /// separate packets), refusing payloads over `limit`.
    pub async fn read<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        limit: usize,
    ) -> Result<Packet, ReadError> {
        loop {
            if self.buf.len() >= HEADER_LEN {
                let header =
                    PacketHeader::decode([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                check_limit(header, limit)?;
            }
            match split_packet(&self.buf) {
                Ok((header, total)) => {
                    return Ok(Packet {
                        header,
                        bytes: self.buf.split_to(total),
                    })
                }
                Err(ParseError::Incomplete { needed }) => {
                    self.buf.reserve(needed);
                    if io.read_buf(&mut self.buf).await? == 0 {
                        return Err(if self.buf.is_empty() {
                            ReadError::Closed
                        } else {
                            ReadError::Truncated
                        });
                    }
                }
                Err(ParseError::Malformed { .. }) => {
                    unreachable!("framing never reports malformed")
                }
            }
        }
    }

    /// Bytes read past the last packet returned.
    pub fn take_leftover(&mut self) -> BytesMut {
        self.buf.split()
    }
}

/// Writes one packet portcullis built itself, and flushes.
pub async fn write_own_packet<S: AsyncWrite + Unpin>(
    io: &mut S,
    seq: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    write_packet(&mut out, seq, payload);
    io.write_all(&out).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exact_read_does_not_over_read() {
        let data = [3u8, 0, 0, 1, b'a', b'b', b'c', 0x16, 0x03, 0x01];
        let mut r: &[u8] = &data;
        let p = read_packet_exact(&mut r, 1024, true).await.unwrap();
        assert_eq!(p.payload(), b"abc");
        assert_eq!(r, &[0x16, 0x03, 0x01]);
    }

    #[tokio::test]
    async fn limits_and_truncation() {
        let mut r: &[u8] = &[0xff, 0xff, 0x00, 1];
        assert!(matches!(
            read_packet_exact(&mut r, 1024, true).await,
            Err(ReadError::TooLarge {
                len: 0xffff,
                limit: 1024
            })
        ));
        let mut r: &[u8] = &[5, 0, 0, 1, b'a'];
        assert!(matches!(
            read_packet_exact(&mut r, 1024, true).await,
            Err(ReadError::Truncated)
        ));
        let mut r: &[u8] = &[];
        assert!(matches!(
            read_packet_exact(&mut r, 1024, true).await,
            Err(ReadError::Closed)
        ));
    }

    #[tokio::test]
    async fn buffered_reader_splits_and_keeps_leftover() {
        let data = [1u8, 0, 0, 0, b'x', 2, 0, 0, 1, b'y', b'z', 9, 9];
        let mut r: &[u8] = &data;
        let mut pr = PacketReader::new();
        assert_eq!(pr.read(&mut r, 64).await.unwrap().payload(), b"x");
        let p = pr.read(&mut r, 64).await.unwrap();
        assert_eq!((p.payload(), p.header.seq), (&b"yz"[..], 1));
        assert_eq!(&pr.take_leftover()[..], &[9, 9]);
    }

    #[tokio::test]
    async fn exact_read_spots_raw_tls() {
        let mut r: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xf4, 1];
        assert!(matches!(
            read_packet_exact(&mut r, 1 << 20, true).await,
            Err(ReadError::LooksLikeTls)
        ));
    }

    #[test]
    fn tls_detection() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02]));
        assert!(!looks_like_tls(&[0x20, 0x00, 0x00, 0x01]));
    }
}
