//! SHA-256 values of TLS material, and their hex form.

use std::fmt;

/// A SHA-256 value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
    }
}

impl From<aws_lc_rs::digest::Digest> for Digest {
    fn from(d: aws_lc_rs::digest::Digest) -> Self {
        let mut v = [0u8; 32];
        v.copy_from_slice(d.as_ref());
        Digest(v)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
