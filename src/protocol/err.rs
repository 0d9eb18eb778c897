//! ERR packets: `ff`, error code (LE u16), `#` + 5-byte SQLSTATE, message.

use super::ParseError;

/// First payload byte of an ERR packet.
pub const ERR_HEADER: u8 = 0xff;
/// First payload byte of an OK packet.
pub const OK_HEADER: u8 = 0x00;

/// An ERR packet's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sql_state: [u8; 5],
    pub message: String,
}

impl ErrPacket {
    pub fn new(code: u16, sql_state: &[u8; 5], message: impl Into<String>) -> Self {
        ErrPacket {
            code,
            sql_state: *sql_state,
            message: message.into(),
        }
    }

    /// Encodes the payload (without the packet header).
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(9 + self.message.len());
        p.push(ERR_HEADER);
        p.extend_from_slice(&self.code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(&self.sql_state);
        p.extend_from_slice(self.message.as_bytes());
        p
    }

    /// Parses an ERR payload (protocol 4.1 form, SQLSTATE marker optional).
    pub fn parse(payload: &[u8]) -> Result<ErrPacket, ParseError> {
        const WHAT: &str = "ERR packet";
        if payload.first() != Some(&ERR_HEADER) {
            return Err(ParseError::malformed(WHAT, "does not start with 0xff"));
        }
        let code = payload
            .get(1..3)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(ParseError::malformed(WHAT, "truncated error code"))?;
        let (sql_state, msg) = match payload.get(3..9) {
            Some([b'#', s @ ..]) => ([s[0], s[1], s[2], s[3], s[4]], &payload[9..]),
            _ => (*b"HY000", &payload[3..]),
        };
        Ok(ErrPacket {
            code,
            sql_state,
            message: String::from_utf8_lossy(msg).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_byte_exact() {
        let e = ErrPacket::new(1045, b"28000", "no");
        assert_eq!(
            e.encode(),
            [0xff, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0', b'n', b'o']
        );
        assert_eq!(ErrPacket::parse(&e.encode()).unwrap(), e);
    }

    #[test]
    fn parse_without_sqlstate() {
        let e = ErrPacket::parse(&[0xff, 0x10, 0x04, b'T', b'o', b'o']).unwrap();
        assert_eq!(e.code, 1040);
        assert_eq!(e.message, "Too");
        assert!(ErrPacket::parse(&[0xff, 1]).is_err());
        assert!(ErrPacket::parse(&[0x00]).is_err());
    }
}
