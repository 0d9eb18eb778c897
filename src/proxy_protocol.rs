//! The PROXY protocol: the version 2 header portcullis sends to a backend
//! with `proxy_protocol = true`, before the first byte of the MySQL
//! connection, so the server sees (and applies grants to) the real client
//! address; and the v1 and v2 headers it reads from a load balancer in
//! `trusted_proxies` (`accept_proxy_protocol = true`), which say who the
//! real client is ([`crate::proxy_header`] reads them off the socket).
//!
//! Pure: builds and parses bytes, no I/O. Format (haproxy's
//! proxy-protocol.txt): v1 is one text line, `PROXY TCP4 <src> <dst>
//! <sport> <dport>\r\n` (§2.1); v2 (§2.2) the 12-byte signature,
//! version/command, family/transport, a big-endian length, then source
//! address, destination address, source port and destination port, and
//! TLVs (skipped).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY (the connection is relayed for a client).
const PROXY: u8 = 0x21;
/// Version 2, command LOCAL (the proxy's own connection, e.g. a health
/// check: the server uses the real endpoints).
const LOCAL: u8 = 0x20;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;
const UNSPEC: u8 = 0x00;

/// The header for a connection relayed from `client` that arrived at
/// `local` (the listener's address); `None` for either (a Unix-socket
/// client, or portcullis's own connection) gives a LOCAL header.
pub fn v2_header(client: Option<SocketAddr>, local: Option<SocketAddr>) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    let (Some(src), Some(dst)) = (client, local) else {
        h.extend_from_slice(&[LOCAL, UNSPEC, 0, 0]);
        return h;
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.extend_from_slice(&[PROXY, TCP_OVER_IPV4, 0, 12]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            // Mixed families cannot happen on one socket; map IPv4 into
            // IPv6 rather than lose the address if they ever do.
            let v6 = |ip: IpAddr| -> Ipv6Addr {
                match ip {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                }
            };
            h.extend_from_slice(&[PROXY, TCP_OVER_IPV6, 0, 36]);
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// What an inbound header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Relayed for a client: its address, and the address it connected to
    /// (the load balancer's).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 LOCAL, e.g. a health check; v1
    /// `UNKNOWN`; an address family other than TCP over IP): the peer's own
    /// address stands.
    Local,
}

/// Why an inbound header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header (the connection starts with {0:02x?})")]
    Missing(Vec<u8>),
    #[error("malformed PROXY v1 header: {0}")]
    V1(String),
    #[error("malformed PROXY v2 header: {0}")]
    V2(String),
}

/// The longest v1 header, `\r\n` included (§2.1).
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version/command,
/// family/transport, length.
pub const V2_FIXED: usize = 16;
/// How many bytes tell v1 from v2 (and the shortest v1 header is longer).
pub const PEEK: usize = 8;

/// Which version a header that starts with `first` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The version of the header that starts with these [`PEEK`] bytes.
pub fn version(first: &[u8; PEEK]) -> Result<Version, HeaderError> {
    if first.starts_with(b"PROXY ") {
        Ok(Version::V1)
    } else if first[..] == SIGNATURE[..PEEK] {
        Ok(Version::V2)
    } else {
        Err(HeaderError::Missing(first.to_vec()))
    }
}

/// The length of what follows the fixed part of a v2 header.
pub fn v2_len(fixed: &[u8; V2_FIXED]) -> Result<usize, HeaderError> {
    if fixed[..12] != SIGNATURE {
        return Err(HeaderError::V2("bad signature".into()));
    }
    if fixed[12] >> 4 != 2 {
        return Err(HeaderError::V2(format!(
            "version {} (not 2)",
            fixed[12] >> 4
        )));
    }
    Ok(usize::from(u16::from_be_bytes([fixed[14], fixed[15]])))
}

