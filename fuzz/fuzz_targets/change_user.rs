//! COM_CHANGE_USER: `ChangeUser::parse` (input: the client's capabilities,
//! 4 bytes LE, then the payload) never panics; what it accepts encodes back
//! byte for byte (but for an overlong attribute length); `rebuild` and
//! `encode` produce only payloads that parse back to the fields they were
//! given.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::change_user::check(data));
