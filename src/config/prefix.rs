//! An IP address or prefix as written in `trusted_proxies`
//! (`"192.0.2.7"`, `"10.0.0.0/8"`, `"2001:db8::/32"`), and whether an
//! address falls in it.

use std::fmt;
use std::net::IpAddr;

/// An address prefix; a lone address is a full-length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Parses `addr` or `addr/len`; the bits past `len` must be zero, so a
    /// typo like `10.1.2.3/8` is not silently widened.
    pub fn parse(s: &str) -> Result<IpPrefix, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!("invalid address {s:?}: expected an IP address or prefix, like \"192.0.2.7\", \"10.0.0.0/8\" or \"2001:db8::/32\"")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "invalid prefix length in {s:?}: expected 0 to {max}"
                    ))
                }
            },
        };
        let p = IpPrefix { addr, len };
        if p.masked(addr) != addr {
            return Err(format!(
                "{s:?} has bits set past /{len}; write {}/{len}",
                p.masked(addr)
            ));
        }
        Ok(p)
    }

    /// `ip` with the bits past this prefix's length cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// Whether `ip` is in this prefix; an IPv4-mapped IPv6 address counts
    /// as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_prefixes() {
        let one = IpPrefix::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        assert!(one.contains(ip("::ffff:192.0.2.7")), "IPv4-mapped");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        let net = IpPrefix::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.1.2")) && !net.contains(ip("11.0.0.1")));
        let v6 = IpPrefix::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all = IpPrefix::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        assert!(IpPrefix::parse("::1").unwrap().contains(ip("::1")));
    }

    #[test]
    fn refusals_say_what_to_write() {
        let e = IpPrefix::parse("10.1.2.3/8").unwrap_err();
        assert!(e.contains("write 10.0.0.0/8"), "{e}");
        assert!(IpPrefix::parse("10.0.0.0/33")
            .unwrap_err()
            .contains("0 to 32"));
        assert!(IpPrefix::parse("lb.example.net")
            .unwrap_err()
            .contains("IP address or prefix"));
    }
}
