//! Per-test PKI generated with rcgen (ECDSA P-256) into a temporary directory.
//!
//! Files (all PEM, keys PKCS#8) in [`Pki::dir`]:
//!
//! | file | content |
//! |---|---|
//! | `ca.pem`, `ca-key.pem` | test CA (serial [`CA_SERIAL`]) |
//! | `other-ca.pem`, `other-ca-key.pem` | an unrelated CA (serial [`OTHER_CA_SERIAL`]) |
//! | `server.pem`, `server-key.pem` | server leaf, SANs `localhost`, `127.0.0.1`, `::1`, signed by the CA |
//! | `server-chain.pem` | server leaf followed by the CA |
//! | `client-<name>.pem`, `client-<name>-key.pem` | clients `app`, `repl`, `revoked`, `expired` (CA), `other` (other CA) |
//! | `crl.pem` | CRL by the CA revoking `revoked`, next update in 30 days |
//! | `crl-expired.pem` | CRL by the CA revoking `revoked`, next update yesterday |
//! | `crl-empty.pem` | CRL by the CA revoking nothing, next update in 30 days |
//!
//! Client certificates with URI (SPIFFE) and DNS SANs: [`Pki::issue_client_sans`].
//!
//! More CAs per test: [`Pki::root_ca`] (any validity) and [`Pki::intermediate`] (issued by the
//! CA), each a [`TestCa`] that issues client certificates and CRLs.
//!
//! RSA is not offered: rcgen cannot generate RSA keys with the `ring` backend.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use tempfile::TempDir;

pub const CA_SERIAL: u64 = 1;
pub const OTHER_CA_SERIAL: u64 = 2;
pub const SERVER_SERIAL: u64 = 10;
pub const APP_SERIAL: u64 = 100;
pub const REPL_SERIAL: u64 = 101;
pub const REVOKED_SERIAL: u64 = 102;
pub const EXPIRED_SERIAL: u64 = 103;
pub const OTHER_SERIAL: u64 = 104;

pub const CA_CN: &str = "Portcullis Test CA";
pub const OTHER_CA_CN: &str = "Portcullis Other CA";
pub const SERVER_CN: &str = "localhost";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A certificate and its private key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Short name, used in the file names (`client-<name>.pem`).
    pub name: String,
    /// Subject common name.
    pub cn: String,
    /// PEM certificate (just the leaf).
    pub cert: PathBuf,
    /// PEM PKCS#8 private key.
    pub key: PathBuf,
    pub serial: u64,
}

/// The server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCert {
    /// PEM leaf certificate.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key.
    pub key: PathBuf,
    /// PEM leaf followed by the CA certificate.
    pub chain: PathBuf,
    pub serial: u64,
}

/// Which CA signs a certificate issued with [`Pki::issue_client_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Ca,
    OtherCa,
    /// A CA with exactly the CA's name but a key of its own: what it signs
    /// names the right issuer and carries a signature the CA never made.
    Impostor,
}

/// A CA made for one test ([`Pki::root_ca`], [`Pki::intermediate`]): it
/// issues client certificates and CRLs into the PKI's directory.
pub struct TestCa {
    /// `<name>.pem`.
    pub cert: PathBuf,
    /// `<name>-key.pem`.
    pub key: PathBuf,
    pub cn: String,
    pub serial: u64,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// Issues a client certificate (valid from yesterday for a year).
    pub fn issue_client(&self, name: &str, cn: &str, serial: u64) -> ClientCert {
        let now = SystemTime::now();
        issue(
            &self.dir,
            &self.issuer,
            name,
            cn,
            serial,
            now - DAY,
            now + 365 * DAY,
        )
    }

    /// Writes a CRL revoking `revoked_serials`, dated `this_update`, next
    /// update in 30 days, with CRL number `crl_number`.
    pub fn write_crl(
        &self,
        file_name: &str,
        revoked_serials: &[u64],
        this_update: SystemTime,
        crl_number: u64,
    ) -> PathBuf {
        write_crl_at(
            &self.dir,
            &self.issuer,
            file_name,
            revoked_serials,
            this_update,
            SystemTime::now() + 30 * DAY,
            crl_number,
        )
    }
}

