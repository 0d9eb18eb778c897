//! The invariants each parser fuzz target checks, as plain functions, so the
//! same checks run under libFuzzer (`fuzz_targets/*.rs`) and in `cargo test`
//! (`tests/fuzz_regressions.rs` replays the seed corpus and every input a
//! fuzzer once failed on). Each panics when an invariant does not hold.
#![allow(dead_code)]

pub mod greeting {
    use portcullis::protocol::greeting::build_own;
    use portcullis::protocol::{Capabilities, Greeting};

    /// Server greeting: `Greeting::parse`, then `set_ssl` flipping CLIENT_SSL and
    /// back must restore the exact bytes, and touch nothing but that bit.
    /// Also: portcullis's own greeting (`build_own`) always parses back.
    pub fn check(data: &[u8]) {
        if let Ok(g) = Greeting::parse(data) {
            let had_ssl = g.capabilities.has(Capabilities::SSL);
            let mut p = data.to_vec();
            let mut flipped = g.clone();
            flipped.set_ssl(&mut p, !had_ssl);
            assert_eq!(
                flipped.capabilities.0,
                g.capabilities.0 ^ Capabilities::SSL,
                "set_ssl must change exactly CLIENT_SSL in the parsed value"
            );
            let diff: Vec<usize> = (0..p.len()).filter(|&i| p[i] != data[i]).collect();
            assert_eq!(diff.len(), 1, "set_ssl must change exactly one byte");
            assert_eq!(p[diff[0]] ^ data[diff[0]], 0x08, "and only bit 11");
            let reparsed = Greeting::parse(&p).expect("a patched greeting still parses");
            assert_eq!(reparsed, flipped, "the patch and the parsed value agree");
            flipped.set_ssl(&mut p, had_ssl);
            assert_eq!(p, data, "set_ssl back must restore the bytes");
            assert_eq!(flipped, g);
        }

        // portcullis's own greeting, from an arbitrary scramble and id.
        if data.len() >= 25 {
            let mut scramble = [0u8; 20];
            for (s, &b) in scramble.iter_mut().zip(&data[..20]) {
                *s = if b == 0 { 1 } else { b }; // the scramble may not hold NULs
            }
            let id = u32::from_le_bytes([data[20], data[21], data[22], data[23]]);
            let tls = data[24] & 1 == 1;
            let own = build_own(&scramble, id, tls);
            let g = Greeting::parse(&own).expect("own greeting parses");
            assert_eq!(g.connection_id, id);
            assert_eq!(g.capabilities.has(Capabilities::SSL), tls);
            assert!(g.capabilities.has(Capabilities::PROTOCOL_41));
            assert!(g.capabilities.has(Capabilities::PLUGIN_AUTH));
        }
    }
}

pub mod handshake_response {
    use portcullis::protocol::response::{
        client_capabilities, is_ssl_request, set_ssl, SSL_REQUEST_LEN,
    };
    use portcullis::protocol::{Capabilities, HandshakeResponse};

    /// The client's first packet: `HandshakeResponse::parse`,
    /// `client_capabilities`, `is_ssl_request` and `set_ssl` never panic, and
    /// agree with one another.
    pub fn check(data: &[u8]) {
        let parsed = HandshakeResponse::parse(data);
        let caps = client_capabilities(data);
        let ssl = is_ssl_request(data);

        if ssl {
            assert_eq!(data.len(), SSL_REQUEST_LEN);
            assert!(caps.as_ref().is_ok_and(|c| c.has(Capabilities::SSL)));
        }
        if let Ok(r) = &parsed {
            assert_eq!(
                Ok(r.capabilities),
                caps,
                "parse reads the same capabilities"
            );
            assert!(r.capabilities.has(Capabilities::PROTOCOL_41));
        }

        // Clearing CLIENT_SSL (what the proxy does before relaying to the
        // backend) changes nothing but that bit.
        let mut p = data.to_vec();
        set_ssl(&mut p, false);
        assert!(!is_ssl_request(&p));
        if data.len() >= 2 {
            assert_eq!(p[1], data[1] & !0x08);
            assert_eq!(p[..1], data[..1]);
            assert_eq!(p[2..], data[2..]);
        } else {
            assert_eq!(p, data);
        }
        match (&parsed, HandshakeResponse::parse(&p)) {
            (Ok(a), Ok(b)) => {
                assert_eq!(b.capabilities.0, a.capabilities.0 & !Capabilities::SSL);
                assert_eq!(
                    (&a.user, &a.database, &a.auth_plugin),
                    (&b.user, &b.database, &b.auth_plugin)
                );
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!("CLIENT_SSL changed whether the response parses: {a:?} vs {b:?}"),
        }
        if caps.is_ok_and(|c| c.has(Capabilities::SSL)) {
            set_ssl(&mut p, true);
            assert_eq!(p, data, "set_ssl back restores the bytes");
        }
    }
}

pub mod packet_framing {
    use portcullis::protocol::packet::{split_packet, write_packet};
    use portcullis::protocol::{PacketHeader, ParseError, HEADER_LEN, MAX_CHUNK};

