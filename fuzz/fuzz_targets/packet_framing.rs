//! Packet framing: `split_packet` on arbitrary bytes. When it succeeds,
//! `header.len + 4 == consumed <= input length`; when it asks for more, the
//! count is exact; it never reports "malformed". `write_packet` frames an
//! arbitrary payload that `split_packet` reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::protocol::packet::{split_packet, write_packet};
use portcullis::protocol::{PacketHeader, ParseError, HEADER_LEN, MAX_CHUNK};

fuzz_target!(|data: &[u8]| {
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
});
