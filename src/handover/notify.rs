//! systemd's readiness protocol (`sd_notify`): one datagram to
//! `$NOTIFY_SOCKET`, when it is set (`Type=notify`). A process that took
//! over sends `MAINPID=` with its own id, so that systemd follows it
//! (`NotifyAccess=all`: it is not the process systemd started).

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to systemd; nothing without
/// `$NOTIFY_SOCKET`. A failure is logged, never fatal.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = target.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
            None => s.send_to(state.as_bytes(), &target),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = %target.to_string_lossy(), "cannot notify systemd");
    }
}

/// What a process tells systemd once it serves: ready, and, after a
/// hand-over, that it is the main process now.
pub fn ready(took_over: bool) {
    if took_over {
        notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        notify("READY=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        // The only test in this binary that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready(true);
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 128];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("MAINPID={}\nREADY=1", std::process::id())
        );
    }
}