    /// Packet framing: `split_packet` on arbitrary bytes. When it succeeds,
    /// `header.len + 4 == consumed <= input length`; when it asks for more, the
    /// count is exact; it never reports "malformed". `write_packet` frames an
    /// arbitrary payload that `split_packet` reads back.
    pub fn check(data: &[u8]) {
        match split_packet(data) {
            Ok((header, consumed)) => {
                assert_eq!(header.len + HEADER_LEN, consumed);
                assert!(consumed <= data.len());
                let h = [data[0], data[1], data[2], data[3]];
                assert_eq!(PacketHeader::decode(h), header);
                assert_eq!(header.encode(), h);
                assert_eq!(header.continues(), header.len == MAX_CHUNK);
            }
            Err(ParseError::Incomplete { needed }) => {
                assert!(needed > 0);
                if data.len() < HEADER_LEN {
                    assert_eq!(data.len() + needed, HEADER_LEN);
                } else {
                    let h = PacketHeader::decode([data[0], data[1], data[2], data[3]]);
                    assert_eq!(data.len() + needed, HEADER_LEN + h.len);
                    // Given exactly what it asked for, it succeeds (checked for
                    // small packets only: a 16 MiB buffer per input would make
                    // this target crawl).
                    if needed > 64 * 1024 {
                        return;
                    }
                    let mut more = data.to_vec();
                    more.resize(data.len() + needed, 0);
                    assert_eq!(split_packet(&more), Ok((h, HEADER_LEN + h.len)));
                }
            }
            Err(e @ ParseError::Malformed { .. }) => panic!("framing reported {e}"),
        }

        // Round trip: the input as a payload.
        let seq = data.first().copied().unwrap_or(0);
        let mut out = Vec::new();
        write_packet(&mut out, seq, data);
        let (h, n) = split_packet(&out).expect("a written packet splits");
        assert_eq!((h.len, h.seq, n), (data.len(), seq, out.len()));
        assert_eq!(&out[HEADER_LEN..], data);
    }
}

pub mod err_packet {
    use portcullis::protocol::ErrPacket;

    /// ERR packets: `ErrPacket::parse` never panics, `parse(encode(parse(x)))`
    /// equals `parse(x)`, `encode(parse(x)) == x` for a 4.1-form ERR with a
    /// UTF-8 message, and any constructed ERR packet parses back equal.
    pub fn check(data: &[u8]) {
        if let Ok(e) = ErrPacket::parse(data) {
            let enc = e.encode();
            assert_eq!(
                ErrPacket::parse(&enc).as_ref(),
                Ok(&e),
                "encode(parse(x)) parses back equal"
            );
            let canonical =
                data.len() >= 9 && data[3] == b'#' && std::str::from_utf8(&data[9..]).is_ok();
            if canonical {
                assert_eq!(
                    enc, data,
                    "a 4.1-form ERR with a UTF-8 message encodes back byte-exact"
                );
            }
        }

        // Any ERR portcullis builds itself parses back to the same fields.
        if data.len() >= 7 {
            let code = u16::from_le_bytes([data[0], data[1]]);
            let state = [data[2], data[3], data[4], data[5], data[6]];
            let message = String::from_utf8_lossy(&data[7..]).into_owned();
            let e = ErrPacket::new(code, &state, message);
            assert_eq!(ErrPacket::parse(&e.encode()), Ok(e));
        }
    }
}

pub mod change_user {
    use portcullis::protocol::command::user_of_malformed;
    use portcullis::protocol::{Capabilities, ChangeUser, ParseError};

