//! Replays fuzz inputs in `cargo test`: every committed seed in
//! `fuzz/corpus/<target>/` and every input a fuzzer once failed on in
//! `fuzz/regressions/<target>/`, through the same invariant checks the
//! parser fuzz targets run (`fuzz/checks/mod.rs`). A fixed crash stays fixed.

#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// Every file under `fuzz/{corpus,regressions}/<target>/`, sorted.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for e in dir {
            let p = e.expect("read fuzz input dir").path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds for fuzz target {target}");
    for (path, data) in inputs {
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target}: {} fails: {msg}", path.display());
        }
    }
}

#[test]
fn proxy_header_inputs() {
    replay("proxy_header", checks::proxy_header::check);
}

#[test]
fn greeting_inputs() {
    replay("greeting", checks::greeting::check);
}

#[test]
fn handshake_response_inputs() {
    replay("handshake_response", checks::handshake_response::check);
}

#[test]
fn packet_framing_inputs() {
    replay("packet_framing", checks::packet_framing::check);
}

#[test]
fn err_packet_inputs() {
    replay("err_packet", checks::err_packet::check);
}

#[test]
fn change_user_inputs() {
    replay("change_user", checks::change_user::check);
}

#[test]
fn command_framing_inputs() {
    replay("command_framing", checks::command_framing::check);
}
