//! The command phase, client → server: where commands start in the
//! client's byte stream ([`CommandFraming`]), and the one command portcullis
//! reads, COM_CHANGE_USER ([`ChangeUser`]).
//!
//! # Where a command starts
//!
//! After authentication the server reads one command at a time: a packet
//! with sequence id 0 (docs/design.md §3.1). Everything else the client
//! sends belongs to the command before it:
//! - the continuation chunks of a packet of 16 MiB or more: a chunk of
//!   exactly `0xFFFFFF` bytes is followed by another chunk of the same
//!   packet, whatever its sequence id (it wraps to 0 after 255);
//! - the answers of an authentication exchange started by COM_CHANGE_USER
//!   (sequence ids 2, 4, …);
//! - the file of a `LOAD DATA LOCAL INFILE`: packets with consecutive
//!   sequence ids from 2, ended by an empty packet. A file of more than 254
//!   packets wraps its sequence id to 0, so a packet with id 0 right after a
//!   **non-empty** packet with id 255 continues that file; after an empty
//!   one (the end of the file) it is a command. The server reads the whole
//!   file even when the statement fails (it skips to the empty packet), and
//!   treats a client packet with any other id as fatal ("packets out of
//!   order"), so it never reads a command where this rule sees none.
//!
//! So: a packet starts a command when its sequence id is 0, it does not
//! continue a chunk, and the packet before it was not a non-empty packet
//! with id 255. The one case this misreads is an authentication exchange
//! (after COM_CHANGE_USER) of more than 126 round trips whose last client
//! packet lands on id 255; no authentication plugin comes near that.
//!
//! # COM_CHANGE_USER
//!
//! `0x11`, the user (NUL-terminated), the auth data (a 1-byte length with
//! `CLIENT_SECURE_CONNECTION`, else NUL-terminated), the database
//! (NUL-terminated, possibly empty), then, if more bytes follow: the
//! character set (2 bytes LE), the auth plugin name (NUL-terminated, with
//! `CLIENT_PLUGIN_AUTH`), the connection attributes (a length-encoded block,
//! with `CLIENT_CONNECT_ATTRS`). The capabilities are the client's, from its
//! HandshakeResponse. The server ignores bytes after the last field it
//! reads (mysql_async always appends an empty attribute block, with or
//! without `CLIENT_CONNECT_ATTRS`): they are kept in [`ChangeUser::rest`].
//!
//! The user name is what the client sent. The server converts it from the
//! client character set to UTF-8 and cuts it at 128 characters before it
//! looks the account up; a policy that compares names should take that
//! into account (for the ASCII names of real accounts, bytes and the
//! server's view agree).

use std::borrow::Cow;

use super::{lenenc_int, nul_str, take, Capabilities, ParseError, HEADER_LEN, MAX_CHUNK};

/// First payload byte of COM_CHANGE_USER.
pub const COM_CHANGE_USER: u8 = 0x11;

const WHAT: &str = "COM_CHANGE_USER";

/// `CLIENT_ZSTD_COMPRESSION_ALGORITHM` (MySQL 8.0.18+, bit 26): zstd
/// compression instead of zlib.
const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;

/// Whether a client with these capabilities (from its HandshakeResponse)
/// compresses its packets: then the bytes on the wire are compressed
/// frames, not MySQL packets, and commands cannot be found in them.
pub fn compressed(caps: Capabilities) -> bool {
    caps.has(Capabilities::COMPRESS) || caps.has(CLIENT_ZSTD_COMPRESSION)
}

// ---------------------------------------------------------------------------
// Command boundaries
// ---------------------------------------------------------------------------

/// Tracks packet framing across reads of the client → server stream in the
/// command phase and finds where commands start (module docs). It keeps no
/// bytes: a header cut by the end of a read is handed back
/// ([`Scan::Short`]) to be passed again in front of the next read.
#[derive(Debug, Clone)]
pub struct CommandFraming {
    /// Payload bytes of the current chunk still to come.
    remaining: usize,
    /// The current (between chunks: the last) chunk is `MAX_CHUNK` long, so
    /// the next chunk continues the same packet.
    continued: bool,
    /// Sequence id of the last chunk seen.
    last_seq: u8,
    /// Whether the last packet had a payload (an empty one ends a LOCAL
    /// INFILE file).
    last_nonempty: bool,
}

/// What [`CommandFraming::scan`] found in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Every byte was consumed: none of them starts a watched command.
    Done,
    /// `input[..at]` was consumed; a command whose first payload byte is the
    /// watched one starts at `at` (its header). Nothing from `at` on was
    /// consumed: the caller takes the packet, and calls
    /// [`CommandFraming::after_packet`] once it has all of it.
    Watched { at: usize },
    /// `input[..at]` was consumed; `input[at..]` (at most 4 bytes: a header
    /// without its first payload byte) cannot be classified yet. Pass it
    /// again in front of the next input.
    Short { at: usize },
}

