//! OK packets and their session-state block (the server's session tracker),
//! and the one edit portcullis makes to the OK that ends authentication:
//! MariaDB's `redirect_url` (MDEV-15935) added, a backend's own renamed
//! (docs/failover.md, docs/design.md §3.8).
//!
//! The layout, with CLIENT_SESSION_TRACK agreed (the same for an OK that
//! ends authentication with or without CLIENT_DEPRECATE_EOF; with it, an
//! OK that stands in for an EOF starts with `fe` instead of `00`):
//!
//! ```text
//! 00                      header
//! lenenc                  affected rows
//! lenenc                  last insert id
//! u16                     status flags (SERVER_SESSION_STATE_CHANGED = 0x4000)
//! u16                     warnings
//! lenenc string           info (human text): present when anything follows
//! lenenc string           session-state changes, only with SERVER_SESSION_STATE_CHANGED:
//!   u8 type, lenenc data    one entry after the other; type 0 (system
//!                           variables): data = lenenc name, lenenc value
//! ```
//!
//! Without CLIENT_SESSION_TRACK the info is the rest of the packet and
//! there is no session-state block. MariaDB writes the info only when it is
//! not empty or a session-state block follows (`net_send_ok`), so a plain
//! authentication OK is the seven bytes `00 00 00 02 00 00 00`.

use super::{lenenc_int, take, ParseError};

/// Status flag: the OK carries a session-state block.
pub const SERVER_SESSION_STATE_CHANGED: u16 = 0x4000;
/// Status flag: a transaction is open.
pub const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
/// Session-state entry type: system variables changed (name, value).
pub const SESSION_TRACK_SYSTEM_VARIABLES: u8 = 0;
/// The system variable redirect-aware connectors follow.
pub const REDIRECT_URL: &[u8] = b"redirect_url";
/// What a backend's own `redirect_url` entry is renamed to, so that no
/// connector follows it past the sidecar while an operator can still see
/// it in a packet capture.
pub const BACKEND_REDIRECT_URL: &[u8] = b"backend_redirect_url";

const WHAT: &str = "OK packet";

/// An OK packet's fields, borrowed from its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket<'a> {
    /// `00`, or `fe` for an OK that stands in for an EOF.
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// The human-readable info, without its length.
    pub info: &'a [u8],
    /// The session-state block's content (the entries, without the block's
    /// length), when the client agreed on CLIENT_SESSION_TRACK and the
    /// status has SERVER_SESSION_STATE_CHANGED.
    pub session_state: Option<&'a [u8]>,
    layout: Layout,
}

/// Where an OK's parts lie in its payload, for rewriting it byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Offset of the two status bytes.
    status_at: usize,
    /// The info field as written (its length included), when present in
    /// the session-tracking layout.
    info: Option<(usize, usize)>,
    /// Where the bytes after the session-state block (none from a server)
    /// start.
    trailing: usize,
}

impl<'a> OkPacket<'a> {
    /// Parses an OK payload; `session_track` is whether client and server
    /// agreed on CLIENT_SESSION_TRACK, which decides the info's encoding.
    pub fn parse(payload: &'a [u8], session_track: bool) -> Result<OkPacket<'a>, ParseError> {
        let header = *payload
            .first()
            .ok_or(ParseError::Incomplete { needed: 7 })?;
        if header != 0x00 && header != 0xfe {
            return Err(ParseError::malformed(
                WHAT,
                "does not start with 0x00 or 0xfe",
            ));
        }
        let (affected_rows, pos) = lenenc_int(payload, 1, WHAT)?;
        let (last_insert_id, pos) = lenenc_int(payload, pos, WHAT)?;
        let fixed = payload
            .get(pos..pos + 4)
            .ok_or(ParseError::malformed(WHAT, "truncated status or warnings"))?;
        let status = u16::from_le_bytes([fixed[0], fixed[1]]);
        let warnings = u16::from_le_bytes([fixed[2], fixed[3]]);
        let mut layout = Layout {
            status_at: pos,
            info: None,
            trailing: payload.len(),
        };
        let mut pos = pos + 4;
        if !session_track {
            return Ok(OkPacket {
                header,
                affected_rows,
                last_insert_id,
                status,
                warnings,
                info: &payload[pos..],
                session_state: None,
                layout,
            });
        }
        let mut info: &[u8] = &[];
        if pos < payload.len() {
            let (len, p) = lenenc_int(payload, pos, WHAT)?;
            let (text, end) = take(payload, p, len, WHAT)?;
            info = text;
            layout.info = Some((pos, end));
            pos = end;
        }
        let mut session_state = None;
        if status & SERVER_SESSION_STATE_CHANGED != 0 && pos < payload.len() {
            let (len, p) = lenenc_int(payload, pos, WHAT)?;
            let (block, end) = take(payload, p, len, WHAT)?;
            // Every entry must parse: a block we could not walk is not one
            // we may rewrite.
            entries(block)?;
            session_state = Some(block);
            pos = end;
        }
        layout.trailing = pos;
        Ok(OkPacket {
            header,
            affected_rows,
            last_insert_id,
            status,
            warnings,
            info,
            session_state,
            layout,
        })
    }

    /// The system variables the session-state block reports changed, in
    /// order (a name may appear more than once).
    pub fn system_variables(&self) -> Vec<Variable<'a>> {
        let Some(block) = self.session_state else {
            return Vec::new();
        };
        entries(block)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == SESSION_TRACK_SYSTEM_VARIABLES)
            .flat_map(|e| variables(e.data).unwrap_or_default())
            .collect()
    }
}

