//! The addresses `run`, `attach`, `detach` and `expose` take before their
//! target, as in Weave: a literal CIDR, `net:CIDR` (allocate in that
//! subnet), `net:default` (allocate in the default subnet) or
//! `ip:ADDR/LEN` (claim exactly that address). They mix freely, and none
//! at all means one address from the default subnet.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;

use crate::core::cidr::{self, CidrError};

/// One address argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrSpec {
    /// `10.2.1.1/24`: exactly this address, chosen by the user (outside
    /// IPAM, as before it existed).
    Cidr(IpNetwork),
    /// `net:10.32.1.0/24`: an address allocated in that subnet.
    Net(IpNetwork),
    /// `net:default`: an address allocated in the default subnet.
    NetDefault,
    /// `ip:10.32.0.9/12`: claim exactly that address from IPAM.
    Ip(IpNetwork),
}

const NET: &str = "net:";
const IP: &str = "ip:";
const DEFAULT: &str = "default";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("{0}: ip: needs ADDR/LEN, the address and its subnet's prefix length (e.g. ip:10.32.0.9/12)")]
    IpNoPrefix(String),
    #[error("ip:{0}")]
    Ip(CidrError),
    #[error("{0}: net: needs a network address with a prefix length (e.g. net:10.32.1.0/24) or net:default")]
    NetInvalid(String),
    #[error("{given}: net: needs a network address (host bits zero); did you mean net:{network}?")]
    NetHostBits { given: String, network: IpNetwork },
}

impl FromStr for AddrSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<AddrSpec, SpecError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix(NET) {
            if rest == DEFAULT {
                return Ok(AddrSpec::NetDefault);
            }
            if !rest.contains('/') {
                return Err(SpecError::NetInvalid(s.to_string()));
            }
            let n: IpNetwork = rest
                .parse()
                .map_err(|_| SpecError::NetInvalid(s.to_string()))?;
            if n.ip() != n.network() {
                let network = IpNetwork::new(n.network(), n.prefix())
                    .map_err(|_| SpecError::NetInvalid(s.to_string()))?;
                return Err(SpecError::NetHostBits {
                    given: s.to_string(),
                    network,
                });
            }
            return Ok(AddrSpec::Net(n));
        }
        if let Some(rest) = s.strip_prefix(IP) {
            return match cidr::parse(rest) {
                Ok(n) => Ok(AddrSpec::Ip(n)),
                Err(CidrError::NoPrefix(_)) => Err(SpecError::IpNoPrefix(s.to_string())),
                Err(e) => Err(SpecError::Ip(e)),
            };
        }
        Ok(AddrSpec::Cidr(cidr::parse(s)?))
    }
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrSpec::Cidr(n) => write!(f, "{n}"),
            AddrSpec::Net(n) => write!(f, "{NET}{n}"),
            AddrSpec::NetDefault => write!(f, "{NET}{DEFAULT}"),
            AddrSpec::Ip(n) => write!(f, "{IP}{n}"),
        }
    }
}

/// Is `s` meant as an address argument, valid or not? A CIDR-like word
/// (see [`cidr::looks_like_cidr`]), or `net:`/`ip:` followed by something
/// address-like or `default`. So "10.2.1.300/24" and "ip:10.32.0.9" are
/// (bad) specs, while an image such as "net:latest" is not.
pub fn looks_like_spec(s: &str) -> bool {
    if cidr::looks_like_cidr(s) {
        return true;
    }
    let rest = match s.strip_prefix(NET).or_else(|| s.strip_prefix(IP)) {
        Some(r) => r,
        None => return false,
    };
    rest == DEFAULT || cidr::looks_like_cidr(rest) || rest.parse::<IpAddr>().is_ok()
}

/// The specs at the front of `args`, up to the first argument that is not
/// a valid one, and the arguments from there on.
pub fn leading_specs(args: &[String]) -> (Vec<AddrSpec>, &[String]) {
    let mut specs = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match a.parse() {
            Ok(s) => specs.push(s),
            Err(_) => return (specs, args.get(i..).unwrap_or_default()),
        }
    }
    (specs, &[])
}

