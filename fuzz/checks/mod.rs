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
