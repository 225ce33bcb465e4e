//! What the user chooses for IPAM at launch (`--ipalloc-range`,
//! `--ipalloc-default-subnet`, `--ipalloc-init`), checked here so that a
//! bad choice is one line on the terminal and never a router that starts
//! and then misbehaves. Also the check that the range clashes with nothing
//! on the host (the daemon's shell lists the host's routes and addresses;
//! deciding is pure and lives here).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::core::PeerName;

/// Weave's default range, kept so that users moving over keep their plans.
pub const DEFAULT_RANGE: IpNetwork = v4([10, 32, 0, 0], 12);

/// A network known when compiling (a bad one fails the build, never a run).
const fn v4(a: [u8; 4], prefix: u8) -> IpNetwork {
    match Ipv4Network::new_checked(Ipv4Addr::new(a[0], a[1], a[2], a[3]), prefix) {
        Some(n) => IpNetwork::V4(n),
        None => panic!("not an IPv4 network"),
    }
}

/// An IPv6 network known when compiling, from its first and last segments.
const fn v6(first: u16, last: u16, prefix: u8) -> IpNetwork {
    let a = Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, last);
    match Ipv6Network::new_checked(a, prefix) {
        Some(n) => IpNetwork::V6(n),
        None => panic!("not an IPv6 network"),
    }
}

/// Addresses a range may not take: the host check skips loopback,
/// link-local and multicast (they are never overlay addresses), so the
/// range is kept clear of them here.
const RESERVED: [(IpNetwork, &str); 5] = [
    (v4([127, 0, 0, 0], 8), "loopback"),
    (v4([224, 0, 0, 0], 4), "multicast"),
    (v6(0, 1, 128), "loopback"),
    (v6(0xfe80, 0, 10), "link-local"),
    (v6(0xff00, 0, 8), "multicast"),
];

/// Smallest range (and default subnet) accepted: 4 addresses, so that an
/// IPv4 subnet still has hosts besides its network and broadcast addresses.
const MIN_HOST_BITS: u8 = 2;

/// How the ring is made the first time an address is needed
/// (`--ipalloc-init`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// The peers agree on the initial ring; `Some(n)`: once `n` of them
    /// take part (`consensus=N`), `None`: inferred from the peers given at
    /// launch (see [`quorum`]).
    Consensus(Option<u32>),
    /// The ring is split between these peers at once, without talking.
    Seed(Vec<PeerName>),
    /// Owns nothing: asks others for space when it needs addresses.
    Observer,
}

/// Parses `--ipalloc-init`: `consensus`, `consensus=N` (N ≥ 1),
/// `seed=NAME,NAME...` or `observer`. The error names the flag.
pub fn parse_init(s: &str) -> Result<Init, String> {
    let flag = format!("--ipalloc-init {s}");
    let (mode, value) = match s.split_once('=') {
        Some((m, v)) => (m, Some(v)),
        None => (s, None),
    };
    match (mode, value) {
        ("consensus", None) => Ok(Init::Consensus(None)),
        ("consensus", Some(n)) => match n.parse::<u32>() {
            Ok(0) => Err(format!(
                "{flag}: the quorum must be at least 1 (consensus=N with N peers taking part, or plain consensus to infer it from the peers given)"
            )),
            Ok(n) => Ok(Init::Consensus(Some(n))),
            Err(_) => Err(format!(
                "{flag}: expected consensus=N with N a number of peers from 1 to {}",
                u32::MAX
            )),
        },
        ("seed", Some(names)) => parse_seed(&flag, names).map(Init::Seed),
        ("seed", None) => Err(format!(
            "{flag}: name the seed peers, e.g. seed=aa:bb:cc:dd:ee:01,aa:bb:cc:dd:ee:02"
        )),
        ("observer", None) => Ok(Init::Observer),
        ("observer", Some(_)) => Err(format!("{flag}: observer takes no value")),
        _ => Err(format!(
            "{flag}: expected consensus, consensus=N, seed=NAME,... or observer"
        )),
    }
}

fn parse_seed(flag: &str, names: &str) -> Result<Vec<PeerName>, String> {
    let mut out: Vec<PeerName> = Vec::new();
    for n in names.split(',').map(str::trim) {
        if n.is_empty() {
            return Err(format!(
                "{flag}: empty peer name (seed=NAME,NAME... with names like aa:bb:cc:dd:ee:ff)"
            ));
        }
        let name: PeerName = n.parse().map_err(|e| format!("{flag}: {e}"))?;
        if name == PeerName::NONE {
            return Err(format!("{flag}: {n} is not a peer's name"));
        }
        if out.contains(&name) {
            return Err(format!("{flag}: {n} is named twice"));
        }
        out.push(name);
    }
    Ok(out)
}

