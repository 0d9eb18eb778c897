//! The client's first packets: SSLRequest and HandshakeResponse41.

use super::{lenenc_int, nul_str, take, Capabilities, ParseError};

const WHAT: &str = "handshake response";
/// Length of an SSLRequest payload, which is also the fixed prefix of every
/// HandshakeResponse41: capabilities (4), max packet (4), charset (1),
/// filler (19), MariaDB extended capabilities (4).
pub const SSL_REQUEST_LEN: usize = 32;

/// Capabilities of the client's first packet, read from its first 4 bytes.
pub fn client_capabilities(payload: &[u8]) -> Result<Capabilities, ParseError> {
    let b = payload.get(..4).ok_or(ParseError::malformed(
        WHAT,
        "shorter than its capability flags",
    ))?;
    let caps = Capabilities(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if !caps.has(Capabilities::PROTOCOL_41) {
        return Err(ParseError::malformed(
            WHAT,
            "client does not speak protocol 4.1 (pre-2004 clients are not supported)",
        ));
    }
    Ok(caps)
}

/// Whether a client's first packet is an SSLRequest.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == SSL_REQUEST_LEN
        && client_capabilities(payload).is_ok_and(|c| c.has(Capabilities::SSL))
}

/// Sets or clears `CLIENT_SSL` in a HandshakeResponse or SSLRequest payload.
/// The MariaDB extended capability bytes (28..32) are left as they are.
pub fn set_ssl(payload: &mut [u8], on: bool) {
    if let Some(b) = payload.get_mut(1) {
        if on {
            *b |= 0x08;
        } else {
            *b &= !0x08;
        }
    }
}

/// The identity fields of a HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: Capabilities,
    /// MariaDB's extended capabilities (bytes 28..32 of the fixed prefix).
    pub extended: u32,
    pub user: String,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    /// Where the parts after the fixed prefix lie in the payload.
    layout: Layout,
}

/// Offsets of a HandshakeResponse's variable parts, for rewriting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// The user name (without its NUL).
    user: (usize, usize),
    /// The database field with its NUL, when present.
    database: Option<(usize, usize)>,
    /// The connection attributes block (length included), when present.
    attributes: Option<(usize, usize)>,
}

impl HandshakeResponse {
    /// Parses a HandshakeResponse41 payload. Lengths are checked as the
    /// server checks them; optional trailing fields may be absent.
    pub fn parse(payload: &[u8]) -> Result<HandshakeResponse, ParseError> {
        let capabilities = client_capabilities(payload)?;
        if payload.len() < SSL_REQUEST_LEN {
            return Err(ParseError::malformed(WHAT, "shorter than its fixed header"));
        }
        let e = &payload[28..32];
        let extended = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let (user, mut pos) = nul_str(payload, SSL_REQUEST_LEN, WHAT)?;
        let mut layout = Layout {
            user: (SSL_REQUEST_LEN, SSL_REQUEST_LEN + user.len()),
            database: None,
            attributes: None,
        };
        // Auth response, encoded one of three ways depending on capabilities.
        if capabilities.has(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            let (len, p) = lenenc_int(payload, pos, WHAT)?;
            (_, pos) = take(payload, p, len, WHAT)?;
        } else if capabilities.has(Capabilities::SECURE_CONNECTION) {
            let len = *payload
                .get(pos)
                .ok_or(ParseError::malformed(WHAT, "missing auth response length"))?;
            (_, pos) = take(payload, pos + 1, u64::from(len), WHAT)?;
        } else {
            (_, pos) = nul_str(payload, pos, WHAT)?;
        }
        let mut database = None;
        if capabilities.has(Capabilities::CONNECT_WITH_DB) && pos < payload.len() {
            let (db, p) = nul_str(payload, pos, WHAT)?;
            database = Some(String::from_utf8_lossy(db).into_owned());
            layout.database = Some((pos, p));
            pos = p;
        }
        let mut auth_plugin = None;
        if capabilities.has(Capabilities::PLUGIN_AUTH) && pos < payload.len() {
            let (name, p) = nul_str(payload, pos, WHAT)?;
            auth_plugin = Some(String::from_utf8_lossy(name).into_owned());
            pos = p;
        }
        if capabilities.has(Capabilities::CONNECT_ATTRS) && pos < payload.len() {
            let (len, p) = lenenc_int(payload, pos, WHAT)?;
            let (_, end) = take(payload, p, len, WHAT)?;
            layout.attributes = Some((pos, end));
        }
        Ok(HandshakeResponse {
            capabilities,
            extended,
            user: String::from_utf8_lossy(user).into_owned(),
            database,
            auth_plugin,
            layout,
        })
    }

