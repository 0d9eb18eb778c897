//! The MySQL/MariaDB wire protocol, as pure functions over bytes.
//!
//! Nothing here does I/O. Parsers take a byte slice and return either a value
//! or a [`ParseError`]; [`ParseError::Incomplete`] is an expected outcome for
//! framing (more bytes are needed), not a failure. Every parser has a fuzz
//! target under `fuzz/` (`ok` is written for one too: a target is still to
//! come). `command` also holds the command phase's one piece
//! of state, [`CommandFraming`], which finds where commands start in the
//! client's stream.

pub mod caps;
pub mod command;
pub mod err;
pub mod greeting;
pub mod ok;
pub mod packet;
pub mod response;

pub use caps::Capabilities;
pub use command::{ChangeUser, CommandFraming, COM_CHANGE_USER};
pub use err::{ErrPacket, ERR_HEADER};
pub use greeting::{Greeting, GreetingTemplate};
pub use ok::OkPacket;
pub use packet::{PacketHeader, HEADER_LEN, MAX_CHUNK};
pub use response::HandshakeResponse;

/// Why a byte sequence could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More bytes are needed; `needed` is a lower bound when known.
    #[error("incomplete: at least {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// The bytes can never form a valid message of the expected kind.
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
}

impl ParseError {
    pub(crate) fn malformed(what: &'static str, why: &'static str) -> Self {
        ParseError::Malformed { what, why }
    }
}

/// Reads a NUL-terminated string starting at `pos`; returns it and the
/// position after the NUL.
pub(crate) fn nul_str<'a>(
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
) -> Result<(&'a [u8], usize), ParseError> {
    let rest = buf
        .get(pos..)
        .ok_or(ParseError::malformed(what, "field starts past the end"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::malformed(what, "missing NUL terminator"))?;
    Ok((&rest[..end], pos + end + 1))
}

/// Reads a length-encoded integer at `pos`; returns it and the position after it.
pub fn lenenc_int(buf: &[u8], pos: usize, what: &'static str) -> Result<(u64, usize), ParseError> {
    let first = *buf
        .get(pos)
        .ok_or(ParseError::malformed(what, "length starts past the end"))?;
    let width = match first {
        0..=0xfa => return Ok((u64::from(first), pos + 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => {
            return Err(ParseError::malformed(
                what,
                "invalid length-encoded integer",
            ))
        }
    };
    let bytes = buf
        .get(pos + 1..pos + 1 + width)
        .ok_or(ParseError::malformed(what, "length runs past the end"))?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Ok((v, pos + 1 + width))
}

/// Returns `buf[pos..pos+len]` or a malformed error naming `what`.
pub(crate) fn take<'a>(
    buf: &'a [u8],
    pos: usize,
    len: u64,
    what: &'static str,
) -> Result<(&'a [u8], usize), ParseError> {
    let len = usize::try_from(len).map_err(|_| ParseError::malformed(what, "length too large"))?;
    let end = pos
        .checked_add(len)
        .ok_or(ParseError::malformed(what, "length overflows"))?;
    let v = buf
        .get(pos..end)
        .ok_or(ParseError::malformed(what, "length points past the end"))?;
    Ok((v, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_widths() {
        assert_eq!(lenenc_int(&[0xfa], 0, "x").unwrap(), (0xfa, 1));
        assert_eq!(
            lenenc_int(&[0xfc, 0x34, 0x12], 0, "x").unwrap(),
            (0x1234, 3)
        );
        assert_eq!(lenenc_int(&[0xfd, 1, 2, 3], 0, "x").unwrap(), (0x030201, 4));
        assert_eq!(
            lenenc_int(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0x80], 0, "x").unwrap(),
            (0x8000_0000_0000_0001, 9)
        );
        assert!(lenenc_int(&[0xfb], 0, "x").is_err());
        assert!(lenenc_int(&[0xff], 0, "x").is_err());
        assert!(lenenc_int(&[0xfc, 1], 0, "x").is_err());
        assert!(lenenc_int(&[], 0, "x").is_err());
    }

    #[test]
    fn take_rejects_overlong() {
        assert_eq!(take(b"abc", 1, 2, "x").unwrap(), (&b"bc"[..], 3));
        assert!(take(b"abc", 1, 3, "x").is_err());
        assert!(take(b"abc", 1, u64::MAX, "x").is_err());
    }
}