/// A system variable reported changed: its name and value.
pub type Variable<'a> = (&'a [u8], &'a [u8]);

/// One session-state entry: its type and its data (without the length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

/// The entries of a session-state block's content.
pub fn entries(block: &[u8]) -> Result<Vec<Entry<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let kind = block[pos];
        let (len, p) = lenenc_int(block, pos + 1, WHAT)?;
        let (data, end) = take(block, p, len, WHAT)?;
        out.push(Entry { kind, data });
        pos = end;
    }
    Ok(out)
}

/// The name/value pairs of a system-variables entry's data. Servers put
/// one pair in each entry; connectors read on while bytes remain, so do we.
pub fn variables(data: &[u8]) -> Result<Vec<Variable<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (len, p) = lenenc_int(data, pos, WHAT)?;
        let (name, p) = take(data, p, len, WHAT)?;
        let (len, p) = lenenc_int(data, p, WHAT)?;
        let (value, p) = take(data, p, len, WHAT)?;
        out.push((name, value));
        pos = p;
    }
    Ok(out)
}

/// Appends `n` as a length-encoded integer, in its shortest form (as
/// servers write it).
pub fn put_lenenc_int(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Appends `s` as a length-encoded string.
pub fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A system-variables entry reporting `name` = `value`.
pub fn system_variable_entry(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(name.len() + value.len() + 2);
    put_lenenc_str(&mut data, name);
    put_lenenc_str(&mut data, value);
    let mut e = vec![SESSION_TRACK_SYSTEM_VARIABLES];
    put_lenenc_str(&mut e, &data);
    e
}

/// What portcullis changes in the OK that ends authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthOkEdit<'a> {
    /// Add `redirect_url` = this (`mariadb://host:port`) as the first
    /// entry of the session-state block.
    pub redirect_url: Option<&'a str>,
    /// Rename the backend's own `redirect_url` entries to
    /// [`BACKEND_REDIRECT_URL`]. Always done when a `redirect_url` is
    /// added: a connector that finds two follows both.
    pub rename_backend_redirect: bool,
}

