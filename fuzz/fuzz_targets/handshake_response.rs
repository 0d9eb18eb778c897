//! The client's first packet: `HandshakeResponse::parse`,
//! `client_capabilities`, `is_ssl_request` and `set_ssl` never panic, and
//! agree with one another.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::protocol::response::{
    client_capabilities, is_ssl_request, set_ssl, SSL_REQUEST_LEN,
};
use portcullis::protocol::{Capabilities, HandshakeResponse};

fuzz_target!(|data: &[u8]| {
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
});
