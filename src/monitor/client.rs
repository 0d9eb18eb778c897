//! The monitor's own MySQL client: logs in to a backend with
//! mysql_native_password (through the backend's outbound TLS when it has
//! one) and runs text-protocol queries. Deliberately small: one login
//! method, one command, results as strings.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::either::Either;

use crate::backend::{self, BackendRuntime, BackendStream};
use crate::packet_io::{write_own_packet, PacketReader, ReadError};
use crate::protocol::{Capabilities, ErrPacket, Greeting, GreetingTemplate, ERR_HEADER};

/// Packets the monitor reads are small; a result row over this is refused.
const MAX_PACKET: usize = 1 << 20;
const NATIVE: &str = "mysql_native_password";
const EOF_HEADER: u8 = 0xfe;

type Stream = Either<BackendStream, Box<tokio_rustls::client::TlsStream<BackendStream>>>;

/// Why the monitor could not talk to a backend.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{0}")]
    Connect(#[from] backend::ConnectError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("server error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl From<ReadError> for MonitorError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => MonitorError::Io(e),
            e => MonitorError::Protocol(e.to_string()),
        }
    }
}

/// A logged-in monitor connection.
pub struct MonitorConn {
    stream: Stream,
    reader: PacketReader,
}

/// A text-protocol result: column names and rows (NULL as `None`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    /// The value of column `name` in row `row`.
    pub fn get(&self, row: usize, name: &str) -> Option<&str> {
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))?;
        self.rows.get(row)?.get(i)?.as_deref()
    }
}

fn server_error(payload: &[u8]) -> MonitorError {
    match ErrPacket::parse(payload) {
        Ok(e) => MonitorError::Server {
            code: e.code,
            message: e.message,
        },
        Err(e) => MonitorError::Protocol(format!("bad ERR packet: {e}")),
    }
}

/// mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
pub fn native_scramble(password: &str, scramble: &[u8; 20]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let sha1 = |parts: &[&[u8]]| {
        let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
        for p in parts {
            c.update(p);
        }
        c.finish()
    };
    let stage1 = sha1(&[password.as_bytes()]);
    let stage2 = sha1(&[stage1.as_ref()]);
    let mix = sha1(&[scramble, stage2.as_ref()]);
    stage1
        .as_ref()
        .iter()
        .zip(mix.as_ref())
        .map(|(a, b)| a ^ b)
        .collect()
}

impl MonitorConn {
    /// Connects and logs in as `user`, within `timeout`.
    pub async fn connect(
        backend: &BackendRuntime,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<MonitorConn, MonitorError> {
        tokio::time::timeout(timeout, Self::login(backend, user, password))
            .await
            .map_err(|_| MonitorError::Timeout(timeout))?
    }

    async fn login(
        backend: &BackendRuntime,
        user: &str,
        password: &str,
    ) -> Result<MonitorConn, MonitorError> {
        // The monitor's own connection: a LOCAL PROXY header, if any.
        let mut raw = backend::connect(&backend.config, backend::Origin::default()).await?;
        let mut reader = PacketReader::new();
        let greeting_pkt = reader.read(&mut raw, MAX_PACKET).await?;
        if greeting_pkt.payload().first() == Some(&ERR_HEADER) {
            return Err(server_error(greeting_pkt.payload()));
        }
        let greeting = Greeting::parse(greeting_pkt.payload())
            .map_err(|e| MonitorError::Protocol(format!("greeting: {e}")))?;
        let (scramble, _) = greeting
            .scramble(greeting_pkt.payload())
            .map_err(|e| MonitorError::Protocol(format!("greeting: {e}")))?;
        // Every greeting seen is what clients are greeted with next.
        if let Ok(t) = GreetingTemplate::learn(&greeting, greeting_pkt.payload()) {
            backend.learn_greeting(t);
        }
        let tls = backend.tls.as_ref().map(|t| t.load());
        let mut caps = Capabilities::CLIENT_MYSQL
            | Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH;
        let mut seq = 1;
        let mut stream = match tls {
            None => Either::Left(raw),
            Some(tls) => {
                if !greeting.capabilities.has(Capabilities::SSL) {
                    return Err(MonitorError::Protocol(
                        "backend does not offer TLS, which [backend.tls] requires".into(),
                    ));
                }
                caps |= Capabilities::SSL;
                write_own_packet(&mut raw, seq, &fixed_prefix(caps)).await?;
                seq += 1;
                let s = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), raw)
                    .await?;
                Either::Right(Box::new(s))
            }
        };
        let mut response = fixed_prefix(caps);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        let auth = native_scramble(password, &scramble);
        response.push(auth.len() as u8);
        response.extend_from_slice(&auth);
        response.extend_from_slice(NATIVE.as_bytes());
        response.push(0);
        write_own_packet(&mut stream, seq, &response).await?;
        loop {
            let p = reader.read(&mut stream, MAX_PACKET).await?;
            match p.payload().first() {
                Some(0x00) => break,
                Some(&ERR_HEADER) => return Err(server_error(p.payload())),
                Some(&EOF_HEADER) => {
                    // Auth switch: plugin name, NUL, new scramble.
                    let body = &p.payload()[1..];
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    if &body[..end] != NATIVE.as_bytes() {
                        return Err(MonitorError::Protocol(format!(
                            "the monitor account must use mysql_native_password (server asked for {})",
                            String::from_utf8_lossy(&body[..end])
                        )));
                    }
                    let fresh: [u8; 20] = body
                        .get(end + 1..end + 21)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| MonitorError::Protocol("short auth switch".into()))?;
                    let answer = native_scramble(password, &fresh);
                    write_own_packet(&mut stream, p.header.seq.wrapping_add(1), &answer).await?;
                }
                _ => {
                    return Err(MonitorError::Protocol(
                        "unexpected packet during login".into(),
                    ))
                }
            }
        }
        Ok(MonitorConn { stream, reader })
    }

    /// Runs `sql` (COM_QUERY) and reads its whole result.
    pub async fn query(&mut self, sql: &str) -> Result<ResultSet, MonitorError> {
        let mut command = vec![0x03];
        command.extend_from_slice(sql.as_bytes());
        write_own_packet(&mut self.stream, 0, &command).await?;
        let first = self.read().await?;
        let count = match first.first() {
            Some(0x00) => return Ok(ResultSet::default()),
            Some(&ERR_HEADER) => return Err(server_error(&first)),
            _ => lenenc(&first, &mut 0)? as usize,
        };
        let mut set = ResultSet::default();
        for _ in 0..count {
            let def = self.read().await?;
            // catalog, schema, table, org_table, name, ...
            let mut pos = 0;
            for _ in 0..4 {
                lenenc_str(&def, &mut pos)?;
            }
            set.columns
                .push(lenenc_str(&def, &mut pos)?.unwrap_or_default());
        }
        self.expect_eof().await?;
        loop {
            let row = self.read().await?;
            match row.first() {
                Some(&EOF_HEADER) if row.len() < 9 => return Ok(set),
                Some(&ERR_HEADER) => return Err(server_error(&row)),
                _ => {}
            }
            let mut pos = 0;
            let values = (0..count)
                .map(|_| lenenc_str(&row, &mut pos))
                .collect::<Result<Vec<_>, _>>()?;
            set.rows.push(values);
        }
    }

    async fn expect_eof(&mut self) -> Result<(), MonitorError> {
        let p = self.read().await?;
        if p.first() == Some(&EOF_HEADER) {
            Ok(())
        } else {
            Err(MonitorError::Protocol(
                "expected EOF after column definitions".into(),
            ))
        }
    }

    async fn read(&mut self) -> Result<Vec<u8>, MonitorError> {
        Ok(read_payload(&mut self.reader, &mut self.stream).await?)
    }
}