/// The OK that ends authentication (`payload`) with `edit` applied, or
/// `None` when nothing changes (the packet then passes byte for byte).
/// `session_track`: whether client and backend agreed on
/// CLIENT_SESSION_TRACK; without it there is no session-state block to
/// rename in nor to add to, and the result is `None`.
///
/// The added entry goes first in the block: both connectors that read
/// `redirect_url` stop understanding a block at an entry type they do not
/// know (some Connector/J versions skip by the wrong buffer, the Node.js
/// connector does not skip at all), so the first place is the one both
/// always read. With
/// no block yet, the status gets SERVER_SESSION_STATE_CHANGED and an empty
/// info (`00`) is written where the server wrote none.
pub fn edit_auth_ok(
    payload: &[u8],
    session_track: bool,
    edit: &AuthOkEdit<'_>,
) -> Result<Option<Vec<u8>>, ParseError> {
    if !session_track || (edit.redirect_url.is_none() && !edit.rename_backend_redirect) {
        return Ok(None);
    }
    let ok = OkPacket::parse(payload, true)?;
    let mut changed = false;
    let mut block = Vec::new();
    if let Some(url) = edit.redirect_url {
        block.extend_from_slice(&system_variable_entry(REDIRECT_URL, url.as_bytes()));
        changed = true;
    }
    if let Some(old) = ok.session_state {
        for e in entries(old)? {
            let renamed = (e.kind == SESSION_TRACK_SYSTEM_VARIABLES)
                .then(|| rename_redirect(e.data))
                .transpose()?
                .flatten();
            match renamed {
                Some(data) => {
                    block.push(e.kind);
                    put_lenenc_str(&mut block, &data);
                    changed = true;
                }
                None => {
                    block.push(e.kind);
                    put_lenenc_str(&mut block, e.data);
                }
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let l = ok.layout;
    let mut out = Vec::with_capacity(payload.len() + block.len() + 8);
    out.extend_from_slice(&payload[..l.status_at]);
    out.extend_from_slice(&(ok.status | SERVER_SESSION_STATE_CHANGED).to_le_bytes());
    out.extend_from_slice(&payload[l.status_at + 2..l.status_at + 4]);
    match l.info {
        Some((from, to)) => out.extend_from_slice(&payload[from..to]),
        None => out.push(0),
    }
    put_lenenc_str(&mut out, &block);
    out.extend_from_slice(&payload[l.trailing..]);
    Ok(Some(out))
}

/// A system-variables entry's data with every `redirect_url` renamed, or
/// `None` when it has none.
fn rename_redirect(data: &[u8]) -> Result<Option<Vec<u8>>, ParseError> {
    let vars = variables(data)?;
    if !vars.iter().any(|(name, _)| *name == REDIRECT_URL) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(data.len() + 8);
    for (name, value) in vars {
        let name = if name == REDIRECT_URL {
            BACKEND_REDIRECT_URL
        } else {
            name
        };
        put_lenenc_str(&mut out, name);
        put_lenenc_str(&mut out, value);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seven bytes of a plain authentication OK (status AUTOCOMMIT).
    const PLAIN: [u8; 7] = [0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];
    const URL: &str = "mariadb://db2.example.net:3307";

    fn add() -> AuthOkEdit<'static> {
        AuthOkEdit {
            redirect_url: Some(URL),
            rename_backend_redirect: true,
        }
    }

    /// Our entry, byte for byte: type 0, data length 44, name (12), value (30).
    fn our_entry() -> Vec<u8> {
        let mut e = vec![0x00, 44, 12];
        e.extend_from_slice(b"redirect_url");
        e.push(30);
        e.extend_from_slice(URL.as_bytes());
        e
    }

    /// A server's OK with a session-state block: `autocommit=ON` and the
    /// schema `shop`, as MariaDB writes one.
    fn server_ok(info: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut block = vec![0x00, 0x0e, 0x0a];
        block.extend_from_slice(b"autocommit");
        block.extend_from_slice(&[0x02, b'O', b'N']);
        block.extend_from_slice(&[0x01, 0x05, 0x04]);
        block.extend_from_slice(b"shop");
        let mut ok = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00];
        put_lenenc_str(&mut ok, info);
        put_lenenc_str(&mut ok, &block);
        (ok, block)
    }

    #[test]
    fn plain_ok_parses_in_both_layouts() {
        for track in [true, false] {
            let ok = OkPacket::parse(&PLAIN, track).unwrap();
            assert_eq!((ok.status, ok.warnings, ok.info), (2, 0, &b""[..]));
            assert_eq!(ok.session_state, None);
        }
        // Without session tracking the info is the rest of the packet.
        let mut p = PLAIN.to_vec();
        p.extend_from_slice(b"Rows matched: 1");
        assert_eq!(OkPacket::parse(&p, false).unwrap().info, b"Rows matched: 1");
        // An OK standing in for an EOF (CLIENT_DEPRECATE_EOF) has the same layout.
        let mut eof = PLAIN.to_vec();
        eof[0] = 0xfe;
        assert_eq!(OkPacket::parse(&eof, true).unwrap().header, 0xfe);
    }

    #[test]
    fn adds_a_block_to_an_ok_without_one() {
        let got = edit_auth_ok(&PLAIN, true, &add()).unwrap().unwrap();
        // Status gains 0x4000; an empty info; the block (length 46).
        let mut want = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00, 46];
        want.extend_from_slice(&our_entry());
        assert_eq!(got, want);
        let ok = OkPacket::parse(&got, true).unwrap();
        assert_eq!(
            ok.system_variables(),
            vec![(&b"redirect_url"[..], URL.as_bytes())]
        );
    }

    #[test]
    fn prepends_to_an_existing_block_and_keeps_the_info() {
        for info in [&b""[..], b"welcome"] {
            let (ok, block) = server_ok(info);
            let got = edit_auth_ok(&ok, true, &add()).unwrap().unwrap();
            let mut want = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00];
            put_lenenc_str(&mut want, info);
            let mut new_block = our_entry();
            new_block.extend_from_slice(&block);
            put_lenenc_str(&mut want, &new_block);
            assert_eq!(got, want, "info {info:?}");
            assert_eq!(OkPacket::parse(&got, true).unwrap().info, info);
        }
    }

    #[test]
    fn renames_the_backends_redirect_url() {
        let mut ok = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00];
        let theirs = system_variable_entry(REDIRECT_URL, b"mariadb://evil:1");
        put_lenenc_str(&mut ok, &theirs);
        let only_rename = AuthOkEdit {
            redirect_url: None,
            rename_backend_redirect: true,
        };
        let got = edit_auth_ok(&ok, true, &only_rename).unwrap().unwrap();
        let mut want = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00];
        put_lenenc_str(
            &mut want,
            &system_variable_entry(b"backend_redirect_url", b"mariadb://evil:1"),
        );
        assert_eq!(got, want);
        // Kept with pass_backend_redirect: nothing to change.
        assert_eq!(
            edit_auth_ok(&ok, true, &AuthOkEdit::default()).unwrap(),
            None
        );
        // Ours first, theirs renamed: a connector sees exactly one.
        let both = edit_auth_ok(&ok, true, &add()).unwrap().unwrap();
        let names: Vec<_> = OkPacket::parse(&both, true)
            .unwrap()
            .system_variables()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec![&b"redirect_url"[..], b"backend_redirect_url"]);
    }

    #[test]
    fn nothing_to_do_leaves_the_packet_alone() {
        let (ok, _) = server_ok(b"");
        let rename = AuthOkEdit {
            redirect_url: None,
            rename_backend_redirect: true,
        };
        assert_eq!(edit_auth_ok(&ok, true, &rename).unwrap(), None);
        assert_eq!(edit_auth_ok(&PLAIN, true, &rename).unwrap(), None);
        // Without session tracking nothing can be added or renamed.
        assert_eq!(edit_auth_ok(&PLAIN, false, &add()).unwrap(), None);
    }

    #[test]
    fn long_values_take_wider_lengths() {
        let url = format!("mariadb://{}.example.net:3307", "a".repeat(300));
        let edit = AuthOkEdit {
            redirect_url: Some(&url),
            rename_backend_redirect: false,
        };
        let got = edit_auth_ok(&PLAIN, true, &edit).unwrap().unwrap();
        // Value 327 bytes (fc 47 01), data 343 (fc 57 01), block 347 (fc 5b
        // 01), after the empty info.
        assert_eq!(
            &got[7..15],
            &[0x00, 0xfc, 0x5b, 0x01, 0x00, 0xfc, 0x57, 0x01]
        );
        assert_eq!(&got[28..31], &[0xfc, 0x47, 0x01]);
        let ok = OkPacket::parse(&got, true).unwrap();
        assert_eq!(ok.system_variables()[0].1, url.as_bytes());
        let mut v = Vec::new();
        put_lenenc_int(&mut v, 0x12_3456);
        assert_eq!(v, [0xfd, 0x56, 0x34, 0x12]);
        v.clear();
        put_lenenc_int(&mut v, 1 << 24);
        assert_eq!(v, [0xfe, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[0x01],
            &[0x00, 0x00],
            &[0x00, 0x00, 0x00, 0x02],
            &[0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x05, b'a'],
            // A block whose entry runs past its end.
            &[
                0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00, 0x03, 0x00, 0x05, 0x01,
            ],
            // A system variable whose value length is NULL (0xfb).
            &[
                0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x03, 0x01, b'x', 0xfb,
            ],
        ] {
            assert!(edit_auth_ok(bad, true, &add()).is_err(), "{bad:?}");
        }
    }
}