    /// COM_CHANGE_USER: the input is the client's capabilities (4 bytes,
    /// LE) then a payload. `ChangeUser::parse` never panics and never says
    /// "incomplete"; what it accepts encodes back byte for byte (but for an
    /// attribute length written longer than needed); `rebuild`
    /// either refuses or produces a payload that parses to exactly the
    /// fields asked for; fields built from the input encode to a payload
    /// that parses back to them, or are refused.
    pub fn check(data: &[u8]) {
        let Some((c, payload)) = data.split_first_chunk::<4>() else {
            return;
        };
        let caps = Capabilities(u32::from_le_bytes(*c));
        match ChangeUser::parse(payload, caps) {
            Ok(cu) => {
                let enc = cu.encode(caps).expect("what parses encodes");
                assert_eq!(
                    ChangeUser::parse(&enc, caps),
                    Ok(cu),
                    "parse(encode(x)) == x"
                );
                if enc != payload {
                    // Only a length written longer than it needs differs.
                    assert!(cu.connect_attrs.is_some() && enc.len() < payload.len());
                }
                let _ = cu.user_lossy();
                // A rewrite with the input's own bytes as plugin and answer.
                let plugin: Vec<u8> = payload
                    .iter()
                    .copied()
                    .filter(|&b| b != 0)
                    .take(32)
                    .collect();
                let auth = &payload[..payload.len().min(300)];
                if let Ok(out) = cu.rebuild(&plugin, auth, caps) {
                    let back = ChangeUser::parse(&out, caps).expect("a rebuilt payload parses");
                    assert_eq!(
                        back,
                        ChangeUser {
                            auth_plugin: Some(&plugin),
                            auth_data: auth,
                            ..cu
                        }
                    );
                }
                // The same plugin and answer again: the same bytes.
                if let Some(p) = cu.auth_plugin {
                    assert_eq!(cu.rebuild(p, cu.auth_data, caps), Ok(enc));
                }
            }
            Err(ParseError::Incomplete { .. }) => panic!("COM_CHANGE_USER parse said incomplete"),
            Err(ParseError::Malformed { .. }) => {
                let _ = user_of_malformed(payload);
            }
        }

        // Fields cut from the input, encoded and read back.
        let f: Vec<&[u8]> = payload.splitn(5, |&b| b == b'|').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or_default();
        let cu = ChangeUser {
            user: field(0),
            auth_data: field(1),
            database: field(2),
            charset: (c[0] & 1 == 1).then_some(u16::from(c[1])),
            auth_plugin: (c[0] & 2 == 2).then_some(field(3)),
            connect_attrs: (c[0] & 4 == 4).then_some(field(4)),
            rest: &[],
        };
        if let Ok(p) = cu.encode(caps) {
            assert_eq!(
                ChangeUser::parse(&p, caps),
                Ok(cu),
                "an encoded payload parses back"
            );
        }
    }
}

pub mod command_framing {
    use portcullis::protocol::command::{extent, CommandFraming, Extent, Scan};
    use portcullis::protocol::{HEADER_LEN, MAX_CHUNK};

    const WATCH: u8 = portcullis::protocol::COM_CHANGE_USER;

    /// The watched commands of a whole stream, by a plain walk over it
    /// (the rule of `protocol::command`, written the simple way).
    fn reference(s: &[u8]) -> Vec<usize> {
        let (mut pos, mut last_seq, mut last_nonempty, mut continued) = (0, 0u8, false, false);
        let mut found = Vec::new();
        while let Some(h) = s.get(pos..pos + HEADER_LEN) {
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            let seq = h[3];
            if !continued {
                let command = seq == 0 && !(last_seq == 255 && last_nonempty);
                if command && len > 0 && s.get(pos + HEADER_LEN) == Some(&WATCH) {
                    found.push(pos);
                    match extent(&s[pos..]) {
                        Extent::Complete {
                            len, last_seq: l, ..
                        } => {
                            pos += len;
                            last_seq = l;
                            last_nonempty = true;
                            continue;
                        }
                        Extent::Partial { .. } => break,
                    }
                }
                last_nonempty = len > 0;
            }
            last_seq = seq;
            continued = len == MAX_CHUNK;
            pos += HEADER_LEN + len;
        }
        found
    }

