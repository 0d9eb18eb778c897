//! ERR packets: `ErrPacket::parse` never panics, `parse(encode(parse(x)))`
//! equals `parse(x)`, `encode(parse(x)) == x` for a 4.1-form ERR with a
//! UTF-8 message, and any constructed ERR packet parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::protocol::ErrPacket;

fuzz_target!(|data: &[u8]| {
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
});