    /// The response to relay to the backend in place of the client's
    /// `payload` (which this was parsed from): the same fixed prefix, user,
    /// database and connection attributes, but no auth data and `plugin` as
    /// the auth plugin. Naming a plugin the account does not use makes
    /// MariaDB answer with an AuthSwitchRequest carrying the account's
    /// plugin and the backend's own scramble, which the client then answers
    /// (docs/design.md §3.9). Needs CLIENT_PLUGIN_AUTH, which it sets.
    /// Compression is cleared: portcullis never offers it, and a client
    /// that asks anyway must not get the backend to agree (the command
    /// phase must stay readable, [`crate::relay`]).
    pub fn for_auth_switch(&self, payload: &[u8], plugin: &str) -> Vec<u8> {
        let l = &self.layout;
        let mut out = Vec::with_capacity(payload.len() + plugin.len());
        out.extend_from_slice(&payload[..SSL_REQUEST_LEN]);
        out[..4].copy_from_slice(&self.relayed_capabilities().0.to_le_bytes());
        out.extend_from_slice(&payload[l.user.0..l.user.1]);
        out.push(0);
        // Empty auth data: a zero length (length-encoded or one byte), or
        // an empty NUL-terminated string; one 0x00 byte in every encoding.
        out.push(0);
        if self.capabilities.has(Capabilities::CONNECT_WITH_DB) {
            match l.database {
                Some((from, to)) => out.extend_from_slice(&payload[from..to]),
                None => out.push(0),
            }
        }
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
        if let Some((from, to)) = l.attributes {
            out.extend_from_slice(&payload[from..to]);
        }
        out
    }

    /// The capabilities [`for_auth_switch`](Self::for_auth_switch) relays:
    /// the client's, with CLIENT_PLUGIN_AUTH and without compression.
    pub fn relayed_capabilities(&self) -> Capabilities {
        let never = Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION;
        Capabilities((self.capabilities.0 | Capabilities::PLUGIN_AUTH) & !never)
    }

