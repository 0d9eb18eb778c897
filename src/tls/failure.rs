//! Why a TLS handshake failed, as a [`TlsFailure`] with a stable
//! [`label`](TlsFailure::label): the `reason` of logs, of
//! `portcullis_tls_failures_total` and of the ERR a refused client gets.
//! Labels never change once released (docs/operations.md lists them).

use std::fmt;
use std::io;

use rustls::CertificateError;

use super::anchors::AnchorOutsideValidity;

/// The other end of a TLS connection, as far as its failures go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A client of a listener (portcullis is the TLS server).
    Client,
    /// A backend reached with outbound TLS (portcullis is the TLS client).
    Backend,
}

/// Why a TLS handshake (or a certificate verdict taken after it) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// No client certificate where one is required.
    NoClientCert,
    /// The certificate does not chain to the configured CA bundle.
    UnknownCa,
    /// The certificate is listed in a CRL.
    Revoked,
    /// The certificate is past its not-after.
    Expired,
    /// The certificate is before its not-before.
    NotYetValid,
    /// The chain ends at a CA certificate of the bundle that is past its
    /// not-after: no longer a trust anchor.
    CaExpired,
    /// The chain ends at a CA certificate of the bundle that is before its
    /// not-before: not a trust anchor yet.
    CaNotYetValid,
    /// No loaded CRL covers the certificate's issuer.
    UnknownRevocationStatus,
    /// A CRL that covers the certificate is past its nextUpdate.
    CrlExpired,
    /// The certificate is not valid for the purpose (its EKU).
    WrongKeyUsage,
    /// The certificate is not valid for the name (outbound: the backend's
    /// `server_name`).
    WrongName,
    /// Any other certificate problem.
    BadCertificate,
    /// The peer sent an alert and aborted the handshake.
    Alert { from: Peer },
    /// Any other TLS protocol error (no common version or cipher, garbage).
    Protocol,
    /// The client closed the connection during the handshake.
    Closed,
    /// The handshake's socket timed out.
    Timeout,
    /// Any other socket error.
    Io,
}

impl TlsFailure {
    /// Every failure, in the order docs/operations.md lists them.
    pub const ALL: [TlsFailure; 18] = [
        TlsFailure::NoClientCert,
        TlsFailure::UnknownCa,
        TlsFailure::Revoked,
        TlsFailure::Expired,
        TlsFailure::NotYetValid,
        TlsFailure::CaExpired,
        TlsFailure::CaNotYetValid,
        TlsFailure::CrlExpired,
        TlsFailure::UnknownRevocationStatus,
        TlsFailure::WrongKeyUsage,
        TlsFailure::WrongName,
        TlsFailure::BadCertificate,
        TlsFailure::Alert { from: Peer::Client },
        TlsFailure::Alert {
            from: Peer::Backend,
        },
        TlsFailure::Protocol,
        TlsFailure::Closed,
        TlsFailure::Timeout,
        TlsFailure::Io,
    ];

