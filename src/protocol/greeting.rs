//! The server greeting (Initial Handshake Packet, protocol v10).

use super::{nul_str, Capabilities, ParseError};

const WHAT: &str = "server greeting";
/// Protocol version byte of every greeting since MySQL 3.21.
pub const PROTOCOL_V10: u8 = 0x0a;

/// The fields portcullis needs from a backend greeting, plus where the
/// capability bytes sit so they can be patched in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: String,
    pub connection_id: u32,
    pub capabilities: Capabilities,
    /// Offset of the lower two capability bytes in the payload.
    caps_lower_at: usize,
}

impl Greeting {
    /// Parses a greeting payload (without the packet header).
    pub fn parse(payload: &[u8]) -> Result<Greeting, ParseError> {
        match payload.first() {
            Some(&PROTOCOL_V10) => {}
            Some(_) => return Err(ParseError::malformed(WHAT, "not protocol version 10")),
            None => return Err(ParseError::malformed(WHAT, "empty payload")),
        }
        let (version, pos) = nul_str(payload, 1, WHAT)?;
        // connection id (4) + scramble part 1 (8) + filler (1)
        let caps_lower_at = pos + 13;
        let fixed = payload
            .get(pos..caps_lower_at + 2)
            .ok_or(ParseError::malformed(WHAT, "truncated before capabilities"))?;
        let connection_id = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
        let lower = u32::from(u16::from_le_bytes([fixed[13], fixed[14]]));
        // charset (1) + status (2), then the upper capability bytes, if present.
        let upper = payload
            .get(caps_lower_at + 5..caps_lower_at + 7)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
            .unwrap_or(0);
        Ok(Greeting {
            server_version: String::from_utf8_lossy(version).into_owned(),
            connection_id,
            capabilities: Capabilities(lower | upper << 16),
            caps_lower_at,
        })
    }

    /// The 20-byte authentication scramble and the default authentication
    /// plugin of a greeting payload (what a client — the monitor — needs to
    /// log in).
    pub fn scramble(&self, payload: &[u8]) -> Result<([u8; 20], Option<String>), ParseError> {
        let part1 = payload
            .get(self.caps_lower_at - 9..self.caps_lower_at - 1)
            .ok_or(ParseError::malformed(WHAT, "truncated scramble"))?;
        // caps lower (2), charset (1), status (2), caps upper (2), auth data
        // length (1), reserved (10), then part 2 (12 bytes and a NUL).
        let part2_at = self.caps_lower_at + 18;
        let part2 = payload
            .get(part2_at..part2_at + 12)
            .ok_or(ParseError::malformed(WHAT, "truncated scramble part 2"))?;
        let mut scramble = [0u8; 20];
        scramble[..8].copy_from_slice(part1);
        scramble[8..].copy_from_slice(part2);
        let plugin = nul_str(payload, part2_at + 13, WHAT)
            .ok()
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned());
        Ok((scramble, plugin))
    }

    /// Sets or clears `CLIENT_SSL` in `payload`, the bytes this greeting was
    /// parsed from.
    pub fn set_ssl(&mut self, payload: &mut [u8], on: bool) {
        let b = &mut payload[self.caps_lower_at + 1];
        // CLIENT_SSL is bit 11: bit 3 of the second lower capability byte.
        if on {
            *b |= 0x08;
            self.capabilities.0 |= Capabilities::SSL;
        } else {
            *b &= !0x08;
            self.capabilities.0 &= !Capabilities::SSL;
        }
    }
}

/// Capabilities portcullis advertises in a greeting of its own (written when
/// no backend greeting is relayed: redirect, or backend unavailable).
const OWN_CAPS: u32 = (1 << 2) // LONG_FLAG
    | Capabilities::CONNECT_WITH_DB
    | Capabilities::PROTOCOL_41
    | (1 << 13) // TRANSACTIONS
    | Capabilities::SECURE_CONNECTION
    | (1 << 16) // MULTI_STATEMENTS
    | (1 << 17) // MULTI_RESULTS
    | (1 << 18) // PS_MULTI_RESULTS
    | Capabilities::PLUGIN_AUTH
    | Capabilities::CONNECT_ATTRS
    | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// The version portcullis announces in its own greeting. The `5.5.5-` prefix
