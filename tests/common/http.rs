//! A hand-written HTTP/1.1 client for the admin API (`Connection: close`),
//! so tests do not share an HTTP stack with the code under test.

use portcullis::config::ListenAddr;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn parse(raw: &[u8]) -> Reply {
        let text = String::from_utf8(raw.to_vec()).expect("UTF-8 answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s[..3].parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }
}

pub fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    request_to("localhost", method, path, token, body)
}

/// [`request`] with `host` in the `Host` header (none when empty).
pub fn request_to(host: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\n");
    if !host.is_empty() {
        r.push_str(&format!("Host: {host}\r\n"));
    }
    r.push_str("Connection: close\r\n");
    if let Some(t) = token {
        r.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method == "POST" || method == "PUT" || !body.is_empty() {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &str) -> Reply {
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    Reply::parse(&raw)
}

/// One request without a body.
pub async fn http(addr: &ListenAddr, method: &str, path: &str, token: Option<&str>) -> Reply {
    http_body(addr, method, path, token, "").await
}

/// One request with a (JSON) body.
pub async fn http_body(
    addr: &ListenAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Reply {
    raw(addr, &request(method, path, token, body)).await
}

/// Sends `req` as it is and reads the answer until the server closes.
pub async fn raw(addr: &ListenAddr, req: &str) -> Reply {
    match addr {
        ListenAddr::Tcp(a) => exchange(tokio::net::TcpStream::connect(a).await.unwrap(), req).await,
        ListenAddr::Unix(p) => {
            exchange(tokio::net::UnixStream::connect(p).await.unwrap(), req).await
        }
    }
}
