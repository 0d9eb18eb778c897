//! Server greeting: `Greeting::parse`, then `set_ssl` flipping CLIENT_SSL and
//! back must restore the exact bytes, and touch nothing but that bit.
//! Also: portcullis's own greeting (`build_own`) always parses back.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::greeting::check(data));