/// is how MariaDB 10.x greets, so clients treat it as a MariaDB server.
pub const OWN_SERVER_VERSION: &str =
    concat!("5.5.5-10.11.0-portcullis-", env!("CARGO_PKG_VERSION"));

/// Builds a greeting payload of portcullis's own with the given 20-byte
/// scramble (which must not contain NUL bytes).
pub fn build_own(scramble: &[u8; 20], connection_id: u32, tls: bool) -> Vec<u8> {
    let caps = OWN_CAPS | if tls { Capabilities::SSL } else { 0 };
    let mut p = Vec::with_capacity(96);
    p.push(PROTOCOL_V10);
    p.extend_from_slice(OWN_SERVER_VERSION.as_bytes());
    p.push(0);
    p.extend_from_slice(&connection_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45); // utf8mb4_general_ci
    p.extend_from_slice(&2u16.to_le_bytes()); // SERVER_STATUS_AUTOCOMMIT
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21); // scramble length + 1
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[0; 4]); // MariaDB extended capabilities: none
    p.extend_from_slice(&scramble[8..]);
    p.push(0);
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A greeting captured from MariaDB 10.11 (scramble bytes replaced).
    pub(crate) fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![0x0a];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&[0x2a, 0, 0, 0]);
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&[0xfe, 0xff, 0x2d, 0x02, 0x00, 0xff, 0x81, 0x15]);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[0x1d, 0, 0, 0]);
        p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        p
    }

    #[test]
    fn parses_mariadb_greeting() {
        let p = mariadb_greeting();
        let g = Greeting::parse(&p).unwrap();
        assert_eq!(g.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 42);
        assert!(g.capabilities.has(Capabilities::SSL));
        assert!(g.capabilities.has(Capabilities::PLUGIN_AUTH));
        assert!(!g.capabilities.has(Capabilities::CLIENT_MYSQL));
    }

    #[test]
    fn set_ssl_patches_only_bit_11() {
        let mut p = mariadb_greeting();
        let orig = p.clone();
        let mut g = Greeting::parse(&p).unwrap();
        g.set_ssl(&mut p, false);
        assert!(!Greeting::parse(&p)
            .unwrap()
            .capabilities
            .has(Capabilities::SSL));
        let diff: Vec<usize> = (0..p.len()).filter(|&i| p[i] != orig[i]).collect();
        assert_eq!(diff.len(), 1);
        assert_eq!(orig[diff[0]] ^ p[diff[0]], 0x08);
        g.set_ssl(&mut p, true);
        assert_eq!(p, orig);
    }

    #[test]
    fn own_greeting_parses_back() {
        let p = build_own(&[b'x'; 20], 7, true);
        let g = Greeting::parse(&p).unwrap();
        assert_eq!(g.connection_id, 7);
        assert!(g.capabilities.has(Capabilities::SSL));
        assert!(g.capabilities.has(Capabilities::PLUGIN_AUTH));
        let p = build_own(&[b'x'; 20], 7, false);
        assert!(!Greeting::parse(&p)
            .unwrap()
            .capabilities
            .has(Capabilities::SSL));
    }

    #[test]
    fn own_greeting_scramble_round_trips() {
        let scramble: [u8; 20] = *b"abcdefghijklmnopqrst";
        let payload = build_own(&scramble, 7, true);
        let g = Greeting::parse(&payload).unwrap();
        let (s, plugin) = g.scramble(&payload).unwrap();
        assert_eq!(&s, b"abcdefghijklmnopqrst");
        assert_eq!(plugin.as_deref(), Some("mysql_native_password"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Greeting::parse(&[]).is_err());
        assert!(Greeting::parse(&[9, 1, 2]).is_err());
        assert!(Greeting::parse(&[0x0a, b'v']).is_err());
        assert!(Greeting::parse(&[0x0a, b'v', 0, 1, 2]).is_err());
    }
}