/// Like [`leading_specs`], but a first remaining argument that looks like
/// a spec (see [`looks_like_spec`]) is reported as the error it is, not
/// taken for what follows the specs.
pub fn split_specs(args: &[String]) -> Result<(Vec<AddrSpec>, &[String]), SpecError> {
    let (specs, rest) = leading_specs(args);
    if let Some(first) = rest.first().filter(|a| looks_like_spec(a)) {
        first.parse::<AddrSpec>()?;
    }
    Ok((specs, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_four_forms() {
        let p = |s: &str| s.parse::<AddrSpec>();
        assert_eq!(p("10.0.1.2/24"), Ok(AddrSpec::Cidr(net("10.0.1.2/24"))));
        assert_eq!(p("fd00::2/64"), Ok(AddrSpec::Cidr(net("fd00::2/64"))));
        assert_eq!(
            p("net:10.32.1.0/24"),
            Ok(AddrSpec::Net(net("10.32.1.0/24")))
        );
        assert_eq!(p("net:fd00:1::/64"), Ok(AddrSpec::Net(net("fd00:1::/64"))));
        assert_eq!(p("net:default"), Ok(AddrSpec::NetDefault));
        assert_eq!(p("ip:10.32.0.9/12"), Ok(AddrSpec::Ip(net("10.32.0.9/12"))));
        assert_eq!(p("ip:fd00::9/64"), Ok(AddrSpec::Ip(net("fd00::9/64"))));
        assert_eq!(p("ip:10.32.0.9/32"), Ok(AddrSpec::Ip(net("10.32.0.9/32"))));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.1.2/24",
            "net:10.32.1.0/24",
            "net:default",
            "ip:10.32.0.9/12",
            "fd00::2/64",
            "net:fd00:1::/64",
            "ip:fd00::9/64",
        ] {
            let spec: AddrSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
    }

    #[test]
    fn clear_errors() {
        let e = |s: &str| s.parse::<AddrSpec>().unwrap_err().to_string();
        assert_eq!(
            e("ip:10.32.0.9"),
            "ip:10.32.0.9: ip: needs ADDR/LEN, the address and its subnet's prefix length (e.g. ip:10.32.0.9/12)"
        );
        assert_eq!(
            e("ip:10.32.0.300/12"),
            "ip:10.32.0.300/12: invalid CIDR (expected an address with a prefix length, e.g. 10.2.1.1/24)"
        );
        assert_eq!(
            e("ip:10.32.0.0/12"),
            "ip:10.32.0.0/12: is the network address of its subnet, not a host address"
        );
        assert_eq!(
            e("net:10.32.1.5/24"),
            "net:10.32.1.5/24: net: needs a network address (host bits zero); did you mean net:10.32.1.0/24?"
        );
        assert_eq!(
            e("net:10.32.1.0"),
            "net:10.32.1.0: net: needs a network address with a prefix length (e.g. net:10.32.1.0/24) or net:default"
        );
        assert_eq!(
            e("10.2.1.300/24"),
            "10.2.1.300/24: invalid CIDR (expected an address with a prefix length, e.g. 10.2.1.1/24)"
        );
        for bad in [
            "",
            "ip:",
            "net:",
            "net:/24",
            "net:10.0.0.0/33",
            "net:Default",
            "ip:x/1",
            "ip:/24",
            "net:default/24",
            "ip:net:10.0.0.0/8",
            "10.2.1.1",
            "é",
            "net:é",
        ] {
            assert!(bad.parse::<AddrSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn what_looks_like_a_spec() {
        for s in [
            "10.2.1.300/24",
            "fd00::1/64",
            "net:default",
            "net:10.32.1.5/24",
            "net:10.32.1.0",
            "ip:10.32.0.9",
            "ip:10.32.0.300/12",
        ] {
            assert!(looks_like_spec(s), "{s}");
        }
        for s in [
            "-d",
            "redis",
            "example/redis",
            "net:latest",
            "ip:v2",
            "/var/run/netns/x",
            "pid:42",
            "",
        ] {
            assert!(!looks_like_spec(s), "{s}");
        }
    }

    #[test]
    fn leading_specs_stop_at_the_first_other_argument() {
        let args = strings(&[
            "net:10.32.1.0/24",
            "ip:10.32.0.9/12",
            "10.0.1.2/24",
            "-d",
            "redis",
            "10.0.1.3/24",
        ]);
        let (specs, rest) = leading_specs(&args);
        assert_eq!(
            specs,
            [
                AddrSpec::Net(net("10.32.1.0/24")),
                AddrSpec::Ip(net("10.32.0.9/12")),
                AddrSpec::Cidr(net("10.0.1.2/24")),
            ]
        );
        assert_eq!(rest, strings(&["-d", "redis", "10.0.1.3/24"]));

        let args = strings(&["-d", "redis"]);
        let (specs, rest) = leading_specs(&args);
        assert!(specs.is_empty());
        assert_eq!(rest, args);

        let args = strings(&["net:default", "10.0.1.2/24"]);
        let (specs, rest) = leading_specs(&args);
        assert_eq!(specs.len(), 2);
        assert!(rest.is_empty());

        let (specs, rest) = leading_specs(&[]);
        assert!(specs.is_empty() && rest.is_empty());
    }

    #[test]
    fn split_specs_reports_a_bad_spec_in_front() {
        let args = strings(&["10.0.1.2/24", "ip:10.32.0.9", "-d", "redis"]);
        assert_eq!(
            split_specs(&args).map(|(s, _)| s.len()),
            Err(SpecError::IpNoPrefix("ip:10.32.0.9".into()))
        );
        let args = strings(&["net:latest", "sh"]);
        let (specs, rest) = split_specs(&args).unwrap();
        assert!(specs.is_empty());
        assert_eq!(rest, args);
        let args = strings(&["/var/run/netns/x"]);
        assert_eq!(split_specs(&args).unwrap().1, args);
    }
}