/// The IPAM choices of one launch, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// `--ipalloc-range`: the addresses the mesh allocates from.
    pub range: IpNetwork,
    /// `--ipalloc-default-subnet`: where addresses come from when none is
    /// asked for (`net:default`); the whole range unless given.
    pub default_subnet: IpNetwork,
    pub init: Init,
}

/// Bits of `n`'s family.
fn family_bits(n: &IpNetwork) -> u8 {
    match n {
        IpNetwork::V4(_) => 32,
        IpNetwork::V6(_) => 128,
    }
}

/// `n` written with its host bits cleared.
fn network_of(n: &IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).unwrap_or(*n)
}

/// A network address with at least 4 addresses, or why not.
fn check_network(flag: &str, n: &IpNetwork) -> Result<(), String> {
    if n.ip() != n.network() {
        return Err(format!(
            "{flag} {n}: not a network address (host bits set); did you mean {}?",
            network_of(n)
        ));
    }
    let bits = family_bits(n);
    if n.prefix() > bits - MIN_HOST_BITS {
        return Err(format!(
            "{flag} {n}: too small; give at least 4 addresses (a prefix of /{} or shorter)",
            bits - MIN_HOST_BITS
        ));
    }
    Ok(())
}

/// Whether two networks share an address (never across families).
fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

impl IpamConfig {
    /// Checks the range (a network address of 4 addresses or more, IPv4 or
    /// IPv6, clear of loopback, link-local and multicast) and the default
    /// subnet (a network within the range; the range itself if `None`).
    pub fn new(
        range: IpNetwork,
        default_subnet: Option<IpNetwork>,
        init: Init,
    ) -> Result<IpamConfig, String> {
        check_network("--ipalloc-range", &range)?;
        if let Some((_, what)) = RESERVED.iter().find(|(r, _)| overlaps(r, &range)) {
            return Err(format!(
                "--ipalloc-range {range}: overlaps the {what} addresses; choose another range"
            ));
        }
        let default_subnet = match default_subnet {
            None => range,
            Some(s) => {
                check_network("--ipalloc-default-subnet", &s)?;
                if s.prefix() < range.prefix() || !range.contains(s.network()) {
                    return Err(format!(
                        "--ipalloc-default-subnet {s}: not within --ipalloc-range {range}"
                    ));
                }
                s
            }
        };
        Ok(IpamConfig {
            range,
            default_subnet,
            init,
        })
    }
}

/// How many peers must take part before the first ring is made, or `None`
/// when no consensus is held (`seed` and `observer`).
///
/// `consensus=N` says it outright. Plain `consensus` infers it from the
/// peers named at launch (`peers_given`, this router not counted): they
/// and this router are taken to be the whole mesh, and a majority of it
/// must agree, `(peers_given + 1) / 2 + 1`. A majority keeps two halves of
/// a split mesh from each making a ring of their own; a launch naming no
/// peer needs only itself.
pub fn quorum(init: &Init, peers_given: usize) -> Option<u32> {
    match init {
        Init::Consensus(Some(n)) => Some(*n),
        Init::Consensus(None) => {
            let peers = u32::try_from(peers_given).unwrap_or(u32::MAX - 1);
            Some(peers.saturating_add(1) / 2 + 1)
        }
        Init::Seed(_) | Init::Observer => None,
    }
}

