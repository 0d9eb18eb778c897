//! Instant-failover redirect (docs/failover.md): who is redirected now, and
//! the ERR packet that sends a client elsewhere. The settings themselves
//! are data, in [`crate::config::failover`] (re-exported here).
//!
//! The packet is the one the MariaDB instant-failover design specified (it
//! never shipped in a server): ERR `ff`, the error code, `#HY000`, message
//! `|<human text>|<host>:<port>`. Redirect-aware clients follow the target;
//! others show the human text, which therefore names the target too.

pub use crate::config::failover::{
    validate_target, FailoverMode, FailoverSettings, FailoverTarget, DEFAULT_ERROR_CODE,
    MAX_MESSAGE_LEN,
};
use crate::protocol::ErrPacket;

impl FailoverSettings {
    /// Whether a client of a listener of this kind is redirected now.
    pub fn applies(&self, unix_listener: bool, admin_listener: bool) -> bool {
        match self.mode {
            FailoverMode::Off => false,
            FailoverMode::On => !unix_listener && !admin_listener,
            FailoverMode::All => true,
        }
    }

    /// The redirect ERR packet to a fixed `host:port` target; `None` without
    /// one (no target, or `"primary"`, which is looked up per client).
    pub fn packet(&self) -> Option<ErrPacket> {
        match self.target.as_ref()? {
            FailoverTarget::Address(a) => Some(self.packet_to(a)),
            FailoverTarget::Primary => None,
        }
    }

    /// The redirect ERR packet sending clients to `target` (`host:port`).
    pub fn packet_to(&self, target: &str) -> ErrPacket {
        ErrPacket::new(self.error_code, b"HY000", self.message_for(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(target: &str) -> FailoverSettings {
        FailoverSettings {
            mode: FailoverMode::On,
            target: Some(target.into()),
            message: None,
            error_code: DEFAULT_ERROR_CODE,
        }
    }

    #[test]
    fn packet_is_byte_exact() {
        let mut s = on("db2.example.net:3307");
        s.message = Some("moved".into());
        let p = s.packet().unwrap().encode();
        let mut want = vec![0xff, 0x64, 0x10, b'#'];
        want.extend_from_slice(b"HY000|moved|db2.example.net:3307");
        assert_eq!(p, want);
        s.error_code = 4200;
        assert_eq!(&s.packet().unwrap().encode()[1..3], &[0x68, 0x10]);
    }

    #[test]
    fn default_text_names_the_target() {
        let p = on("db2:3307").packet().unwrap();
        assert_eq!(
            p.message,
            "|This database is being taken over; connect to db2:3307 instead|db2:3307"
        );
        assert!(on("primary").packet().is_none(), "looked up per client");
    }

    #[test]
    fn exemptions() {
        let s = on("db2:1");
        assert!(s.applies(false, false));
        assert!(!s.applies(true, false));
        assert!(!s.applies(false, true));
        let all = FailoverSettings {
            mode: FailoverMode::All,
            ..s.clone()
        };
        assert!(all.applies(true, true));
        let off = FailoverSettings {
            mode: FailoverMode::Off,
            ..s
        };
        assert!(!off.applies(false, false));
    }
}