    /// The connection attributes (`_client_name`, `_client_version`, …) of
    /// `payload`, the bytes this was parsed from, as key/value pairs; empty
    /// when there are none or they do not parse.
    pub fn attributes<'a>(&self, payload: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
        let Some((from, to)) = self.layout.attributes else {
            return Vec::new();
        };
        let block = &payload[from..to];
        let Ok((_, mut pos)) = lenenc_int(block, 0, WHAT) else {
            return Vec::new();
        };
        let mut pairs = Vec::new();
        let field = |pos: usize| -> Result<(&'a [u8], usize), ParseError> {
            let (len, p) = lenenc_int(block, pos, WHAT)?;
            take(block, p, len, WHAT)
        };
        while pos < block.len() {
            let Ok((key, p)) = field(pos) else { break };
            let Ok((value, p)) = field(p) else { break };
            pairs.push((key, value));
            pos = p;
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(caps: u32, user: &[u8], auth: &[u8], db: Option<&[u8]>) -> Vec<u8> {
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 1, 45]);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user);
        p.push(0);
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
        if let Some(db) = db {
            p.extend_from_slice(db);
            p.push(0);
        }
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    const CAPS: u32 = Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
        | Capabilities::CONNECT_WITH_DB;

    #[test]
    fn parses_user_db_plugin() {
        let p = response(CAPS, b"app", &[7; 20], Some(b"shop"));
        let r = HandshakeResponse::parse(&p).unwrap();
        assert_eq!(r.user, "app");
        assert_eq!(r.database.as_deref(), Some("shop"));
        assert_eq!(r.auth_plugin.as_deref(), Some("mysql_native_password"));
    }

    /// The rewrite keeps everything but the auth data and the plugin name;
    /// what it produces parses back with the same identity and attributes.
    #[test]
    fn rewrite_for_auth_switch_keeps_identity_and_attributes() {
        let caps = CAPS | Capabilities::CONNECT_ATTRS;
        let mut p = response(caps, b"app", &[7; 20], Some(b"shop"));
        let attrs: &[u8] = &[
            0x1c, 0x0c, b'_', b'c', b'l', b'i', b'e', b'n', b't', b'_', b'n', b'a', b'm', b'e',
            0x0e, b'M', b'a', b'r', b'i', b'a', b'D', b'B', b' ', b'c', b'o', b'n', b'n', b'.',
            b'J',
        ];
        p.extend_from_slice(attrs);
        let r = HandshakeResponse::parse(&p).unwrap();
        assert_eq!(
            r.attributes(&p),
            [(&b"_client_name"[..], &b"MariaDB conn.J"[..])]
        );
        let out = r.for_auth_switch(&p, "portcullis_auth_switch");
        let mut want = p[..SSL_REQUEST_LEN].to_vec();
        want.extend_from_slice(b"app\0\0shop\0portcullis_auth_switch\0");
        want.extend_from_slice(attrs);
        assert_eq!(out, want);
        let back = HandshakeResponse::parse(&out).unwrap();
        assert_eq!(back.user, "app");
        assert_eq!(back.database.as_deref(), Some("shop"));
        assert_eq!(back.auth_plugin.as_deref(), Some("portcullis_auth_switch"));
        assert_eq!(back.attributes(&out), r.attributes(&p));
    }

    /// A client that names no plugin and no database gets both fields it
    /// needs added: CLIENT_PLUGIN_AUTH set, an empty database where
    /// CONNECT_WITH_DB says one follows.
    #[test]
    fn rewrite_adds_the_plugin_a_client_left_out() {
        let caps = Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::CONNECT_WITH_DB;
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 28]);
        p.extend_from_slice(b"u\0");
        p.push(20);
        p.extend_from_slice(&[1; 20]);
        let r = HandshakeResponse::parse(&p).unwrap();
        let out = r.for_auth_switch(&p, "x");
        let back = HandshakeResponse::parse(&out).unwrap();
        assert!(back.capabilities.has(Capabilities::PLUGIN_AUTH));
        assert_eq!(back.database.as_deref(), Some(""));
        assert_eq!(back.auth_plugin.as_deref(), Some("x"));
        assert_eq!(&out[SSL_REQUEST_LEN..], b"u\0\0\0x\0");
    }

    #[test]
    fn rejects_auth_length_past_end() {
        let mut p = response(CAPS, b"app", &[7; 20], None);
        let at = SSL_REQUEST_LEN + 4;
        p[at] = 0xfa; // claims 250 bytes of auth data
        assert!(matches!(
            HandshakeResponse::parse(&p),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn ssl_request_detection_and_patch() {
        let mut p = (CAPS | Capabilities::SSL).to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 28]);
        assert!(is_ssl_request(&p));
        set_ssl(&mut p, false);
        assert!(!is_ssl_request(&p));
        assert!(!is_ssl_request(&p[..31]));
        // pre-4.1 clients are refused
        assert!(client_capabilities(&[0, 0, 0, 0]).is_err());
    }
}