async fn read_payload<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut PacketReader,
    s: &mut S,
) -> Result<Vec<u8>, ReadError> {
    Ok(reader.read(s, MAX_PACKET).await?.payload().to_vec())
}

/// The 32-byte fixed prefix of SSLRequest / HandshakeResponse41.
fn fixed_prefix(caps: u32) -> Vec<u8> {
    let mut v = caps.to_le_bytes().to_vec();
    v.extend_from_slice(&(16u32 << 20).to_le_bytes());
    v.push(45); // utf8mb4_general_ci
    v.extend_from_slice(&[0; 23]);
    v
}

fn lenenc(buf: &[u8], pos: &mut usize) -> Result<u64, MonitorError> {
    let (v, next) = crate::protocol::lenenc_int(buf, *pos, "result set")
        .map_err(|e| MonitorError::Protocol(e.to_string()))?;
    *pos = next;
    Ok(v)
}

/// A length-encoded string, or `None` for the NULL marker (0xfb).
fn lenenc_str(buf: &[u8], pos: &mut usize) -> Result<Option<String>, MonitorError> {
    if buf.get(*pos) == Some(&0xfb) {
        *pos += 1;
        return Ok(None);
    }
    let len = lenenc(buf, pos)? as usize;
    let bytes = buf
        .get(*pos..*pos + len)
        .ok_or_else(|| MonitorError::Protocol("value runs past the packet".into()))?;
    *pos += len;
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_scramble_matches_the_server_algorithm() {
        // Known vector: password "secret" with a scramble of 20 x 'a'
        // (computed with Python's hashlib, the formula of the manual).
        let s = native_scramble("secret", b"aaaaaaaaaaaaaaaaaaaa");
        let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "512ae2a4d1572c011140a7362190e07e79eb03d2");
        assert!(native_scramble("", b"aaaaaaaaaaaaaaaaaaaa").is_empty());
    }

    #[test]
    fn lenenc_strings_and_null() {
        let buf = [3, b'a', b'b', b'c', 0xfb, 0];
        let mut pos = 0;
        assert_eq!(lenenc_str(&buf, &mut pos).unwrap().as_deref(), Some("abc"));
        assert_eq!(lenenc_str(&buf, &mut pos).unwrap(), None);
        assert_eq!(lenenc_str(&buf, &mut pos).unwrap().as_deref(), Some(""));
        assert!(lenenc_str(&[5, b'x'], &mut 0).is_err());
    }
}
