//! Packet framing: a 3-byte little-endian payload length, a 1-byte sequence
//! id, then the payload. A payload of exactly 0xFFFFFF bytes is continued by
//! the next packet (which may be empty).

use super::ParseError;

/// Length of the packet header.
pub const HEADER_LEN: usize = 4;
/// Largest payload one packet carries; a chunk of exactly this size is
/// followed by a continuation chunk.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub len: usize,
    pub seq: u8,
}

impl PacketHeader {
    /// Decodes the 4 header bytes.
    pub fn decode(h: [u8; HEADER_LEN]) -> Self {
        PacketHeader {
            len: usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
            seq: h[3],
        }
    }

    /// Encodes a header; `len` must not exceed [`MAX_CHUNK`].
    pub fn encode(self) -> [u8; HEADER_LEN] {
        debug_assert!(self.len <= MAX_CHUNK);
        let l = self.len as u32;
        [l as u8, (l >> 8) as u8, (l >> 16) as u8, self.seq]
    }

    /// Whether another chunk of the same logical packet follows this one.
    pub fn continues(self) -> bool {
        self.len == MAX_CHUNK
    }
}

/// Splits one packet (header + payload) off the front of `buf`.
/// Returns the header and the number of bytes it occupies in `buf`.
pub fn split_packet(buf: &[u8]) -> Result<(PacketHeader, usize), ParseError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Err(ParseError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let header = PacketHeader::decode([h[0], h[1], h[2], h[3]]);
    let total = HEADER_LEN + header.len;
    if buf.len() < total {
        return Err(ParseError::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok((header, total))
}

/// Appends `payload` as one packet with sequence id `seq` (payload must be
/// at most [`MAX_CHUNK`] bytes: the connection-phase packets portcullis
/// writes itself are all small).
pub fn write_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    out.extend_from_slice(
        &PacketHeader {
            len: payload.len(),
            seq,
        }
        .encode(),
    );
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = PacketHeader {
            len: 0x12_3456,
            seq: 7,
        };
        assert_eq!(h.encode(), [0x56, 0x34, 0x12, 7]);
        assert_eq!(PacketHeader::decode(h.encode()), h);
        assert!(PacketHeader {
            len: MAX_CHUNK,
            seq: 0
        }
        .continues());
        assert!(!PacketHeader { len: 5, seq: 0 }.continues());
    }

    #[test]
    fn split_incomplete_and_complete() {
        assert_eq!(
            split_packet(&[1, 0]),
            Err(ParseError::Incomplete { needed: 2 })
        );
        assert_eq!(
            split_packet(&[3, 0, 0, 1, b'a']),
            Err(ParseError::Incomplete { needed: 2 })
        );
        let (h, n) = split_packet(&[3, 0, 0, 1, b'a', b'b', b'c', 9]).unwrap();
        assert_eq!((h.len, h.seq, n), (3, 1, 7));
    }

    #[test]
    fn write_packet_frames() {
        let mut v = Vec::new();
        write_packet(&mut v, 2, b"xyz");
        assert_eq!(v, [3, 0, 0, 2, b'x', b'y', b'z']);
    }
}