/// A whole v2 header: its fixed part and the `body` of [`v2_len`] bytes.
pub fn parse_v2(fixed: &[u8; V2_FIXED], body: &[u8]) -> Result<Inbound, HeaderError> {
    let bad = |what: String| Err(HeaderError::V2(what));
    match fixed[12] & 0x0f {
        0 => return Ok(Inbound::Local),
        1 => {}
        c => return bad(format!("unknown command {c:#x}")),
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match fixed[13] {
        TCP_OVER_IPV4 if body.len() >= 12 => {
            let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            Ok(Inbound::Proxied {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            })
        }
        TCP_OVER_IPV6 if body.len() >= 36 => {
            let ip = |at: usize| {
                let o: [u8; 16] = body[at..at + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(o)
            };
            Ok(Inbound::Proxied {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            })
        }
        TCP_OVER_IPV4 | TCP_OVER_IPV6 => bad(format!(
            "{} address bytes are too few for family {:#04x}",
            body.len(),
            fixed[13]
        )),
        // UNSPEC, UDP, Unix sockets: nothing to say about a TCP client.
        _ => Ok(Inbound::Local),
    }
}

/// A whole v1 header line, `\r\n` included.
pub fn parse_v1(line: &[u8]) -> Result<Inbound, HeaderError> {
    let bad = |what: &str| Err(HeaderError::V1(what.to_string()));
    let Some(text) = line
        .strip_suffix(b"\r\n")
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return bad("not a line of text ending in CRLF");
    };
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Inbound::Local),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, HeaderError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| HeaderError::V1(format!("bad address {s:?}")))?;
                if ip.is_ipv4() != (*family == "TCP4") {
                    return Err(HeaderError::V1(format!("{s} is not a {family} address")));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, HeaderError> {
                s.parse()
                    .map_err(|_| HeaderError::V1(format!("bad port {s:?}")))
            };
            Ok(Inbound::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => bad("expected PROXY TCP4|TCP6 <src> <dst> <sport> <dport>, or PROXY UNKNOWN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(header: &[u8]) -> Result<Inbound, HeaderError> {
        let fixed: [u8; V2_FIXED] = header[..V2_FIXED].try_into().unwrap();
        let len = v2_len(&fixed)?;
        parse_v2(&fixed, &header[V2_FIXED..V2_FIXED + len])
    }

    #[test]
    fn what_portcullis_sends_it_reads() {
        let (src, dst) = (
            "192.0.2.7:50000".parse().unwrap(),
            "198.51.100.1:3307".parse().unwrap(),
        );
        let h = v2_header(Some(src), Some(dst));
        assert_eq!(version(&h[..PEEK].try_into().unwrap()), Ok(Version::V2));
        assert_eq!(
            v2(&h),
            Ok(Inbound::Proxied {
                source: src,
                destination: dst
            })
        );
        let (src, dst) = (
            "[2001:db8::5]:40000".parse().unwrap(),
            "[2001:db8::1]:3307".parse().unwrap(),
        );
        assert_eq!(
            v2(&v2_header(Some(src), Some(dst))),
            Ok(Inbound::Proxied {
                source: src,
                destination: dst
            })
        );
        assert_eq!(v2(&v2_header(None, None)), Ok(Inbound::Local));
    }

    #[test]
    fn v2_tlvs_are_skipped_and_bad_ones_refused() {
        let mut h = v2_header(
            Some("192.0.2.7:1".parse().unwrap()),
            Some("192.0.2.1:2".parse().unwrap()),
        );
        // A 3-byte NOOP TLV after the addresses.
        h[15] += 3;
        h.extend_from_slice(&[0x04, 0, 0]);
        assert!(matches!(v2(&h), Ok(Inbound::Proxied { .. })));
        let mut short = h.clone();
        short[15] = 4;
        assert!(v2(&short).unwrap_err().to_string().contains("too few"));
        let mut v3 = h.clone();
        v3[12] = 0x31;
        assert!(v2(&v3).unwrap_err().to_string().contains("version 3"));
        let mut cmd = h;
        cmd[12] = 0x2f;
        assert!(v2(&cmd).unwrap_err().to_string().contains("command"));
    }

    #[test]
    fn v1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 3307\r\n"),
            Ok(Inbound::Proxied {
                source: "192.0.2.7:50000".parse().unwrap(),
                destination: "198.51.100.1:3307".parse().unwrap(),
            })
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 3307\r\n"),
            Ok(Inbound::Proxied {
                source: "[2001:db8::5]:4000".parse().unwrap(),
                destination: "[2001:db8::1]:3307".parse().unwrap(),
            })
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Inbound::Local));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 50000\r\n"[..],
            b"PROXY TCP4 2001:db8::5 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 3307\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            version(b"\x0a\x00\x00\x01\x85\xa6\x3f\x20"),
            Err(HeaderError::Missing(_))
        ));
    }

    #[test]
    fn ipv4_header_is_byte_exact() {
        let h = v2_header(
            Some("192.0.2.7:50000".parse().unwrap()),
            Some("198.51.100.1:3307".parse().unwrap()),
        );
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1]);
        want.extend_from_slice(&[0xc3, 0x50, 0x0c, 0xeb]);
        assert_eq!(h, want);
    }

    #[test]
    fn ipv6_header_is_byte_exact() {
        let h = v2_header(
            Some("[2001:db8::5]:40000".parse().unwrap()),
            Some("[2001:db8::1]:3307".parse().unwrap()),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            h[16..32],
            "2001:db8::5".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            h[32..48],
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&h[48..], &[0x9c, 0x40, 0x0c, 0xeb]);
    }

    #[test]
    fn without_addresses_it_is_local() {
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(v2_header(None, None), want);
        assert_eq!(v2_header(Some("127.0.0.1:1".parse().unwrap()), None), want);
    }

    #[test]
    fn mixed_families_map_into_ipv6() {
        let h = v2_header(
            Some("192.0.2.7:1".parse().unwrap()),
            Some("[::1]:2".parse().unwrap()),
        );
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            h[16..32],
            "::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets()
        );
    }
}
