//! Server greeting: `Greeting::parse`, then `set_ssl` flipping CLIENT_SSL and
//! back must restore the exact bytes, and touch nothing but that bit.
//! Also: portcullis's own greeting (`build_own`) always parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::protocol::greeting::build_own;
use portcullis::protocol::{Capabilities, Greeting};

fuzz_target!(|data: &[u8]| {
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
});
