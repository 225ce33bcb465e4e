//! IPAM gossip (control frames of kind 4): one peer's whole IPAM state,
//! `allocator::Gossip`. Big-endian throughout:
//!
//!     version u8 (1)
//!     range   family u8 (4|6), address (4|16 bytes), prefix u8
//!     ring    cluster u64, size u128, count u32,
//!             count × (token u128, version u64, owner [6], free u128)
//!     paxos   count u16, count × (peer [6], promise (u64, [6]),
//!             accepted (u64, [6]), n u16, n × peer [6])
//!     records count u16, count × (peer [6], seq u64, digest u64,
//!             n u8, n × (id u64, start u128, end u128),
//!             m u8, m × (peer [6], want id u64))
//!
//! Every count is checked against its cap before anything is reserved, so
//! the largest message fits one control frame and a hostile one costs
//! nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::Reader;
use crate::core::ipam::allocator::{Gossip, Record, Want, MAX_DENIED, MAX_RECORDS, MAX_WANTS};
use crate::core::ipam::consensus::{Claims, Paxos, Proposal, MAX_NODES};
use crate::core::ipam::ring::{Entry, Ring, MAX_TOKENS};
use crate::core::ipam::space::Span;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamWireError {
    #[error("IPAM gossip truncated in its {0}")]
    Truncated(&'static str),
    #[error("IPAM gossip version {0} not understood")]
    Version(u8),
    #[error("IPAM gossip: bad range")]
    BadRange,
    #[error("IPAM gossip: {0} over its cap")]
    TooMany(&'static str),
    #[error("IPAM gossip: bad ring: {0}")]
    BadRing(#[from] crate::core::ipam::ring::RingError),
    #[error("IPAM gossip: empty span in a request")]
    BadSpan,
    #[error("IPAM gossip: {0} trailing bytes")]
    Trailing(usize),
}

trait ReadMore {
    fn u128(&mut self) -> Option<u128>;
    fn proposal(&mut self) -> Option<Proposal>;
}

impl ReadMore for Reader<'_> {
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_be_bytes(self.bytes(16)?.try_into().ok()?))
    }

    fn proposal(&mut self) -> Option<Proposal> {
        Some(Proposal {
            round: self.u64()?,
            proposer: self.peer_name()?,
        })
    }
}