/// The per-test PKI; the temporary directory is removed on drop.
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `ca-key.pem`.
    pub ca_key: PathBuf,
    /// `other-ca.pem`: an unrelated CA.
    pub other_ca: PathBuf,
    /// `other-ca-key.pem`.
    pub other_ca_key: PathBuf,
    pub server: ServerCert,
    /// CN=app, signed by the CA.
    pub app: ClientCert,
    /// CN=repl, signed by the CA.
    pub repl: ClientCert,
    /// CN=revoked, signed by the CA, listed in `crl.pem` and `crl-expired.pem`.
    pub revoked: ClientCert,
    /// CN=expired, signed by the CA, not_after yesterday.
    pub expired: ClientCert,
    /// CN=other, signed by the other CA.
    pub other: ClientCert,
    /// `crl.pem`: revokes `revoked`, valid for 30 more days.
    pub crl: PathBuf,
    /// `crl-expired.pem`: revokes `revoked`, next update yesterday.
    pub crl_expired: PathBuf,
    /// `crl-empty.pem`: revokes nothing, valid for 30 more days.
    pub crl_empty: PathBuf,
    ca_issuer: CertifiedIssuer<'static, KeyPair>,
    other_issuer: CertifiedIssuer<'static, KeyPair>,
    impostor_issuer: CertifiedIssuer<'static, KeyPair>,
    next_crl_number: AtomicU64,
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn new_key() -> KeyPair {
    KeyPair::generate().expect("generate an ECDSA P-256 key")
}

fn make_ca(cn: &str, serial: u64) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let now = SystemTime::now();
    let key = new_key();
    let key_pem = key.serialize_pem();
    let params = ca_params(cn, serial, now - DAY, now + 3650 * DAY);
    let issuer = CertifiedIssuer::self_signed(params, key)
        .unwrap_or_else(|e| panic!("self-sign CA {cn}: {e}"));
    (issuer, key_pem)
}

/// Parameters of a CA certificate (CA:TRUE, keyCertSign, cRLSign).
fn ca_params(
    cn: &str,
    serial: u64,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "portcullis tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from(serial));
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params
}

/// Issues a client certificate (EKU clientAuth) and writes `client-<name>.pem` / `-key.pem`.
fn issue(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    cn: &str,
    serial: u64,
    not_before: SystemTime,
    not_after: SystemTime,
) -> ClientCert {
    issue_with_sans(
        dir,
        issuer,
        name,
        Some(cn),
        serial,
        (not_before, not_after),
        Vec::new(),
    )
}

