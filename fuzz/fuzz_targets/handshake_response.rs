//! The client's first packet: `HandshakeResponse::parse`,
//! `client_capabilities`, `is_ssl_request` and `set_ssl` never panic, and
//! agree with one another.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::handshake_response::check(data));