impl Default for CommandFraming {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandFraming {
    /// The longest input [`Scan::Short`] hands back: a header.
    pub const MAX_SHORT: usize = HEADER_LEN;

    /// Framing at the start of the command phase: the next packet is a
    /// command.
    pub fn new() -> Self {
        CommandFraming {
            remaining: 0,
            continued: false,
            last_seq: 0,
            last_nonempty: false,
        }
    }

    /// Consumes `input`, the next bytes of the client's stream, and stops
    /// before a command whose first payload byte is `watch`. Costs one
    /// header decode per packet; payload bytes are skipped, not read.
    pub fn scan(&mut self, input: &[u8], watch: u8) -> Scan {
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let skip = self.remaining.min(input.len() - pos);
                self.remaining -= skip;
                pos += skip;
                if self.remaining > 0 {
                    return Scan::Done;
                }
            }
            let Some(h) = input.get(pos..pos + HEADER_LEN) else {
                return if pos == input.len() {
                    Scan::Done
                } else {
                    Scan::Short { at: pos }
                };
            };
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            let seq = h[3];
            if !self.continued {
                // A new packet.
                let command = seq == 0 && !(self.last_seq == 255 && self.last_nonempty);
                if command && len > 0 {
                    match input.get(pos + HEADER_LEN) {
                        None => return Scan::Short { at: pos },
                        Some(&b) if b == watch => return Scan::Watched { at: pos },
                        Some(_) => {}
                    }
                }
                self.last_nonempty = len > 0;
            }
            self.last_seq = seq;
            self.continued = len == MAX_CHUNK;
            self.remaining = len;
            pos += HEADER_LEN;
        }
    }

    /// Moves past a packet taken at [`Scan::Watched`]: `last_seq` is the
    /// sequence id of its last chunk.
    pub fn after_packet(&mut self, last_seq: u8) {
        self.remaining = 0;
        self.continued = false;
        self.last_seq = last_seq;
        self.last_nonempty = true;
    }
}

/// How much of one (possibly multi-chunk) packet the start of a buffer
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The whole packet: `len` bytes with headers, `payload` bytes of
    /// payload, `chunks` chunks, the last with sequence id `last_seq`.
    Complete {
        len: usize,
        payload: usize,
        chunks: usize,
        last_seq: u8,
    },
    /// Not yet all of it; the chunk headers read so far announce `declared`
    /// payload bytes (a lower bound of the packet's size).
    Partial { declared: usize },
}

/// Walks the chunk headers at the start of `buf`: is the packet that starts
/// there complete, and how large is it?
pub fn extent(buf: &[u8]) -> Extent {
    let mut pos = 0;
    let mut payload = 0usize;
    let mut chunks = 0;
    loop {
        let Some(h) = buf.get(pos..pos + HEADER_LEN) else {
            return Extent::Partial { declared: payload };
        };
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        payload = payload.saturating_add(len);
        chunks += 1;
        let end = pos + HEADER_LEN + len;
        if buf.len() < end {
            return Extent::Partial { declared: payload };
        }
        if len < MAX_CHUNK {
            return Extent::Complete {
                len: end,
                payload,
                chunks,
                last_seq: h[3],
            };
        }
        pos = end;
    }
}

/// The payload of the complete packet at the start of `buf` (see
/// [`extent`]): borrowed when it is one chunk, joined when it is several.
pub fn joined_payload(buf: &[u8], ext: Extent) -> Option<Cow<'_, [u8]>> {
    let Extent::Complete {
        len,
        payload,
        chunks,
        ..
    } = ext
    else {
        return None;
    };
    let whole = buf.get(..len)?;
    if chunks == 1 {
        return whole.get(HEADER_LEN..).map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(payload);
    let mut pos = 0;
    while pos < whole.len() {
        let h = &whole[pos..pos + HEADER_LEN];
        let n = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        out.extend_from_slice(&whole[pos + HEADER_LEN..pos + HEADER_LEN + n]);
        pos += HEADER_LEN + n;
    }
    Some(Cow::Owned(out))
}

/// Frames `payload` as one packet starting at sequence id `seq`, split into
/// chunks of `MAX_CHUNK` (with an empty last chunk when the payload is a
/// multiple of it), as a client would.
pub fn frame(payload: &[u8], seq: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN * (1 + payload.len() / MAX_CHUNK));
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        let l = n as u32;
        out.extend_from_slice(&[l as u8, (l >> 8) as u8, (l >> 16) as u8, seq]);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return out;
        }
        seq = seq.wrapping_add(1);
    }
}