/// The first of the host's networks (route destinations and interface
/// addresses, each with how to describe it, e.g. "route 10.32.0.0/16 dev
/// eth0" or "address 10.33.1.1/24 on eth1") that overlaps `range`, as the
/// error to show. Default routes (prefix 0) never count: they cover
/// everything and take nothing.
pub fn overlap(range: IpNetwork, host: &[(IpNetwork, String)]) -> Option<String> {
    host.iter()
        .find(|(n, _)| n.prefix() != 0 && overlaps(n, &range))
        .map(|(_, what)| {
            format!(
                "--ipalloc-range {range} overlaps {what} on this host; choose another range with --ipalloc-range"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn peer(s: &str) -> PeerName {
        s.parse().unwrap()
    }

    #[test]
    fn default_range_is_weaves() {
        assert_eq!(DEFAULT_RANGE, net("10.32.0.0/12"));
        assert_eq!(DEFAULT_RANGE.to_string(), "10.32.0.0/12");
    }

    #[test]
    fn init_modes() {
        assert_eq!(parse_init("consensus"), Ok(Init::Consensus(None)));
        assert_eq!(parse_init("consensus=3"), Ok(Init::Consensus(Some(3))));
        assert_eq!(parse_init("consensus=1"), Ok(Init::Consensus(Some(1))));
        assert_eq!(parse_init("observer"), Ok(Init::Observer));
        assert_eq!(
            parse_init("seed=aa:bb:cc:dd:ee:01,aa:bb:cc:dd:ee:02"),
            Ok(Init::Seed(vec![
                peer("aa:bb:cc:dd:ee:01"),
                peer("aa:bb:cc:dd:ee:02")
            ]))
        );
        assert_eq!(
            parse_init("seed=aa:bb:cc:dd:ee:01"),
            Ok(Init::Seed(vec![peer("aa:bb:cc:dd:ee:01")]))
        );
    }

    #[test]
    fn consensus_zero_is_refused_clearly() {
        assert_eq!(
            parse_init("consensus=0"),
            Err("--ipalloc-init consensus=0: the quorum must be at least 1 (consensus=N with N peers taking part, or plain consensus to infer it from the peers given)".into())
        );
    }

    #[test]
    fn bad_init_names_the_flag() {
        for bad in [
            "",
            "consensus=",
            "consensus=-1",
            "consensus=x",
            "consensus=4294967296",
            "seed",
            "seed=",
            "seed=aa:bb",
            "seed=aa:bb:cc:dd:ee:01,",
            "seed=aa:bb:cc:dd:ee:01,aa:bb:cc:dd:ee:01",
            "seed=00:00:00:00:00:00",
            "observer=1",
            "Consensus",
            "quorum=2",
            "consensus=2=3",
            "seed=é",
        ] {
            let e = parse_init(bad).expect_err(bad);
            assert!(e.starts_with("--ipalloc-init "), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
        assert_eq!(
            parse_init("mayhem"),
            Err(
                "--ipalloc-init mayhem: expected consensus, consensus=N, seed=NAME,... or observer"
                    .into()
            )
        );
        assert_eq!(
            parse_init("seed=aa:bb"),
            Err("--ipalloc-init seed=aa:bb: invalid peer name \"aa:bb\": expected six hex bytes like aa:bb:cc:dd:ee:ff".into())
        );
    }

    #[test]
    fn ranges_and_default_subnets() {
        let c = IpamConfig::new(DEFAULT_RANGE, None, Init::Observer).unwrap();
        assert_eq!(c.default_subnet, DEFAULT_RANGE);
        let c = IpamConfig::new(
            DEFAULT_RANGE,
            Some(net("10.32.1.0/24")),
            Init::Consensus(None),
        )
        .unwrap();
        assert_eq!(c.range, DEFAULT_RANGE);
        assert_eq!(c.default_subnet, net("10.32.1.0/24"));
        assert_eq!(c.init, Init::Consensus(None));
        // The whole range as its own default subnet, and the smallest sizes.
        assert!(IpamConfig::new(DEFAULT_RANGE, Some(DEFAULT_RANGE), Init::Observer).is_ok());
        assert!(IpamConfig::new(net("10.1.1.0/30"), None, Init::Observer).is_ok());
        // IPv6.
        let c = IpamConfig::new(
            net("fd00:1::/64"),
            Some(net("fd00:1::/120")),
            Init::Observer,
        );
        assert_eq!(c.map(|c| c.default_subnet), Ok(net("fd00:1::/120")));
        assert!(IpamConfig::new(net("fd00::/126"), None, Init::Observer).is_ok());
    }

    #[test]
    fn bad_ranges_say_what_to_give() {
        let err = |r: &str, s: Option<&str>| {
            IpamConfig::new(net(r), s.map(net), Init::Observer).unwrap_err()
        };
        assert_eq!(
            err("10.32.1.0/12", None),
            "--ipalloc-range 10.32.1.0/12: not a network address (host bits set); did you mean 10.32.0.0/12?"
        );
        assert_eq!(
            err("10.1.1.0/31", None),
            "--ipalloc-range 10.1.1.0/31: too small; give at least 4 addresses (a prefix of /30 or shorter)"
        );
        assert_eq!(
            err("fd00::/127", None),
            "--ipalloc-range fd00::/127: too small; give at least 4 addresses (a prefix of /126 or shorter)"
        );
        assert_eq!(
            err("127.0.0.0/16", None),
            "--ipalloc-range 127.0.0.0/16: overlaps the loopback addresses; choose another range"
        );
        assert!(err("0.0.0.0/0", None).contains("loopback"));
        assert!(err("ff00::/12", None).contains("multicast"));
        assert!(err("fe80::/64", None).contains("link-local"));
        assert!(err("::/0", None).contains("overlaps"));
        assert_eq!(
            err("10.32.0.0/12", Some("10.48.0.0/24")),
            "--ipalloc-default-subnet 10.48.0.0/24: not within --ipalloc-range 10.32.0.0/12"
        );
        assert_eq!(
            err("10.32.0.0/12", Some("10.0.0.0/8")),
            "--ipalloc-default-subnet 10.0.0.0/8: not within --ipalloc-range 10.32.0.0/12"
        );
        assert!(err("10.32.0.0/12", Some("fd00::/64")).contains("not within"));
        assert_eq!(
            err("10.32.0.0/12", Some("10.32.1.1/24")),
            "--ipalloc-default-subnet 10.32.1.1/24: not a network address (host bits set); did you mean 10.32.1.0/24?"
        );
        assert!(err("10.32.0.0/12", Some("10.32.1.0/32")).contains("too small"));
    }

    #[test]
    fn quorum_given_or_a_majority_of_those_named() {
        assert_eq!(quorum(&Init::Consensus(Some(5)), 0), Some(5));
        assert_eq!(quorum(&Init::Consensus(Some(1)), 9), Some(1));
        // Peers named at launch, plus this one; a majority of them.
        let inferred: Vec<_> = (0..6).map(|n| quorum(&Init::Consensus(None), n)).collect();
        assert_eq!(
            inferred,
            [Some(1), Some(2), Some(2), Some(3), Some(3), Some(4)]
        );
        assert!(quorum(&Init::Consensus(None), usize::MAX).is_some());
        assert_eq!(quorum(&Init::Observer, 3), None);
        assert_eq!(
            quorum(&Init::Seed(vec![peer("aa:bb:cc:dd:ee:01")]), 3),
            None
        );
    }

    #[test]
    fn overlap_names_the_clash_and_the_flag() {
        let host = |v: &[(&str, &str)]| -> Vec<(IpNetwork, String)> {
            v.iter().map(|(n, w)| (net(n), w.to_string())).collect()
        };
        let h = host(&[
            ("0.0.0.0/0", "route 0.0.0.0/0 via 192.168.1.1 dev eth0"),
            ("::/0", "route ::/0 dev eth0"),
            ("192.168.1.7/24", "address 192.168.1.7/24 on eth0"),
            ("10.32.0.0/16", "route 10.32.0.0/16 dev eth0"),
            ("10.33.1.1/24", "address 10.33.1.1/24 on eth1"),
        ]);
        assert_eq!(
            overlap(DEFAULT_RANGE, &h).as_deref(),
            Some("--ipalloc-range 10.32.0.0/12 overlaps route 10.32.0.0/16 dev eth0 on this host; choose another range with --ipalloc-range")
        );
        assert_eq!(
            overlap(net("10.33.0.0/16"), &h).as_deref(),
            Some("--ipalloc-range 10.33.0.0/16 overlaps address 10.33.1.1/24 on eth1 on this host; choose another range with --ipalloc-range")
        );
        // A wider host network that holds the whole range counts too.
        let wide = host(&[("10.0.0.0/8", "route 10.0.0.0/8 via 192.168.1.1 dev eth0")]);
        assert!(overlap(DEFAULT_RANGE, &wide).is_some());
        // Neighbours, default routes and other families do not.
        assert_eq!(overlap(net("10.48.0.0/12"), &h), None);
        assert_eq!(overlap(net("10.31.255.252/30"), &h), None);
        assert_eq!(overlap(net("fd00::/64"), &h), None);
        assert_eq!(overlap(DEFAULT_RANGE, &[]), None);
        let v6 = host(&[("fd00:0:0:1::5/64", "address fd00:0:0:1::5/64 on eth0")]);
        assert!(overlap(net("fd00::/48"), &v6).is_some());
        assert_eq!(overlap(net("fd00:1::/48"), &v6), None);
    }
}