/// A client certificate (EKU clientAuth), with a CN unless `cn` is `None`,
/// and `sans` in its SubjectAltName.
fn issue_with_sans(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    cn: Option<&str>,
    serial: u64,
    (not_before, not_after): (SystemTime, SystemTime),
    sans: Vec<SanType>,
) -> ClientCert {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    match cn {
        Some(cn) => params.distinguished_name.push(DnType::CommonName, cn),
        // Some subject is still needed: an organization only.
        None => params
            .distinguished_name
            .push(DnType::OrganizationName, "Portcullis Test Workloads"),
    }
    params.subject_alt_names = sans;
    params.serial_number = Some(SerialNumber::from(serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let key = new_key();
    let cert = params
        .signed_by(&key, issuer)
        .unwrap_or_else(|e| panic!("sign client certificate {name}: {e}"));
    ClientCert {
        name: name.to_string(),
        cn: cn.unwrap_or_default().to_string(),
        cert: write(dir, &format!("client-{name}.pem"), &cert.pem()),
        key: write(dir, &format!("client-{name}-key.pem"), &key.serialize_pem()),
        serial,
    }
}

/// Issues a server certificate (SANs `localhost`, `127.0.0.1`, `::1`, EKU serverAuth, valid
/// from yesterday for a year) and writes `<prefix>.pem`, `<prefix>-key.pem` and
/// `<prefix>-chain.pem` (leaf + issuer).
fn issue_server(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    prefix: &str,
    serial: u64,
) -> ServerCert {
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".into(),
        "::1".into(),
    ])
    .expect("server certificate SANs");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_CN);
    params.serial_number = Some(SerialNumber::from(serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = (SystemTime::now() - DAY).into();
    params.not_after = (SystemTime::now() + 365 * DAY).into();
    let key = new_key();
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign the server certificate");
    ServerCert {
        cert: write(dir, &format!("{prefix}.pem"), &cert.pem()),
        key: write(dir, &format!("{prefix}-key.pem"), &key.serialize_pem()),
        chain: write(
            dir,
            &format!("{prefix}-chain.pem"),
            &format!("{}{}", cert.pem(), issuer.pem()),
        ),
        serial,
    }
}

/// Writes a CRL signed by `issuer`; this_update is a minute ago, or a day before a past
/// `next_update`.
fn write_crl(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    file_name: &str,
    revoked_serials: &[u64],
    next_update: SystemTime,
    crl_number: u64,
) -> PathBuf {
    let now = SystemTime::now();
    let this_update = if next_update > now {
        now - Duration::from_secs(60)
    } else {
        next_update - DAY
    };
    write_crl_at(
        dir,
        issuer,
        file_name,
        revoked_serials,
        this_update,
        next_update,
        crl_number,
    )
}

/// Writes a CRL signed by `issuer` with every date and the number given.
fn write_crl_at(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    file_name: &str,
    revoked_serials: &[u64],
    this_update: SystemTime,
    next_update: SystemTime,
    crl_number: u64,
) -> PathBuf {
    let params = CertificateRevocationListParams {
        this_update: this_update.into(),
        next_update: next_update.into(),
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked_serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: this_update.into(),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .unwrap_or_else(|e| panic!("sign CRL {file_name}: {e}"));
    write(dir, file_name, &crl.pem().expect("PEM-encode the CRL"))
}

/// Converts the big-endian bytes of a DER serial (as from x509-parser's `raw_serial()`) to u64.
pub fn serial_from_der(bytes: &[u8]) -> u64 {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(
        trimmed.len() <= 8,
        "serial {bytes:02x?} does not fit in u64"
    );
    trimmed
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// Generates the whole PKI (a few milliseconds).
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("pcpki-")
            .tempdir()
            .expect("create the PKI temporary directory");
        let d = dir.path();

        let (ca_issuer, ca_key_pem) = make_ca(CA_CN, CA_SERIAL);
        let ca = write(d, "ca.pem", &ca_issuer.pem());
        let ca_key = write(d, "ca-key.pem", &ca_key_pem);
        let (other_issuer, other_key_pem) = make_ca(OTHER_CA_CN, OTHER_CA_SERIAL);
        let other_ca = write(d, "other-ca.pem", &other_issuer.pem());
        let other_ca_key = write(d, "other-ca-key.pem", &other_key_pem);
        let (impostor_issuer, _) = make_ca(CA_CN, CA_SERIAL);

        let server = issue_server(d, &ca_issuer, "server", SERVER_SERIAL);

        let now = SystemTime::now();
        let year = now + 365 * DAY;
        let app = issue(d, &ca_issuer, "app", "app", APP_SERIAL, now - DAY, year);
        let repl = issue(d, &ca_issuer, "repl", "repl", REPL_SERIAL, now - DAY, year);
        let revoked = issue(
            d,
            &ca_issuer,
            "revoked",
            "revoked",
            REVOKED_SERIAL,
            now - DAY,
            year,
        );
        let expired = issue(
            d,
            &ca_issuer,
            "expired",
            "expired",
            EXPIRED_SERIAL,
            now - 30 * DAY,
            now - DAY,
        );
        let other = issue(
            d,
            &other_issuer,
            "other",
            "other",
            OTHER_SERIAL,
            now - DAY,
            year,
        );

        let crl = write_crl(
            d,
            &ca_issuer,
            "crl.pem",
            &[REVOKED_SERIAL],
            now + 30 * DAY,
            1,
        );
        let crl_expired = write_crl(
            d,
            &ca_issuer,
            "crl-expired.pem",
            &[REVOKED_SERIAL],
            now - DAY,
            2,
        );
        let crl_empty = write_crl(d, &ca_issuer, "crl-empty.pem", &[], now + 30 * DAY, 3);

        Pki {
            dir,
            ca,
            ca_key,
            other_ca,
            other_ca_key,
            server,
            app,
            repl,
            revoked,
            expired,
            other,
            crl,
            crl_expired,
            crl_empty,
            ca_issuer,
            other_issuer,
            impostor_issuer,
            next_crl_number: AtomicU64::new(4),
        }
    }

    /// The directory holding all files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// All predefined client certificates.
    pub fn clients(&self) -> [&ClientCert; 5] {
        [
            &self.app,
            &self.repl,
            &self.revoked,
            &self.expired,
            &self.other,
        ]
    }

    /// Issues a client certificate signed by the CA, valid from yesterday for a year, written to
    /// `client-<name>.pem` / `client-<name>-key.pem`.
    pub fn issue_client(&self, name: &str, cn: &str, serial: u64) -> ClientCert {
        let now = SystemTime::now();
        self.issue_client_with(name, cn, serial, Signer::Ca, now - DAY, now + 365 * DAY)
    }

    /// Issues a client certificate signed by the CA (valid from yesterday
    /// for a year) with a CN unless `cn` is `None`, and URI and DNS names in
    /// its SubjectAltName (a SPIFFE ID is a URI SAN).
    pub fn issue_client_sans(
        &self,
        name: &str,
        cn: Option<&str>,
        serial: u64,
        uris: &[&str],
        dns: &[&str],
    ) -> ClientCert {
        let now = SystemTime::now();
        let sans = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().expect("URI SAN is IA5")))
            .chain(
                dns.iter()
                    .map(|d| SanType::DnsName((*d).try_into().expect("DNS SAN is IA5"))),
            )
            .collect();
        issue_with_sans(
            self.dir(),
            &self.ca_issuer,
            name,
            cn,
            serial,
            (now - DAY, now + 365 * DAY),
            sans,
        )
    }

    /// Issues a client certificate (EKU clientAuth) with explicit signer and validity.
    pub fn issue_client_with(
        &self,
        name: &str,
        cn: &str,
        serial: u64,
        signer: Signer,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> ClientCert {
        issue(
            self.dir(),
            self.issuer(signer),
            name,
            cn,
            serial,
            not_before,
            not_after,
        )
    }

    /// Writes a CRL signed by the CA revoking `revoked_serials` (reason keyCompromise) with the
    /// given next update (may be in the past: this_update is then a day before it). Each call
    /// gets a higher CRL number.
    pub fn write_crl(
        &self,
        file_name: &str,
        revoked_serials: &[u64],
        next_update: SystemTime,
    ) -> PathBuf {
        self.write_crl_by(Signer::Ca, file_name, revoked_serials, next_update)
    }

    /// [`write_crl`](Pki::write_crl) signed by `signer`.
    pub fn write_crl_by(
        &self,
        signer: Signer,
        file_name: &str,
        revoked_serials: &[u64],
        next_update: SystemTime,
    ) -> PathBuf {
        let crl_number = self.next_crl_number.fetch_add(1, Ordering::SeqCst);
        write_crl(
            self.dir(),
            self.issuer(signer),
            file_name,
            revoked_serials,
            next_update,
            crl_number,
        )
    }

    /// Issues another server certificate signed by `signer`, written as `<prefix>.pem`,
    /// `<prefix>-key.pem` and `<prefix>-chain.pem`.
    pub fn issue_server(&self, prefix: &str, serial: u64, signer: Signer) -> ServerCert {
        issue_server(self.dir(), self.issuer(signer), prefix, serial)
    }

    /// [`write_crl`](Pki::write_crl) by the CA with every date and the
    /// CRL number given (next update 30 days after `this_update`).
    pub fn write_crl_at(
        &self,
        file_name: &str,
        revoked_serials: &[u64],
        this_update: SystemTime,
        crl_number: u64,
    ) -> PathBuf {
        write_crl_at(
            self.dir(),
            &self.ca_issuer,
            file_name,
            revoked_serials,
            this_update,
            this_update + 30 * DAY,
            crl_number,
        )
    }

    /// A self-signed root CA with the validity given, written as
    /// `<name>.pem` / `<name>-key.pem`.
    pub fn root_ca(
        &self,
        name: &str,
        cn: &str,
        serial: u64,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> TestCa {
        let key = new_key();
        let key_pem = key.serialize_pem();
        let issuer =
            CertifiedIssuer::self_signed(ca_params(cn, serial, not_before, not_after), key)
                .unwrap_or_else(|e| panic!("self-sign CA {cn}: {e}"));
        self.test_ca(name, cn, serial, issuer, &key_pem)
    }

    /// An intermediate CA issued by the CA (valid from yesterday for five
    /// years), written as `<name>.pem` / `<name>-key.pem`.
    pub fn intermediate(&self, name: &str, cn: &str, serial: u64) -> TestCa {
        let now = SystemTime::now();
        let key = new_key();
        let key_pem = key.serialize_pem();
        let mut params = ca_params(cn, serial, now - DAY, now + 5 * 365 * DAY);
        params.use_authority_key_identifier_extension = true;
        let issuer = CertifiedIssuer::signed_by(params, key, &self.ca_issuer)
            .unwrap_or_else(|e| panic!("sign intermediate CA {cn}: {e}"));
        self.test_ca(name, cn, serial, issuer, &key_pem)
    }

    fn test_ca(
        &self,
        name: &str,
        cn: &str,
        serial: u64,
        issuer: CertifiedIssuer<'static, KeyPair>,
        key_pem: &str,
    ) -> TestCa {
        TestCa {
            cert: write(self.dir(), &format!("{name}.pem"), &issuer.pem()),
            key: write(self.dir(), &format!("{name}-key.pem"), key_pem),
            cn: cn.to_string(),
            serial,
            dir: self.dir().to_path_buf(),
            issuer,
        }
    }

    fn issuer(&self, signer: Signer) -> &CertifiedIssuer<'static, KeyPair> {
        match signer {
            Signer::Ca => &self.ca_issuer,
            Signer::OtherCa => &self.other_issuer,
            Signer::Impostor => &self.impostor_issuer,
        }
    }
}
