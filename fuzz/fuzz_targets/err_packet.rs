//! ERR packets: `ErrPacket::parse` never panics, `parse(encode(parse(x)))`
//! equals `parse(x)`, `encode(parse(x)) == x` for a 4.1-form ERR with a
//! UTF-8 message, and any constructed ERR packet parses back equal.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::err_packet::check(data));
