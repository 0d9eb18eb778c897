//! A throwaway PKI made with the `openssl` command line: RSA 2048 (the
//! issue's certificates; rcgen cannot make RSA keys with ring) or ECDSA
//! P-256. CA, server (SANs localhost, 127.0.0.1, ::1), one client and an
//! empty CRL, all PEM in one temporary directory.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcdsaP256,
}

impl KeyKind {
    pub fn label(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "RSA 2048",
            KeyKind::EcdsaP256 => "ECDSA P-256",
        }
    }

    fn newkey(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "-newkey rsa:2048",
            KeyKind::EcdsaP256 => "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
        }
    }
}

pub struct BenchPki {
    dir: TempDir,
    pub kind: KeyKind,
}

const SCRIPT: &str = r#"
set -e
req() { openssl req -new -nodes $NEWKEY -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null; }
openssl req -x509 -nodes $NEWKEY -keyout ca-key.pem -out ca.pem -days 30 -subj "/CN=bench-ca" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
req server localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -set_serial 10 -days 30 \
  -extfile server.ext -out server.pem 2>/dev/null
req client bench
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -set_serial 100 -days 30 \
  -extfile client.ext -out client.pem 2>/dev/null
: > index.txt
echo 01 > crlnumber
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=30\n' > ca.cnf
openssl ca -config ca.cnf -gencrl -keyfile ca-key.pem -cert ca.pem -out crl.pem 2>/dev/null
"#;

impl BenchPki {
    pub fn new(kind: KeyKind) -> BenchPki {
        let dir = tempfile::Builder::new()
            .prefix("pcpki-")
            .tempdir()
            .expect("temp dir for the PKI");
        let out = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .env("NEWKEY", kind.newkey())
            .current_dir(dir.path())
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "making the {} PKI with openssl failed: {}",
            kind.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        BenchPki { dir, kind }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
