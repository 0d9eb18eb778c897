//! Packet framing: `split_packet` on arbitrary bytes. When it succeeds,
//! `header.len + 4 == consumed <= input length`; when it asks for more, the
//! count is exact; it never reports "malformed". `write_packet` frames an
//! arbitrary payload that `split_packet` reads back.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::packet_framing::check(data));
