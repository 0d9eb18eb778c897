//! Instant-failover redirect (docs/failover.md): who is redirected now, in
//! which form, and the ERR packet that sends a client elsewhere. The
//! settings themselves are data, in [`crate::config::failover`]
//! (re-exported here).
//!
//! Two forms. The ERR packet is the one the MariaDB instant-failover design
//! specified (it never shipped in a server): ERR `ff`, the error code,
//! `#HY000`, message `|<human text>|<host>:<port>`; clients show the human
//! text, which therefore names the target too. `redirect_url` is what
//! MariaDB shipped instead (11.3, MDEV-15935): the client authenticates
//! as usual and the OK that ends authentication carries the session
//! tracker `redirect_url=mariadb://host:port`, which MariaDB Connector/J
//! follows ([`crate::protocol::ok`]; the Node.js connector tries to,
//! docs/compatibility.md).

use crate::config::failover::version_at_least;
pub use crate::config::failover::{
    validate_target, FailoverMode, FailoverSettings, FailoverStyle, FailoverTarget, Follower,
    RedirectForm, BUILTIN_FOLLOWERS, DEFAULT_ERROR_CODE, MAX_MESSAGE_LEN,
};
use crate::protocol::ErrPacket;

/// What a redirected client showed portcullis about itself, for choosing
/// the form ([`FailoverSettings::form_for`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientTraits<'a> {
    /// It announced CLIENT_SESSION_TRACK: it can be told `redirect_url`.
    pub session_track: bool,
    /// Its leg is TLS. The known followers follow only over a TLS
    /// connection that verifies the server (their `permitRedirect`
    /// default), so a plaintext one would ignore the tracker.
    pub tls: bool,
    /// Its connection attributes (`_client_name`, `_client_version`, …).
    pub attributes: &'a [(&'a [u8], &'a [u8])],
}

/// The `mariadb://` URL a `host:port` target is sent as.
pub fn redirect_url(target: &str) -> String {
    format!("mariadb://{target}")
}

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

    /// The form a client is redirected in. `error`: always the ERR packet.
    /// `redirect_url`: the tracker for every client that announced
    /// CLIENT_SESSION_TRACK. `both`: the tracker only for a known follower
    /// ([`is_follower`](Self::is_follower)) over TLS; every modern
    /// connector announces session tracking, followers or not, so that
    /// alone does not say who follows.
    pub fn form_for(&self, client: &ClientTraits<'_>) -> RedirectForm {
        let url = match self.style {
            FailoverStyle::Error => false,
            FailoverStyle::RedirectUrl => client.session_track,
            FailoverStyle::Both => {
                client.session_track && client.tls && self.is_follower(client.attributes)
            }
        };
        if url {
            RedirectForm::RedirectUrl
        } else {
            RedirectForm::Error
        }
    }

    /// Whether connection attributes name a connector that follows
    /// `redirect_url`: [`BUILTIN_FOLLOWERS`] and the listener's
    /// `failover_followers`, by `_client_name` and `_client_version`.
    pub fn is_follower(&self, attributes: &[(&[u8], &[u8])]) -> bool {
        let attr = |key: &[u8]| attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let (Some(name), Some(version)) = (attr(b"_client_name"), attr(b"_client_version")) else {
            return false;
        };
        BUILTIN_FOLLOWERS.iter().any(|(n, min)| {
            name.eq_ignore_ascii_case(n.as_bytes()) && version_at_least(version, min)
        }) || self.followers.iter().any(|f| f.matches(name, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(target: &str) -> FailoverSettings {
        FailoverSettings {
            mode: FailoverMode::On,
            target: Some(target.into()),
            error_code: DEFAULT_ERROR_CODE,
            ..Default::default()
        }
    }

    fn client<'a>(
        session_track: bool,
        tls: bool,
        attributes: &'a [(&'a [u8], &'a [u8])],
    ) -> ClientTraits<'a> {
        ClientTraits {
            session_track,
            tls,
            attributes,
        }
    }

    const NODE: &[(&[u8], &[u8])] = &[
        (b"_client_name", b"MariaDB connector/Node"),
        (b"_client_version", b"3.5.4"),
        (b"_os", b"linux"),
    ];
    const OLD_NODE: &[(&[u8], &[u8])] = &[
        (b"_client_name", b"MariaDB connector/Node"),
        (b"_client_version", b"3.2.2"),
    ];
    const CONNECTOR_J: &[(&[u8], &[u8])] = &[
        (b"_client_name", b"MariaDB Connector/J"),
        (b"_client_version", b"3.5.3"),
    ];
    const CONNECTOR_J_2: &[(&[u8], &[u8])] = &[
        (b"_client_name", b"MariaDB Connector/J"),
        (b"_client_version", b"2.7.6"),
    ];
    const LIBMARIADB: &[(&[u8], &[u8])] = &[
        (b"_client_name", b"libmariadb"),
        (b"_client_version", b"3.3.20"),
    ];
    const R2DBC: &[(&[u8], &[u8])] = &[
        (b"_client_name", b"MariaDB Connector/R2DBC"),
        (b"_client_version", b"1.2.1"),
    ];

    #[test]
    fn the_form_follows_the_style_and_the_client() {
        use RedirectForm::{Error, RedirectUrl};
        let mut s = on("db2:3307");
        assert_eq!(s.form_for(&client(true, true, NODE)), Error, "style error");
        s.style = FailoverStyle::RedirectUrl;
        assert_eq!(s.form_for(&client(true, false, LIBMARIADB)), RedirectUrl);
        assert_eq!(s.form_for(&client(false, true, NODE)), Error, "no tracking");
        s.style = FailoverStyle::Both;
        for (attrs, want) in [
            (CONNECTOR_J, RedirectUrl),
            // Reconnects, then cannot run a command: not a follower by default.
            (NODE, Error),
            (OLD_NODE, Error),
            (CONNECTOR_J_2, Error),
            (LIBMARIADB, Error),
            (R2DBC, Error),
            (&[][..], Error),
        ] {
            assert_eq!(s.form_for(&client(true, true, attrs)), want, "{attrs:?}");
        }
        assert_eq!(
            s.form_for(&client(true, false, CONNECTOR_J)),
            Error,
            "plaintext"
        );
        assert_eq!(
            s.form_for(&client(false, true, CONNECTOR_J)),
            Error,
            "no tracking"
        );
        // The table is extended from the config.
        s.followers = vec![
            "MariaDB Connector/R2DBC >= 1.2".parse().unwrap(),
            "MariaDB connector/Node >= 3.2.3".parse().unwrap(),
        ];
        assert_eq!(s.form_for(&client(true, true, R2DBC)), RedirectUrl);
        assert_eq!(s.form_for(&client(true, true, NODE)), RedirectUrl);
        assert_eq!(s.form_for(&client(true, true, OLD_NODE)), Error);
        assert_eq!(redirect_url("db2:3307"), "mariadb://db2:3307");
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