// ---------------------------------------------------------------------------
// COM_CHANGE_USER
// ---------------------------------------------------------------------------

/// The fields of a COM_CHANGE_USER payload, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeUser<'a> {
    /// The user name as sent (module docs: what the server makes of it).
    pub user: &'a [u8],
    /// The auth response for the auth plugin named in `auth_plugin` (or the
    /// connection's, when none is named).
    pub auth_data: &'a [u8],
    /// The default database; empty for none.
    pub database: &'a [u8],
    /// The character set; absent in the oldest clients' packets, which end
    /// after the database (and then have no plugin name or attributes).
    pub charset: Option<u16>,
    /// The auth plugin name (with `CLIENT_PLUGIN_AUTH`, when present).
    pub auth_plugin: Option<&'a [u8]>,
    /// The connection attributes: the content of the length-encoded block,
    /// without its length (with `CLIENT_CONNECT_ATTRS`, when present).
    pub connect_attrs: Option<&'a [u8]>,
    /// Bytes after the last field the server reads, which it ignores.
    pub rest: &'a [u8],
}

/// Why a COM_CHANGE_USER could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("auth data of {0} bytes does not fit the 1-byte length of COM_CHANGE_USER")]
    AuthDataTooLong(usize),
    #[error("the {0} of a COM_CHANGE_USER cannot contain a NUL byte")]
    Nul(&'static str),
    #[error("an auth plugin name or connection attributes need the character set before them")]
    NoCharset,
    #[error("the client did not negotiate {0}")]
    NotNegotiated(&'static str),
    #[error("these fields would not read back as themselves (e.g. attributes without the plugin name before them)")]
    Ambiguous,
}

impl<'a> ChangeUser<'a> {
    /// Parses a COM_CHANGE_USER payload (first byte `0x11`) sent by a client
    /// with capabilities `caps`. Stricter than the server where a real
    /// client never goes (a missing NUL at the very end, a lone byte after
    /// the database), never more lenient.
    pub fn parse(payload: &'a [u8], caps: Capabilities) -> Result<ChangeUser<'a>, ParseError> {
        if payload.first() != Some(&COM_CHANGE_USER) {
            return Err(ParseError::malformed(WHAT, "does not start with 0x11"));
        }
        let (user, pos) = nul_str(payload, 1, WHAT)?;
        let (auth_data, pos) = if caps.has(Capabilities::SECURE_CONNECTION) {
            let len = *payload
                .get(pos)
                .ok_or(ParseError::malformed(WHAT, "missing auth data length"))?;
            take(payload, pos + 1, u64::from(len), WHAT)?
        } else {
            nul_str(payload, pos, WHAT)?
        };
        let (database, mut pos) = nul_str(payload, pos, WHAT)?;
        let mut cu = ChangeUser {
            user,
            auth_data,
            database,
            charset: None,
            auth_plugin: None,
            connect_attrs: None,
            rest: &[],
        };
        match payload.len() - pos {
            0 => return Ok(cu),
            1 => return Err(ParseError::malformed(WHAT, "truncated character set")),
            _ => {}
        }
        cu.charset = Some(u16::from_le_bytes([payload[pos], payload[pos + 1]]));
        pos += 2;
        if caps.has(Capabilities::PLUGIN_AUTH) && pos < payload.len() {
            let (name, p) = nul_str(payload, pos, WHAT)?;
            cu.auth_plugin = Some(name);
            pos = p;
        }
        if caps.has(Capabilities::CONNECT_ATTRS) && pos < payload.len() {
            let (len, p) = lenenc_int(payload, pos, WHAT)?;
            let (attrs, p) = take(payload, p, len, WHAT)?;
            cu.connect_attrs = Some(attrs);
            pos = p;
        }
        cu.rest = &payload[pos..];
        Ok(cu)
    }

    /// The user name for logs and messages (invalid UTF-8 replaced).
    pub fn user_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.user)
    }

    /// The payload of these fields for a client with capabilities `caps`.
    /// `encode(parse(p)) == p` for every payload `parse` accepts, except
    /// that the attribute block's length is written in its shortest form
    /// (as every client writes it); the output always parses back to
    /// `self`.
    pub fn encode(&self, caps: Capabilities) -> Result<Vec<u8>, EncodeError> {
        let secure = caps.has(Capabilities::SECURE_CONNECTION);
        for (field, v) in [("user", self.user), ("database", self.database)] {
            if v.contains(&0) {
                return Err(EncodeError::Nul(field));
            }
        }
        if self.auth_plugin.is_some_and(|p| p.contains(&0)) {
            return Err(EncodeError::Nul("auth plugin name"));
        }
        if secure && self.auth_data.len() > 255 {
            return Err(EncodeError::AuthDataTooLong(self.auth_data.len()));
        }
        if !secure && self.auth_data.contains(&0) {
            return Err(EncodeError::Nul(
                "auth data (without CLIENT_SECURE_CONNECTION)",
            ));
        }
        if self.charset.is_none()
            && (self.auth_plugin.is_some() || self.connect_attrs.is_some() || !self.rest.is_empty())
        {
            return Err(EncodeError::NoCharset);
        }
        if self.auth_plugin.is_some() && !caps.has(Capabilities::PLUGIN_AUTH) {
            return Err(EncodeError::NotNegotiated("CLIENT_PLUGIN_AUTH"));
        }
        if self.connect_attrs.is_some() && !caps.has(Capabilities::CONNECT_ATTRS) {
            return Err(EncodeError::NotNegotiated("CLIENT_CONNECT_ATTRS"));
        }

        let attrs_len = self.connect_attrs.map_or(0, |a| 9 + a.len());
        let mut p = Vec::with_capacity(
            1 + self.user.len()
                + 2
                + self.auth_data.len()
                + self.database.len()
                + 3
                + self.auth_plugin.map_or(0, |n| n.len() + 1)
                + attrs_len
                + self.rest.len(),
        );
        p.push(COM_CHANGE_USER);
        p.extend_from_slice(self.user);
        p.push(0);
        if secure {
            p.push(self.auth_data.len() as u8);
            p.extend_from_slice(self.auth_data);
        } else {
            p.extend_from_slice(self.auth_data);
            p.push(0);
        }
        p.extend_from_slice(self.database);
        p.push(0);
        if let Some(cs) = self.charset {
            p.extend_from_slice(&cs.to_le_bytes());
        }
        if let Some(name) = self.auth_plugin {
            p.extend_from_slice(name);
            p.push(0);
        }
        if let Some(attrs) = self.connect_attrs {
            put_lenenc_int(&mut p, attrs.len() as u64);
            p.extend_from_slice(attrs);
        }
        p.extend_from_slice(self.rest);
        // The fields after the database are positional: some combinations
        // (attributes where the plugin name is expected, trailing bytes
        // where a field is) would read back as something else.
        match ChangeUser::parse(&p, caps) {
            Ok(back) if back == *self => Ok(p),
            _ => Err(EncodeError::Ambiguous),
        }
    }

    /// This COM_CHANGE_USER with another auth plugin and auth response
    /// (every other field as it was), encoded for a client with
    /// capabilities `caps`: what a rewrite sends on.
    pub fn rebuild(
        &self,
        auth_plugin: &[u8],
        auth_data: &[u8],
        caps: Capabilities,
    ) -> Result<Vec<u8>, EncodeError> {
        ChangeUser {
            auth_plugin: Some(auth_plugin),
            auth_data,
            ..*self
        }
        .encode(caps)
    }
}

