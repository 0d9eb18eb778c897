//! PROXY protocol headers read from a trusted load balancer: the v1 and v2
//! parsers never panic, and what they accept round-trips through the v2
//! header portcullis sends a backend and the v1 line (`checks/mod.rs`).
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy_header::check(data));