    /// The stable label of logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            TlsFailure::NoClientCert => "no_client_cert",
            TlsFailure::UnknownCa => "unknown_ca",
            TlsFailure::Revoked => "revoked",
            TlsFailure::Expired => "expired",
            TlsFailure::NotYetValid => "not_yet_valid",
            TlsFailure::CaExpired => "ca_expired",
            TlsFailure::CaNotYetValid => "ca_not_yet_valid",
            TlsFailure::UnknownRevocationStatus => "unknown_revocation_status",
            TlsFailure::CrlExpired => "crl_expired",
            TlsFailure::WrongKeyUsage => "wrong_key_usage",
            TlsFailure::WrongName => "wrong_name",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Alert { from: Peer::Client } => "alert_from_client",
            TlsFailure::Alert {
                from: Peer::Backend,
            } => "alert_from_backend",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Closed => "client_closed",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Io => "io",
        }
    }

    /// Why a handshake with `peer` failed, from the I/O error it ended with
    /// (rustls errors travel inside it).
    pub fn from_io(err: &io::Error, peer: Peer) -> TlsFailure {
        match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(tls) => TlsFailure::from_rustls(tls, peer),
            None => match err.kind() {
                io::ErrorKind::UnexpectedEof => TlsFailure::Closed,
                io::ErrorKind::TimedOut => TlsFailure::Timeout,
                _ => TlsFailure::Io,
            },
        }
    }

    /// Why a handshake with `peer` failed, from the rustls error.
    pub fn from_rustls(err: &rustls::Error, peer: Peer) -> TlsFailure {
        match err {
            rustls::Error::NoCertificatesPresented => TlsFailure::NoClientCert,
            rustls::Error::InvalidCertificate(c) => TlsFailure::from_certificate_error(c),
            rustls::Error::AlertReceived(_) => TlsFailure::Alert { from: peer },
            _ => TlsFailure::Protocol,
        }
    }

    /// Why a certificate was refused.
    pub fn from_certificate_error(err: &CertificateError) -> TlsFailure {
        match err {
            CertificateError::UnknownIssuer => TlsFailure::UnknownCa,
            CertificateError::Revoked => TlsFailure::Revoked,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            CertificateError::UnknownRevocationStatus => TlsFailure::UnknownRevocationStatus,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => TlsFailure::CrlExpired,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                TlsFailure::WrongKeyUsage
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::WrongName
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<AnchorOutsideValidity>()
            {
                Some(a) if a.expired => TlsFailure::CaExpired,
                Some(_) => TlsFailure::CaNotYetValid,
                None => TlsFailure::BadCertificate,
            },
            _ => TlsFailure::BadCertificate,
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A stable label for why a TLS handshake with a client failed, as used in
/// logs and the `reason` label of the TLS failure metric
/// ([`TlsFailure::from_io`]).
pub fn failure_reason(err: &io::Error) -> &'static str {
    TlsFailure::from_io(err, Peer::Client).label()
}

/// The stable label for a rustls error of a client handshake (see
/// [`failure_reason`]).
pub fn error_reason(err: &rustls::Error) -> &'static str {
    TlsFailure::from_rustls(err, Peer::Client).label()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_every_one_is_documented() {
        let ops = include_str!("../../docs/operations.md");
        let table = &ops[ops
            .find("### TLS failure `reason` values")
            .expect("docs/operations.md has the TLS failure reason table")..];
        let mut seen = std::collections::HashSet::new();
        for f in TlsFailure::ALL {
            assert!(seen.insert(f.label()), "{f:?}: label used twice");
            assert!(
                table.contains(&format!("`{}`", f.label())),
                "{f:?}: `{}` missing from docs/operations.md",
                f.label()
            );
        }
    }

    #[test]
    fn the_wrappers_give_todays_labels() {
        let cases = [
            (rustls::Error::NoCertificatesPresented, "no_client_cert"),
            (
                rustls::Error::InvalidCertificate(CertificateError::Revoked),
                "revoked",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "wrong_name",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
                "bad_certificate",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "alert_from_client",
            ),
            (rustls::Error::DecryptError, "protocol"),
        ];
        for (e, label) in cases {
            assert_eq!(error_reason(&e), label, "{e:?}");
            assert_eq!(
                failure_reason(&io::Error::new(io::ErrorKind::InvalidData, e)),
                label
            );
        }
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(
            TlsFailure::from_rustls(&alert, Peer::Backend).label(),
            "alert_from_backend"
        );
        for (kind, label) in [
            (io::ErrorKind::UnexpectedEof, "client_closed"),
            (io::ErrorKind::TimedOut, "timeout"),
            (io::ErrorKind::ConnectionReset, "io"),
        ] {
            assert_eq!(failure_reason(&io::Error::from(kind)), label);
        }
    }
}
