//! Command boundaries in the client's stream: `CommandFraming::scan` finds
//! the same COM_CHANGE_USER packets however the stream is cut into reads
//! (input: 2 bytes choosing read sizes, then the stream), and the same as a
//! plain walk over the whole stream.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::command_framing::check(data));
