//! The PROXY protocol version 2 header portcullis sends to a backend with
//! `proxy_protocol = true`, before the first byte of the MySQL connection,
//! so the server sees (and applies grants to) the real client address.
//!
//! Pure: builds bytes, no I/O. Format (haproxy's proxy-protocol.txt, §2.2):
//! the 12-byte signature, version/command, family/transport, a big-endian
//! length, then source address, destination address, source port and
//! destination port.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

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

#[cfg(test)]
mod tests {
    use super::*;

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