pub fn emit(g: &Gossip) -> Vec<u8> {
    let mut out = vec![VERSION];
    match g.range {
        IpNetwork::V4(n) => {
            out.push(4);
            out.extend_from_slice(&n.network().octets());
        }
        IpNetwork::V6(n) => {
            out.push(6);
            out.extend_from_slice(&n.network().octets());
        }
    }
    out.push(g.range.prefix());
    out.extend_from_slice(&g.ring.cluster().to_be_bytes());
    out.extend_from_slice(&g.ring.size().to_be_bytes());
    out.extend_from_slice(&(g.ring.tokens() as u32).to_be_bytes());
    for (t, e) in g.ring.entries() {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&e.version.to_be_bytes());
        out.extend_from_slice(&e.owner.0);
        out.extend_from_slice(&e.free.to_be_bytes());
    }
    let nodes = g.paxos.nodes();
    out.extend_from_slice(&(nodes.len().min(MAX_NODES) as u16).to_be_bytes());
    for (p, c) in nodes.iter().take(MAX_NODES) {
        out.extend_from_slice(&p.0);
        for prop in [c.promise, c.accepted] {
            out.extend_from_slice(&prop.round.to_be_bytes());
            out.extend_from_slice(&prop.proposer.0);
        }
        let value = &c.value[..c.value.len().min(MAX_NODES)];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        for v in value {
            out.extend_from_slice(&v.0);
        }
    }
    out.extend_from_slice(&(g.records.len().min(MAX_RECORDS) as u16).to_be_bytes());
    for (p, r) in g.records.iter().take(MAX_RECORDS) {
        out.extend_from_slice(&p.0);
        out.extend_from_slice(&r.seq.to_be_bytes());
        out.extend_from_slice(&r.digest.to_be_bytes());
        let wants = &r.wants[..r.wants.len().min(MAX_WANTS)];
        out.push(wants.len() as u8);
        for w in wants {
            out.extend_from_slice(&w.id.to_be_bytes());
            out.extend_from_slice(&w.span.start().to_be_bytes());
            out.extend_from_slice(&w.span.end().to_be_bytes());
        }
        let denied = &r.denied[..r.denied.len().min(MAX_DENIED)];
        out.push(denied.len() as u8);
        for (asker, id) in denied {
            out.extend_from_slice(&asker.0);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

/// `n`, if it is within `cap`.
fn capped(n: usize, cap: usize, what: &'static str) -> Result<usize, IpamWireError> {
    if n > cap {
        return Err(IpamWireError::TooMany(what));
    }
    Ok(n)
}

pub fn parse(b: &[u8]) -> Result<Gossip, IpamWireError> {
    use IpamWireError::Truncated as T;
    let mut r = Reader::new(b);
    let version = r.u8().ok_or(T("header"))?;
    if version != VERSION {
        return Err(IpamWireError::Version(version));
    }
    let ip = match r.u8().ok_or(T("range"))? {
        4 => IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(r.bytes(4).ok_or(T("range"))?).map_err(|_| T("range"))?,
        )),
        6 => IpAddr::V6(Ipv6Addr::from(r.u128().ok_or(T("range"))?)),
        _ => return Err(IpamWireError::BadRange),
    };
    let prefix = r.u8().ok_or(T("range"))?;
    let range = IpNetwork::new(ip, prefix).map_err(|_| IpamWireError::BadRange)?;
    if range.network() != ip {
        return Err(IpamWireError::BadRange);
    }

    let cluster = r.u64().ok_or(T("ring"))?;
    let size = r.u128().ok_or(T("ring"))?;
    let n = capped(r.u32().ok_or(T("ring"))? as usize, MAX_TOKENS, "ring")?;
    let mut entries = Vec::with_capacity(n.min(r.remaining() / 46));
    for _ in 0..n {
        let token = r.u128().ok_or(T("ring"))?;
        let version = r.u64().ok_or(T("ring"))?;
        let owner = r.peer_name().ok_or(T("ring"))?;
        let free = r.u128().ok_or(T("ring"))?;
        entries.push((
            token,
            Entry {
                version,
                owner,
                free,
            },
        ));
    }
    let ring = Ring::from_entries(cluster, size, entries)?;

    let n = capped(usize::from(r.u16().ok_or(T("paxos"))?), MAX_NODES, "paxos")?;
    let mut paxos = Paxos::new();
    for _ in 0..n {
        let peer = r.peer_name().ok_or(T("paxos"))?;
        let promise = r.proposal().ok_or(T("paxos"))?;
        let accepted = r.proposal().ok_or(T("paxos"))?;
        let m = capped(
            usize::from(r.u16().ok_or(T("paxos"))?),
            MAX_NODES,
            "paxos value",
        )?;
        let mut value = Vec::with_capacity(m.min(r.remaining() / 6));
        for _ in 0..m {
            value.push(r.peer_name().ok_or(T("paxos"))?);
        }
        paxos.insert(
            peer,
            Claims {
                promise,
                accepted,
                value,
            },
        );
    }

    let n = capped(
        usize::from(r.u16().ok_or(T("records"))?),
        MAX_RECORDS,
        "records",
    )?;
    let mut records = BTreeMap::new();
    for _ in 0..n {
        let peer = r.peer_name().ok_or(T("records"))?;
        let seq = r.u64().ok_or(T("records"))?;
        let digest = r.u64().ok_or(T("records"))?;
        let m = capped(usize::from(r.u8().ok_or(T("records"))?), MAX_WANTS, "wants")?;
        let mut wants = Vec::with_capacity(m);
        for _ in 0..m {
            let id = r.u64().ok_or(T("records"))?;
            let start = r.u128().ok_or(T("records"))?;
            let end = r.u128().ok_or(T("records"))?;
            let span = Span::new(start, end).ok_or(IpamWireError::BadSpan)?;
            wants.push(Want { id, span });
        }
        let m = capped(
            usize::from(r.u8().ok_or(T("records"))?),
            MAX_DENIED,
            "refusals",
        )?;
        let mut denied = Vec::with_capacity(m);
        for _ in 0..m {
            denied.push((
                r.peer_name().ok_or(T("records"))?,
                r.u64().ok_or(T("records"))?,
            ));
        }
        records.insert(
            peer,
            Record {
                seq,
                digest,
                wants,
                denied,
            },
        );
    }
    if !r.is_empty() {
        return Err(IpamWireError::Trailing(r.remaining()));
    }
    Ok(Gossip {
        range,
        ring,
        paxos,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ipam::allocator::{Ipam, Start};
    use crate::core::wire::control::MAX_FRAME_LEN;
    use crate::core::PeerName;

    fn p(n: u8) -> PeerName {
        PeerName([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn round_trips_a_live_state() {
        let range: IpNetwork = "10.32.0.0/12".parse().unwrap();
        let mut a = Ipam::new(p(1), range, range, Start::Seed(vec![p(1), p(2)]));
        a.allocate("c1", None).unwrap().unwrap();
        let g = a.gossip().clone();
        assert_eq!(parse(&emit(&g)), Ok(g));
        let v6: IpNetwork = "fd00::/64".parse().unwrap();
        let b = Ipam::new(p(1), v6, v6, Start::Consensus { quorum: 2 });
        let g = b.gossip().clone();
        assert_eq!(parse(&emit(&g)), Ok(g));
    }

    #[test]
    fn the_largest_state_fits_one_control_frame() {
        let per_token = 16 + 8 + 6 + 16;
        let per_node = 6 + 14 + 14 + 2 + 6 * MAX_NODES;
        let per_record = 6 + 8 + 8 + 1 + 40 * MAX_WANTS + 1 + 14 * MAX_DENIED;
        let most = 1
            + 1
            + 16
            + 1
            + 8
            + 16
            + 4
            + per_token * MAX_TOKENS
            + 2
            + per_node * MAX_NODES
            + 2
            + per_record * MAX_RECORDS;
        assert!(most < MAX_FRAME_LEN - 1, "{most}");
    }

    #[test]
    fn hostile_input_is_refused() {
        let range: IpNetwork = "10.32.0.0/12".parse().unwrap();
        let a = Ipam::new(p(1), range, range, Start::Seed(vec![p(1)]));
        let good = emit(a.gossip());
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(parse(&trailing), Err(IpamWireError::Trailing(1)));
        let mut host_bits = good.clone();
        host_bits[5] = 1;
        assert_eq!(parse(&host_bits), Err(IpamWireError::BadRange));
        let mut huge = good[..7 + 8 + 16].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse(&huge), Err(IpamWireError::TooMany("ring")));
    }
}
