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

/// Capabilities portcullis advertises in a greeting of its own when it has
/// not yet seen one from the backend (redirects, refusals, and the first
/// connections before any backend answered): what every MariaDB since 10.2
/// supports, and nothing that changes the command phase's bytes beyond
/// that, so a client never expects more than the backend it reaches does.
const FALLBACK_CAPS: u32 = Capabilities::LONG_FLAG
    | Capabilities::CONNECT_WITH_DB
    | Capabilities::PROTOCOL_41
    | Capabilities::TRANSACTIONS
    | Capabilities::SECURE_CONNECTION
    | Capabilities::MULTI_STATEMENTS
    | Capabilities::MULTI_RESULTS
    | Capabilities::PS_MULTI_RESULTS
    | Capabilities::PLUGIN_AUTH
    | Capabilities::CONNECT_ATTRS
    | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// The version portcullis announces in a greeting of its own before it has
/// seen the backend's. The `5.5.5-` prefix is how MariaDB 10.x greets, so
/// clients treat it as a MariaDB server.
pub const OWN_SERVER_VERSION: &str =
    concat!("5.5.5-10.11.0-portcullis-", env!("CARGO_PKG_VERSION"));

/// The authentication plugin portcullis's own greeting names. The client's
/// answer to it is never used (the backend asks again with its own
/// scramble, docs/design.md §3.9), but every client can compute one.
pub const OWN_AUTH_PLUGIN: &str = "mysql_native_password";

/// Capabilities a greeting of portcullis's own never advertises: compressed
/// framings (the command phase must stay readable for COM_CHANGE_USER) and
/// `CLIENT_SSL`, which is the listener's to say.
const NEVER_OFFERED: u32 =
    Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION | Capabilities::SSL;

/// What a greeting of portcullis's own says besides its scramble and
/// connection id: the backend's server version, capabilities, character set
/// and status flags, learned from a greeting the backend sent, so clients
/// see the server they will talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreetingTemplate {
    pub server_version: String,
    /// The lower and upper capability bytes.
    pub capabilities: Capabilities,
    /// MariaDB's extended capabilities (0 for MySQL servers).
    pub extended: u32,
    pub charset: u8,
    pub status: u16,
}

impl GreetingTemplate {
    /// What portcullis says before it has seen the backend's greeting.
    pub fn fallback() -> GreetingTemplate {
        GreetingTemplate {
            server_version: OWN_SERVER_VERSION.to_string(),
            capabilities: Capabilities(FALLBACK_CAPS),
            extended: 0,
            // utf8mb4_general_ci
            charset: 45,
            // SERVER_STATUS_AUTOCOMMIT
            status: 2,
        }
    }

    /// The template of a backend greeting (`payload`, as parsed into `g`).
    pub fn learn(g: &Greeting, payload: &[u8]) -> Result<GreetingTemplate, ParseError> {
        let at = g.caps_lower_at;
        let charset = *payload.get(at + 2).ok_or(ParseError::malformed(
            WHAT,
            "truncated before the character set",
        ))?;
        let status = payload
            .get(at + 3..at + 5)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(ParseError::malformed(
                WHAT,
                "truncated before the status flags",
            ))?;
        // MariaDB puts its extended capabilities in the last 4 of the 10
        // reserved bytes, and says so by clearing CLIENT_MYSQL.
        let extended = if g.capabilities.has(Capabilities::CLIENT_MYSQL) {
            0
        } else {
            payload
                .get(at + 14..at + 18)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0)
        };
        Ok(GreetingTemplate {
            server_version: g.server_version.clone(),
            capabilities: g.capabilities,
            extended,
            charset,
            status,
        })
    }

    /// The capabilities a greeting from this template advertises on a
    /// listener with (`tls`) or without TLS.
    pub fn offered(&self, tls: bool) -> Capabilities {
        let ssl = if tls { Capabilities::SSL } else { 0 };
        Capabilities((self.capabilities.0 & !NEVER_OFFERED) | ssl)
    }

    /// A greeting payload of portcullis's own with the given 20-byte
    /// scramble (which must not contain NUL bytes), naming
    /// [`OWN_AUTH_PLUGIN`].
    pub fn build(&self, scramble: &[u8; 20], connection_id: u32, tls: bool) -> Vec<u8> {
        let caps = self.offered(tls).0;
        let mut p = Vec::with_capacity(64 + self.server_version.len());
        p.push(PROTOCOL_V10);
        p.extend_from_slice(self.server_version.as_bytes());
        p.push(0);
        p.extend_from_slice(&connection_id.to_le_bytes());
        p.extend_from_slice(&scramble[..8]);
        p.push(0);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(self.charset);
        p.extend_from_slice(&self.status.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21); // scramble length + 1
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&self.extended.to_le_bytes());
        p.extend_from_slice(&scramble[8..]);
        p.push(0);
        p.extend_from_slice(OWN_AUTH_PLUGIN.as_bytes());
        p.push(0);
        p
    }
}

