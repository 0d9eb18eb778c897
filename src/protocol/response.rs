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
    pub user: String,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
}

impl HandshakeResponse {
    /// Parses a HandshakeResponse41 payload. Lengths are checked as the
    /// server checks them; optional trailing fields may be absent.
    pub fn parse(payload: &[u8]) -> Result<HandshakeResponse, ParseError> {
        let capabilities = client_capabilities(payload)?;
        if payload.len() < SSL_REQUEST_LEN {
            return Err(ParseError::malformed(WHAT, "shorter than its fixed header"));
        }
        let (user, mut pos) = nul_str(payload, SSL_REQUEST_LEN, WHAT)?;
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
            take(payload, p, len, WHAT)?;
        }
        Ok(HandshakeResponse {
            capabilities,
            user: String::from_utf8_lossy(user).into_owned(),
            database,
            auth_plugin,
        })
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
