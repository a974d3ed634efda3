//! IP ranges (`ADDRESS/PREFIX`): parsing as the API server accepts them in NetworkPolicy ipBlocks,
//! and containment, for the egress deny-list. The one CIDR parser of the operator (the flags and
//! the Sandbox's `spec.network.allow[].cidr` both go through it).

use std::fmt;
use std::net::IpAddr;

/// A parsed range; `Display` gives back the canonical `ADDRESS/PREFIX` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` (see [`parse_cidr`]).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        parse_cidr(s.trim()).map(|(addr, prefix)| Cidr { addr, prefix })
    }

    /// Whether every address of `other` is in `self` (same family only; a range contains itself).
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.prefix > other.prefix {
            return false;
        }
        match (self.addr, other.addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix),
            IpAddr::V6(a) => write!(f, "{}/{}", hex_v6(a.segments()), self.prefix),
        }
    }
}

/// RFC 5952 text of an IPv6 address, always in hex: std writes IPv4-mapped addresses with a
/// dotted quad (`::ffff:0.0.0.0`), which would make one range look like two.
fn hex_v6(seg: [u16; 8]) -> String {
    // The longest run of two or more zero groups (the first, on a tie) becomes "::".
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, &g) in seg.iter().enumerate() {
        if g == 0 {
            run = if run.1 == 0 { (i, 1) } else { (run.0, run.1 + 1) };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let hex = |gs: &[u16]| gs.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
    if best.1 < 2 {
        return hex(&seg);
    }
    format!("{}::{}", hex(&seg[..best.0]), hex(&seg[best.0 + best.1..]))
}

/// Parses `ADDRESS/PREFIX`; the address must be the network address (no host bits set), as the
/// API server requires for NetworkPolicy ipBlocks.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| "expected ADDRESS/PREFIX".to_string())?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
    let bits = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix > bits {
        return Err(format!("prefix /{prefix} is longer than {bits} bits"));
    }
    let host_bits_set = match addr {
        IpAddr::V4(a) => prefix < 32 && (u32::from(a) << prefix) != 0,
        IpAddr::V6(a) => prefix < 128 && (u128::from(a) << prefix) != 0,
    };
    if host_bits_set {
        return Err("host bits are set; use the network address".into());
    }
    Ok((addr, prefix))
}

/// True for `ADDRESS/PREFIX` as the CRD's `isCIDR` rule accepts it: host bits may be set, the
/// prefix is written without leading zeros. (NetworkPolicy ipBlocks need [`parse_cidr`].)
pub fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    if bits.to_string() != s.split_once('/').map(|x| x.1).unwrap_or_default() {
        return false;
    }
    match ip {
        IpAddr::V4(_) => bits <= 32,
        IpAddr::V6(_) => bits <= 128,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_text_is_hex_and_compressed() {
        for (text, want) in [
            ("::ffff:0.0.0.0/96", "::ffff:0:0/96"),
            ("::ffff:0:0/96", "::ffff:0:0/96"),
            ("64:ff9b::/96", "64:ff9b::/96"),
            ("::/0", "::/0"),
            ("fd00:ec2::254/128", "fd00:ec2::254/128"),
            ("2001:db8:0:0:1:0:0:0/128", "2001:db8:0:0:1::/128"),
            ("1:0:2:3:4:5:6:7/128", "1:0:2:3:4:5:6:7/128"),
            ("10.0.0.0/8", "10.0.0.0/8"),
        ] {
            assert_eq!(Cidr::parse(text).unwrap().to_string(), want, "{text}");
        }
    }

    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn parses_network_addresses_only() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("10.1.2.3/32").is_ok());
        assert!(parse_cidr("fc00::/7").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("::/129").is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("fe80::1/10").is_err());
        assert_eq!(c("fd00:ec2::254/128").to_string(), "fd00:ec2::254/128");
    }

    #[test]
    fn containment() {
        assert!(c("169.254.0.0/16").contains(&c("169.254.169.254/32")));
        assert!(c("169.254.0.0/16").contains(&c("169.254.0.0/16")));
        assert!(!c("169.254.169.254/32").contains(&c("169.254.0.0/16")));
        assert!(!c("10.0.0.0/8").contains(&c("11.0.0.0/8")));
        assert!(c("0.0.0.0/0").contains(&c("203.0.113.7/32")));
        assert!(c("::/0").contains(&c("fe80::/10")));
        assert!(c("fe80::/10").contains(&c("febf::/16")));
        assert!(!c("fe80::/10").contains(&c("fec0::/10")));
        // Families never contain each other, not even ::/0 and an IPv4 range.
        assert!(!c("::/0").contains(&c("10.0.0.0/8")));
        assert!(!c("0.0.0.0/0").contains(&c("::ffff:0:0/96")));
    }
}