/// Builds a greeting payload of portcullis's own from the fallback template
/// ([`GreetingTemplate::fallback`]).
pub fn build_own(scramble: &[u8; 20], connection_id: u32, tls: bool) -> Vec<u8> {
    GreetingTemplate::fallback().build(scramble, connection_id, tls)
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

    /// The template keeps what the backend said (version, capabilities,
    /// MariaDB's extended capabilities, character set, status) and a
    /// greeting built from it says the same, except compression (never
    /// offered) and CLIENT_SSL (the listener's), with a new scramble.
    #[test]
    fn template_learns_the_backend_and_builds_its_likeness() {
        let p = mariadb_greeting();
        let g = Greeting::parse(&p).unwrap();
        let t = GreetingTemplate::learn(&g, &p).unwrap();
        assert_eq!(t.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!((t.charset, t.status, t.extended), (0x2d, 0x0002, 0x1d));
        assert_eq!(t.capabilities.0, 0x81ff_f7fe | 0x0800);
        let built = t.build(b"ijklmnopqrstuvwxyzab", 9, true);
        let b = Greeting::parse(&built).unwrap();
        assert_eq!(b.server_version, t.server_version);
        assert_eq!(b.connection_id, 9);
        assert_eq!(
            b.capabilities.0,
            t.capabilities.0 & !(Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION)
        );
        assert_eq!(GreetingTemplate::learn(&b, &built).unwrap().extended, 0x1d);
        let (scramble, plugin) = b.scramble(&built).unwrap();
        assert_eq!(&scramble, b"ijklmnopqrstuvwxyzab");
        assert_eq!(plugin.as_deref(), Some("mysql_native_password"));
        let plain = Greeting::parse(&t.build(&[b'x'; 20], 9, false)).unwrap();
        assert!(!plain.capabilities.has(Capabilities::SSL));
    }

    #[test]
    fn own_greeting_is_the_fallback_template_byte_for_byte() {
        let mut want = vec![0x0a];
        want.extend_from_slice(OWN_SERVER_VERSION.as_bytes());
        want.push(0);
        want.extend_from_slice(&[7, 0, 0, 0]);
        want.extend_from_slice(b"abcdefgh\0");
        // LONG_FLAG|CONNECT_WITH_DB|PROTOCOL_41|SSL|TRANSACTIONS|SECURE_CONNECTION,
        // charset 45, status 2, MULTI_*|PS_MULTI|PLUGIN_AUTH|ATTRS|LENENC.
        want.extend_from_slice(&[0x0c, 0xaa, 0x2d, 0x02, 0x00, 0x3f, 0x00, 21]);
        want.extend_from_slice(&[0; 10]);
        want.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        assert_eq!(build_own(b"abcdefghijklmnopqrst", 7, true), want);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Greeting::parse(&[]).is_err());
        assert!(Greeting::parse(&[9, 1, 2]).is_err());
        assert!(Greeting::parse(&[0x0a, b'v']).is_err());
        assert!(Greeting::parse(&[0x0a, b'v', 0, 1, 2]).is_err());
    }
}
