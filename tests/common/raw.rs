//! A raw MySQL-protocol client for byte-exact tests: reads and writes
//! packets itself and runs rustls by hand, so the SSLRequest and the
//! ClientHello can go out in one write.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use portcullis::protocol::Capabilities;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pki::{ClientCert, Pki};

/// Capabilities the raw client announces.
pub const CAPS: u32 =
    Capabilities::PROTOCOL_41 | Capabilities::SECURE_CONNECTION | Capabilities::PLUGIN_AUTH;

pub struct RawClient {
    pub tcp: TcpStream,
    pub tls: Option<rustls::ClientConnection>,
    plain: Vec<u8>,
}

/// The 32-byte fixed prefix of SSLRequest / HandshakeResponse41.
pub fn fixed_prefix(ssl: bool) -> Vec<u8> {
    let caps = CAPS | if ssl { Capabilities::SSL } else { 0 };
    let mut v = caps.to_le_bytes().to_vec();
    v.extend_from_slice(&(16u32 << 20).to_le_bytes());
    v.push(45);
    v.extend_from_slice(&[0; 23]);
    v
}

/// A HandshakeResponse41 payload for `user` with an empty password.
pub fn response_payload(user: &str, ssl: bool) -> Vec<u8> {
    let mut r = fixed_prefix(ssl);
    r.extend_from_slice(user.as_bytes());
    r.push(0);
    r.push(0); // auth response length 0: empty password
    r.extend_from_slice(b"mysql_native_password\0");
    r
}

pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

/// A client config trusting the PKI's CA, presenting `cert`. Connections
/// made with one config share its TLS session store (resumption).
pub fn client_config(pki: &Pki, cert: Option<&ClientCert>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in portcullis::tls::load_certs(&pki.ca).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some(c) => b
            .with_client_auth_cert(
                portcullis::tls::load_certs(&c.cert).unwrap(),
                portcullis::tls::load_key(&c.key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            tcp: TcpStream::connect(addr).await.expect("connect"),
            tls: None,
            plain: Vec::new(),
        }
    }

    /// Reads one whole packet (header included).
    pub async fn read_packet(&mut self) -> Vec<u8> {
        if self.tls.is_some() {
            return self.tls_read_packet().await;
        }
        let mut h = [0u8; 4];
        self.tcp.read_exact(&mut h).await.expect("packet header");
        let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
        let mut p = vec![0u8; len];
        self.tcp.read_exact(&mut p).await.expect("packet payload");
        let mut v = h.to_vec();
        v.extend(p);
        v
    }

    /// Whether the peer closed the connection (reads EOF, after any TLS
    /// close_notify).
    pub async fn at_eof(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    let Some(tls) = self.tls.as_mut() else {
                        return false;
                    };
                    tls.read_tls(&mut &buf[..n]).unwrap();
                    if tls.process_new_packets().is_err() {
                        return true;
                    }
                    let mut chunk = [0u8; 64];
                    if let Ok(n) = tls.reader().read(&mut chunk) {
                        if n > 0 {
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// Reads until the server closes and tells whether it closed TLS
    /// cleanly: a `close_notify` before the TCP FIN (true), or the FIN alone,
    /// which clients report as "unexpected eof" (false).
    pub async fn closed_with_close_notify(&mut self) -> bool {
        let tls = self.tls.as_mut().expect("a TLS client");
        let mut buf = [0u8; 4096];
        loop {
            let n = self.tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = tls.read_tls(&mut &buf[..0]);
                let _ = tls.process_new_packets();
                let mut rest = Vec::new();
                return tls.reader().read_to_end(&mut rest).is_ok();
            }
            tls.read_tls(&mut &buf[..n]).unwrap();
            if tls.process_new_packets().is_err() {
                return false;
            }
            let mut drained = Vec::new();
            match tls.reader().read_to_end(&mut drained) {
                Ok(_) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
    }

    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) {
        self.write_raw(&frame(seq, payload)).await;
    }

    /// Writes `bytes` as they are (inside TLS once it is up), in one write.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        match self.tls.as_mut() {
            Some(tls) => {
                tls.writer().write_all(bytes).unwrap();
                self.flush_tls().await;
            }
            None => self.tcp.write_all(bytes).await.unwrap(),
        }
    }

    async fn flush_tls(&mut self) {
        let tls = self.tls.as_mut().unwrap();
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out).unwrap();
        }
        self.tcp.write_all(&out).await.unwrap();
    }

    /// Sends the SSLRequest (seq 1) with the ClientHello glued to it in one
    /// write, and completes the TLS handshake. Returns the handshake error,
    /// if any.
    pub async fn start_tls(
        &mut self,
        pki: &Pki,
        cert: Option<&ClientCert>,
    ) -> Result<(), rustls::Error> {
        self.start_tls_with(client_config(pki, cert)).await
    }

    /// [`start_tls`](RawClient::start_tls) with a given client config.
    pub async fn start_tls_with(
        &mut self,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<(), rustls::Error> {
        let mut tls =
            rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut first = frame(1, &fixed_prefix(true));
        tls.write_tls(&mut first).unwrap();
        assert!(first.len() > 36, "ClientHello appended to the SSLRequest");
        self.tcp.write_all(&first).await.unwrap();
        let mut buf = vec![0u8; 16384];
        while tls.is_handshaking() {
            if tls.wants_write() {
                let mut out = Vec::new();
                tls.write_tls(&mut out).unwrap();
                self.tcp.write_all(&out).await.unwrap();
                continue;
            }
            let n = self.tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return Err(rustls::Error::General(
                    "connection closed during handshake".into(),
                ));
            }
            tls.read_tls(&mut &buf[..n]).unwrap();
            tls.process_new_packets()?;
        }
        self.tls = Some(tls);
        self.flush_tls().await;
        Ok(())
    }

    /// Reads one packet over TLS; a TLS error (an alert from the server)
    /// or the connection closing is returned as text instead of panicking.
    pub async fn try_read_packet(&mut self) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; 16384];
        loop {
            let tls = self.tls.as_mut().expect("TLS started");
            let mut chunk = [0u8; 4096];
            while let Ok(n) = tls.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                self.plain.extend_from_slice(&chunk[..n]);
            }
            if let Some(p) = self.take_plain_packet() {
                return Ok(p);
            }
            let n = self.tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let tls = self.tls.as_mut().unwrap();
            tls.read_tls(&mut &buf[..n]).map_err(|e| e.to_string())?;
            tls.process_new_packets().map_err(|e| format!("{e:?}"))?;
        }
    }

    fn take_plain_packet(&mut self) -> Option<Vec<u8>> {
        if self.plain.len() < 4 {
            return None;
        }
        let p = &self.plain;
        let len = p[0] as usize | (p[1] as usize) << 8 | (p[2] as usize) << 16;
        if p.len() < 4 + len {
            return None;
        }
        let rest = self.plain.split_off(4 + len);
        Some(std::mem::replace(&mut self.plain, rest))
    }

    async fn tls_read_packet(&mut self) -> Vec<u8> {
        match self.try_read_packet().await {
            Ok(p) => p,
            Err(e) => panic!("{e}; got {:?}", self.plain),
        }
    }
}