    /// The watched commands as the relay finds them: `s` handed over in
    /// reads of the given sizes (cycled), a short tail passed again in
    /// front of the next read, a watched packet taken whole.
    fn incremental(s: &[u8], sizes: &[usize]) -> Vec<usize> {
        let mut f = CommandFraming::new();
        let mut found = Vec::new();
        let (mut start, mut delivered) = (0, 0);
        let mut pending: Vec<u8> = Vec::new();
        let mut k = 0;
        while delivered < s.len() || !pending.is_empty() {
            if delivered < s.len() {
                let b = (delivered + sizes[k % sizes.len()]).min(s.len());
                k += 1;
                pending.extend_from_slice(&s[delivered..b]);
                delivered = b;
            }
            loop {
                match f.scan(&pending, WATCH) {
                    Scan::Done => {
                        start += pending.len();
                        pending.clear();
                        break;
                    }
                    Scan::Short { at } => {
                        assert!(pending.len() - at <= CommandFraming::MAX_SHORT);
                        assert!(at < pending.len(), "short with nothing kept");
                        start += at;
                        pending.drain(..at);
                        break;
                    }
                    Scan::Watched { at } => {
                        let from = start + at;
                        assert_eq!(s[from + 3], 0, "a command has seq 0");
                        assert_eq!(s[from + HEADER_LEN], WATCH);
                        found.push(from);
                        let Extent::Complete { len, last_seq, .. } = extent(&s[from..]) else {
                            return found;
                        };
                        f.after_packet(last_seq);
                        start = from + len;
                        delivered = delivered.max(start);
                        pending = s[start..delivered].to_vec();
                    }
                }
            }
            if delivered == s.len() && !pending.is_empty() {
                // The stream ended in a short tail: nothing more can come.
                assert!(pending.len() <= CommandFraming::MAX_SHORT);
                break;
            }
        }
        found
    }

    /// Command framing: the first two input bytes pick read sizes, the
    /// rest is the client's stream. However the stream is cut into reads,
    /// the commands found are the same, and the same as a plain walk over
    /// the whole stream finds.
    pub fn check(data: &[u8]) {
        let Some((cut, stream)) = data.split_first_chunk::<2>() else {
            return;
        };
        let want = reference(stream);
        assert_eq!(
            incremental(stream, &[stream.len().max(1)]),
            want,
            "one read"
        );
        assert_eq!(incremental(stream, &[1]), want, "byte by byte");
        let sizes = [usize::from(cut[0] % 8) + 1, usize::from(cut[1] % 64) + 1];
        assert_eq!(incremental(stream, &sizes), want, "reads of {sizes:?}");
    }
}

pub mod proxy_header {
    use std::net::{IpAddr, SocketAddr};

    use portcullis::proxy_protocol::{
        parse_v1, parse_v2, v2_header, v2_len, version, Inbound, Version, PEEK, V1_MAX, V2_FIXED,
    };

    /// The PROXY headers a trusted load balancer sends, as read before the
    /// greeting: `version`, `v2_len`, `parse_v2` and `parse_v1` never panic;
    /// a v1 line is looked for within 107 bytes; whatever a header is
    /// accepted as, portcullis's own v2 header of those addresses parses
    /// back to the same (the addresses it forwards to a backend are the ones
    /// it read), and so does the v1 line written from them.
    pub fn check(data: &[u8]) {
        let Some(first) = data.get(..PEEK) else {
            return;
        };
        let parsed = match version(first.try_into().expect("PEEK bytes")) {
            Err(_) => return,
            Ok(Version::V2) => {
                let Some(fixed) = data.get(..V2_FIXED) else {
                    return;
                };
                let fixed: &[u8; V2_FIXED] = fixed.try_into().expect("16 bytes");
                let Ok(len) = v2_len(fixed) else {
                    return;
                };
                let Some(body) = data.get(V2_FIXED..V2_FIXED + len) else {
                    return;
                };
                parse_v2(fixed, body)
            }
            Ok(Version::V1) => {
                let window = &data[..data.len().min(V1_MAX)];
                let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
                    return;
                };
                parse_v1(&data[..end + 2])
            }
        };
        if let Ok(Inbound::Proxied {
            source,
            destination,
        }) = parsed
        {
            if source.is_ipv4() == destination.is_ipv4() {
                assert_eq!(
                    round_trip_v2(source, destination),
                    parsed.clone(),
                    "portcullis's own v2 header of what it read"
                );
                let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                let line = format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                );
                assert_eq!(parse_v1(line.as_bytes()), parsed, "{line:?}");
            }
        }
        // Any pair of addresses portcullis sends a backend reads back.
        if data.len() >= 36 {
            let ip = |b: &[u8]| IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes"));
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            let src = SocketAddr::new(ip(&data[0..16]), port(&data[32..34]));
            let dst = SocketAddr::new(ip(&data[16..32]), port(&data[34..36]));
            assert_eq!(
                round_trip_v2(src, dst),
                Ok(Inbound::Proxied {
                    source: src,
                    destination: dst
                })
            );
        }
    }

    fn round_trip_v2(
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Inbound, portcullis::proxy_protocol::HeaderError> {
        let h = v2_header(Some(src), Some(dst));
        let fixed: &[u8; V2_FIXED] = h[..V2_FIXED].try_into().expect("16 bytes");
        let len = v2_len(fixed)?;
        parse_v2(fixed, &h[V2_FIXED..V2_FIXED + len])
    }
}