/// Best effort for a log line when a COM_CHANGE_USER does not parse: the
/// user name if its NUL is there, else empty.
pub fn user_of_malformed(payload: &[u8]) -> String {
    match nul_str(payload, 1, WHAT) {
        Ok((user, _)) => String::from_utf8_lossy(user).into_owned(),
        Err(_) => String::new(),
    }
}

fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => out.push(v as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// COM_CHANGE_USER payloads captured from real clients, with the
    /// capabilities of the HandshakeResponse each sent on that connection.
    ///
    /// Captured 2026-11 on Debian 12 against mariadbd 10.11.19 (accounts
    /// `u1`/`u2` with mysql_native_password, `ed` with ed25519, database
    /// `shop`) through a small TCP tap that logged every client → server
    /// packet. libmariadb: Connector/C 3.3.20 (Debian's libmariadb3
    /// 1:10.11.19), a C program calling `mysql_real_connect` as `u1` then
    /// `mysql_change_user(m, user, password, db)`, with the connect
    /// attribute `program_name=capture` added (`MYSQL_OPT_CONNECT_ATTR_ADD`)
    /// except in `libmariadb-no-added-attrs`. mysql_async 0.37.1
    /// (mysql_common 0.37.3): `Conn::change_user(ChangeUserOpts)` after
    /// connecting as `u1`. Auth data is each connection's real scramble
    /// answer; `_pid` is the capturing process's.
    pub(crate) const CAPTURED: &[(&str, u32, &str)] = &[
        (
            "libmariadb-db-attrs",
            0x00be_a28c,
            "117532001425d0631f5b24ab5d001303f72ec253a0e57f3e4273686f70002d006d7973716c5f6e61746976655f70617373776f72640080035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f70696404333933310f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d6507636170747572650c5f7365727665725f686f7374093132372e302e302e31",
        ),
        (
            "libmariadb-no-db",
            0x00be_a284,
            "1175320014715a2776610cc57d097f9c8bef9da03b9e2cda01002d006d7973716c5f6e61746976655f70617373776f72640080035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f70696404333933350f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d6507636170747572650c5f7365727665725f686f7374093132372e302e302e31",
        ),
        (
            "libmariadb-ed25519-account",
            0x00be_a28c,
            "1165640014f03f7dae304d293f25c25fc274a773a63471c56b73686f70002d006d7973716c5f6e61746976655f70617373776f72640080035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f70696404333933380f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d6507636170747572650c5f7365727665725f686f7374093132372e302e302e31",
        ),
        (
            "libmariadb-no-added-attrs",
            0x00be_a28c,
            "1175320014be0dd5efd624f059489c3d74a1134ab77fdc5c7a73686f70002d006d7973716c5f6e61746976655f70617373776f7264006b035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f70696404333934310f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c5f7365727665725f686f7374093132372e302e302e31",
        ),
        (
            "mysql_async-db",
            0x010f_a288,
            "117532001461d58863eb18d4f32a1ff67461d14c664dd7566173686f70002d006d7973716c5f6e61746976655f70617373776f72640000",
        ),
        (
            "mysql_async-no-db",
            0x010f_a280,
            "1175320014694362d078fb9eb1df68d2c565ac84d21b4a73ec002d006d7973716c5f6e61746976655f70617373776f72640000",
        ),
        (
            "mysql_async-ed25519",
            0x010f_a288,
            "116564004087a49bda0476bde3c6ced73f858dcf14cdf78eb26ea6329aee65ba2e5ef00901d87794394d9e02e88c4bd15574b5db9a9125f47aa9d31374292140aa6af2b50f73686f70002d00636c69656e745f656432353531390000",
        ),
    ];

    /// (name, user, auth data length, database, plugin, attribute block
    /// length, rest) of each capture.
    #[test]
    fn parses_every_captured_payload_field_by_field() {
        type Row = (
            &'static str,
            &'static str,
            usize,
            &'static str,
            &'static str,
            Option<usize>,
            &'static [u8],
        );
        let expected: &[Row] = &[
            (
                "libmariadb-db-attrs",
                "u2",
                20,
                "shop",
                "mysql_native_password",
                Some(128),
                b"",
            ),
            (
                "libmariadb-no-db",
                "u2",
                20,
                "",
                "mysql_native_password",
                Some(128),
                b"",
            ),
            (
                "libmariadb-ed25519-account",
                "ed",
                20,
                "shop",
                "mysql_native_password",
                Some(128),
                b"",
            ),
            (
                "libmariadb-no-added-attrs",
                "u2",
                20,
                "shop",
                "mysql_native_password",
                Some(107),
                b"",
            ),
            // mysql_async writes an empty attribute block without
            // CLIENT_CONNECT_ATTRS: a byte the server ignores.
            (
                "mysql_async-db",
                "u2",
                20,
                "shop",
                "mysql_native_password",
                None,
                b"\0",
            ),
            (
                "mysql_async-no-db",
                "u2",
                20,
                "",
                "mysql_native_password",
                None,
                b"\0",
            ),
            (
                "mysql_async-ed25519",
                "ed",
                64,
                "shop",
                "client_ed25519",
                None,
                b"\0",
            ),
        ];
        assert_eq!(expected.len(), CAPTURED.len());
        for ((name, caps, payload), row) in CAPTURED.iter().zip(expected) {
            assert_eq!(*name, row.0);
            let p = hex(payload);
            let cu = ChangeUser::parse(&p, Capabilities(*caps))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cu.user_lossy(), row.1, "{name}");
            assert_eq!(cu.auth_data.len(), row.2, "{name}");
            assert_eq!(cu.database, row.3.as_bytes(), "{name}");
            assert_eq!(cu.charset, Some(45), "{name}: utf8mb4_general_ci");
            assert_eq!(cu.auth_plugin, Some(row.4.as_bytes()), "{name}");
            assert_eq!(cu.connect_attrs.map(<[u8]>::len), row.5, "{name}");
            assert_eq!(cu.rest, row.6, "{name}");
            assert_eq!(
                cu.encode(Capabilities(*caps)).unwrap(),
                p,
                "{name}: byte-exact"
            );
        }
        let p = hex(CAPTURED[0].2);
        let cu = ChangeUser::parse(&p, Capabilities(CAPTURED[0].1)).unwrap();
        let attrs = cu.connect_attrs.unwrap();
        assert!(attrs.starts_with(b"\x03_os\x05Linux\x0c_client_name\x0alibmariadb"));
    }

    /// A rewrite: the libmariadb packet (native password) rebuilt for
    /// ed25519 with a 64-byte answer; everything else stays.
    #[test]
    fn rebuild_swaps_plugin_and_auth_data_only() {
        let caps = Capabilities(CAPTURED[0].1);
        let p = hex(CAPTURED[0].2);
        let cu = ChangeUser::parse(&p, caps).unwrap();
        let out = cu.rebuild(b"client_ed25519", &[0xab; 64], caps).unwrap();
        let back = ChangeUser::parse(&out, caps).unwrap();
        assert_eq!(
            back,
            ChangeUser {
                auth_plugin: Some(b"client_ed25519"),
                auth_data: &[0xab; 64],
                ..cu
            }
        );
        // Byte by byte: 0x11, "u2\0", 64, the answer, "shop\0", charset,
        // plugin, then the attribute block exactly as it was.
        let mut want = b"\x11u2\0\x40".to_vec();
        want.extend_from_slice(&[0xab; 64]);
        want.extend_from_slice(b"shop\0\x2d\x00client_ed25519\0");
        let attrs_at = p.len() - 129;
        want.extend_from_slice(&p[attrs_at..]);
        assert_eq!(out, want);
    }

    const OLD: u32 = Capabilities::PROTOCOL_41; // no SECURE_CONNECTION, PLUGIN_AUTH, CONNECT_ATTRS
    const ALL: u32 = Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::CONNECT_ATTRS;

    #[test]
    fn layouts_by_capability() {
        // NUL-terminated auth data, no more data.
        let cu = ChangeUser::parse(b"\x11bob\0secret\0db\0", Capabilities(OLD)).unwrap();
        assert_eq!(
            (cu.user, cu.auth_data, cu.database),
            (&b"bob"[..], &b"secret"[..], &b"db"[..])
        );
        assert_eq!(
            (cu.charset, cu.auth_plugin, cu.connect_attrs),
            (None, None, None)
        );
        assert_eq!(
            cu.encode(Capabilities(OLD)).unwrap(),
            b"\x11bob\0secret\0db\0"
        );
        // Without PLUGIN_AUTH, the bytes after the charset are attributes.
        let caps = Capabilities(Capabilities::SECURE_CONNECTION | Capabilities::CONNECT_ATTRS);
        let p = b"\x11bob\0\x02xy\0\x21\x00\x04\x01a\x01b";
        let cu = ChangeUser::parse(p, caps).unwrap();
        assert_eq!((cu.charset, cu.auth_plugin), (Some(33), None));
        assert_eq!(cu.connect_attrs, Some(&b"\x01a\x01b"[..]));
        assert_eq!(cu.encode(caps).unwrap(), p);
        // Plugin present, attributes absent although negotiated.
        let p = b"\x11bob\0\x00\0\x21\x00dialog\0";
        let cu = ChangeUser::parse(p, Capabilities(ALL)).unwrap();
        assert_eq!(
            (cu.auth_plugin, cu.connect_attrs),
            (Some(&b"dialog"[..]), None)
        );
        assert_eq!(cu.encode(Capabilities(ALL)).unwrap(), p);
        // A 2-byte length-encoded attribute block.
        let mut p = b"\x11bob\0\x00\0\x21\x00p\0\xfc\x2c\x01".to_vec();
        p.extend_from_slice(&[7; 300]);
        let cu = ChangeUser::parse(&p, Capabilities(ALL)).unwrap();
        assert_eq!(cu.connect_attrs.map(<[u8]>::len), Some(300));
        assert_eq!(cu.encode(Capabilities(ALL)).unwrap(), p);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let all = Capabilities(ALL);
        for (p, why) in [
            (&b""[..], "empty"),
            (b"\x03bob\0\x00\0", "another command"),
            (b"\x11bob", "user without NUL"),
            (b"\x11bob\0", "no auth length"),
            (b"\x11bob\0\x05ab", "auth data past the end"),
            (b"\x11bob\0\x00", "no database"),
            (b"\x11bob\0\x00db", "database without NUL"),
            (b"\x11bob\0\x00db\0\x21", "lone charset byte"),
            (b"\x11bob\0\x00db\0\x21\x00plug", "plugin without NUL"),
            (
                b"\x11bob\0\x00db\0\x21\x00p\0\x05ab",
                "attributes past the end",
            ),
            (b"\x11bob\0\x00db\0\x21\x00p\0\xfb", "invalid length"),
        ] {
            assert!(
                matches!(ChangeUser::parse(p, all), Err(ParseError::Malformed { .. })),
                "{why}"
            );
        }
        // Without SECURE_CONNECTION the auth data runs to a NUL.
        assert!(ChangeUser::parse(b"\x11bob\0secret", Capabilities(OLD)).is_err());
        assert_eq!(user_of_malformed(b"\x11bob\0\x05ab"), "bob");
        assert_eq!(user_of_malformed(b"\x11bob"), "");
    }

    #[test]
    fn encode_refuses_what_cannot_be_read_back() {
        let all = Capabilities(ALL);
        let base = ChangeUser::parse(b"\x11bob\0\x00db\0\x21\x00p\0", all).unwrap();
        let long = [1u8; 256];
        let cases: [(ChangeUser<'_>, Capabilities, EncodeError); 7] = [
            (
                ChangeUser {
                    auth_data: &long,
                    ..base
                },
                all,
                EncodeError::AuthDataTooLong(256),
            ),
            (
                ChangeUser {
                    user: b"a\0b",
                    ..base
                },
                all,
                EncodeError::Nul("user"),
            ),
            (
                ChangeUser {
                    auth_plugin: Some(b"a\0"),
                    ..base
                },
                all,
                EncodeError::Nul("auth plugin name"),
            ),
            (
                ChangeUser {
                    auth_data: b"a\0",
                    ..base
                },
                Capabilities(OLD | Capabilities::PLUGIN_AUTH),
                EncodeError::Nul("auth data (without CLIENT_SECURE_CONNECTION)"),
            ),
            (
                ChangeUser {
                    charset: None,
                    ..base
                },
                all,
                EncodeError::NoCharset,
            ),
            (
                base,
                Capabilities(Capabilities::SECURE_CONNECTION),
                EncodeError::NotNegotiated("CLIENT_PLUGIN_AUTH"),
            ),
            (
                ChangeUser {
                    auth_plugin: None,
                    connect_attrs: Some(b""),
                    ..base
                },
                all,
                EncodeError::Ambiguous,
            ),
        ];
        for (cu, caps, err) in cases {
            assert_eq!(cu.encode(caps), Err(err));
        }
        // A long answer fits without SECURE_CONNECTION (NUL-terminated).
        let caps = Capabilities(OLD);
        let cu = ChangeUser {
            auth_data: &long,
            charset: None,
            auth_plugin: None,
            ..base
        };
        assert_eq!(
            ChangeUser::parse(&cu.encode(caps).unwrap(), caps).unwrap(),
            cu
        );
    }

    #[test]
    fn compression_is_seen_in_either_flag() {
        assert!(!compressed(Capabilities(ALL)));
        assert!(compressed(Capabilities(ALL | Capabilities::COMPRESS)));
        assert!(compressed(Capabilities(ALL | CLIENT_ZSTD_COMPRESSION)));
    }

    // --- framing -----------------------------------------------------------

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        frame(payload, seq)
    }

    /// Feeds `stream` cut at `cuts` the way the relay does (a Short tail is
    /// passed again in front of the next piece) and returns the offsets of
    /// watched commands in the stream; after each, the packet is skipped.
    fn watched(stream: &[u8], cuts: &[usize]) -> Vec<usize> {
        let mut f = CommandFraming::new();
        let mut found = Vec::new();
        let mut bounds = cuts.to_vec();
        bounds.push(stream.len());
        let mut start = 0; // stream offset of `pending`'s first byte
        let mut delivered = 0; // stream bytes handed over so far
        let mut pending: Vec<u8> = Vec::new();
        for &b in &bounds {
            if b > delivered {
                pending.extend_from_slice(&stream[delivered..b]);
                delivered = b;
            }
            loop {
                match f.scan(&pending, COM_CHANGE_USER) {
                    Scan::Done => {
                        start += pending.len();
                        pending.clear();
                        break;
                    }
                    Scan::Short { at } => {
                        assert!(pending.len() - at <= CommandFraming::MAX_SHORT);
                        start += at;
                        pending.drain(..at);
                        break;
                    }
                    Scan::Watched { at } => {
                        // Take the whole packet (reading ahead if needed).
                        let from = start + at;
                        found.push(from);
                        let Extent::Complete { len, last_seq, .. } = extent(&stream[from..]) else {
                            panic!("incomplete watched packet");
                        };
                        f.after_packet(last_seq);
                        start = from + len;
                        delivered = delivered.max(start);
                        pending = stream[start..delivered].to_vec();
                    }
                }
            }
        }
        found
    }

    #[test]
    fn finds_change_user_among_commands_at_every_cut() {
        let mut s = pkt(0, b"\x03select 1");
        let cu_at = s.len();
        let cu = hex(CAPTURED[4].2);
        s.extend(pkt(0, &cu));
        s.extend(pkt(2, &[0x5a; 20])); // its auth switch answer: not a command
        s.extend(pkt(0, b"\x0e")); // COM_PING
        let cu2_at = s.len();
        s.extend(pkt(0, &cu));
        s.extend(pkt(0, b"")); // an empty packet
        s.extend(pkt(0, b"\x11")); // a bare 0x11: still watched
        let bare_at = s.len() - 5;
        let want = vec![cu_at, cu2_at, bare_at];
        assert_eq!(watched(&s, &[]), want);
        for cut in 0..=s.len() {
            assert_eq!(watched(&s, &[cut]), want, "cut at {cut}");
        }
        // Byte by byte.
        let all: Vec<usize> = (1..s.len()).collect();
        assert_eq!(watched(&s, &all), want);
    }

    #[test]
    fn continuation_chunks_are_never_commands() {
        // A 16 MiB COM_QUERY whose continuation chunk has seq 0 after a
        // wrap (256 chunks would be needed for that; the tracker only sees
        // the seq, so start the packet at seq 255) and starts with 0x11.
        let mut big = vec![0x03];
        big.resize(MAX_CHUNK, b'x');
        let mut s = Vec::new();
        s.extend_from_slice(&[0xff, 0xff, 0xff, 0]);
        s.extend_from_slice(&big);
        // Continuation at seq 1 … then a final chunk at seq 0 after 255.
        s.extend_from_slice(&[0xff, 0xff, 0xff, 255]);
        s.extend(std::iter::repeat_n(0x11, MAX_CHUNK));
        s.extend(pkt(0, b"\x11tail-of-the-query"));
        let next = s.len();
        s.extend(pkt(0, &hex(CAPTURED[4].2)));
        assert_eq!(watched(&s, &[]), vec![next]);
        assert_eq!(
            watched(
                &s,
                &[5, 70_000, MAX_CHUNK + 2, MAX_CHUNK + 6, 2 * MAX_CHUNK + 9]
            ),
            vec![next]
        );
        // A packet of exactly MAX_CHUNK ends with an empty chunk (seq 1).
        let mut s = frame(&big, 0);
        assert_eq!(s.len(), MAX_CHUNK + 8);
        s.extend(pkt(0, b"\x11x\0\0\0"));
        assert_eq!(watched(&s, &[]), vec![MAX_CHUNK + 8]);
    }

    #[test]
    fn local_infile_packets_are_not_commands_even_when_their_seq_wraps() {
        // COM_QUERY LOAD DATA LOCAL INFILE; the server asks for the file
        // (seq 1); the file comes in packets from seq 2, each starting with
        // 0x11, wrapping past 255 to 0, ended by an empty packet.
        let mut s = pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t");
        let mut seq = 2u8;
        for _ in 0..300 {
            s.extend(pkt(seq, b"\x11\x11\x11,1\n"));
            seq = seq.wrapping_add(1);
        }
        s.extend(pkt(seq, b""));
        let next = s.len();
        s.extend(pkt(0, &hex(CAPTURED[0].2)));
        assert_eq!(watched(&s, &[]), vec![next]);
        let cuts: Vec<usize> = (1..s.len()).step_by(7).collect();
        assert_eq!(watched(&s, &cuts), vec![next]);

        // The file's empty last packet lands on seq 255: the next seq 0 is a
        // command.
        let mut s = pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t");
        for seq in 2..=254u8 {
            s.extend(pkt(seq, b"\x11,1\n"));
        }
        s.extend(pkt(255, b""));
        let next = s.len();
        s.extend(pkt(0, b"\x11u\0\0\0"));
        assert_eq!(watched(&s, &[]), vec![next]);
    }

    #[test]
    fn extent_and_joined_payload() {
        assert_eq!(extent(&[]), Extent::Partial { declared: 0 });
        assert_eq!(extent(&[5, 0, 0]), Extent::Partial { declared: 0 });
        assert_eq!(extent(&[5, 0, 0, 0, 1]), Extent::Partial { declared: 5 });
        let p = pkt(0, b"\x11abc");
        let mut buf = p.clone();
        buf.extend_from_slice(b"behind");
        let ext = extent(&buf);
        assert_eq!(
            ext,
            Extent::Complete {
                len: 8,
                payload: 4,
                chunks: 1,
                last_seq: 0
            }
        );
        assert!(matches!(
            joined_payload(&buf, ext),
            Some(Cow::Borrowed(b"\x11abc"))
        ));

        let mut big = vec![0x11];
        big.resize(MAX_CHUNK + 10, 7);
        let f = frame(&big, 0);
        let ext = extent(&f);
        assert_eq!(
            ext,
            Extent::Complete {
                len: big.len() + 8,
                payload: big.len(),
                chunks: 2,
                last_seq: 1
            }
        );
        assert_eq!(joined_payload(&f, ext).unwrap().as_ref(), &big[..]);
        assert_eq!(
            extent(&f[..MAX_CHUNK + 6]),
            Extent::Partial {
                declared: MAX_CHUNK
            }
        );
        assert_eq!(
            extent(&f[..MAX_CHUNK + 9]),
            Extent::Partial {
                declared: big.len()
            }
        );
        assert_eq!(
            joined_payload(&f[..10], Extent::Partial { declared: 1 }),
            None
        );
    }
}
