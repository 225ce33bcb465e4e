//! Topology gossip: a list of peer entries.
//!
//!     count u16be, then per entry:
//!       name[6] uid u64be version u64be nick_len u8 nick conn_count u16be
//!       per connection: peer[6] flags u8 (bit0 outbound, bit1 ipv6)
//!                       ip (4 or 16 bytes) port u16be
//!
//! Parsing checks structure only; the caps on what a merge may hold are the
//! topology's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::super::topology::{ConnectionInfo, PeerEntry};
use super::Reader;

const FLAG_OUTBOUND: u8 = 1;
const FLAG_IPV6: u8 = 2;

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum GossipError {
    #[error("gossip truncated in entry {0}")]
    Truncated(usize),
    #[error("gossip entry {0}: nickname is not UTF-8")]
    BadNickname(usize),
    #[error("gossip has {0} trailing bytes")]
    Trailing(usize),
    #[error("gossip names {0} entries, more than fit in one message")]
    TooMany(usize),
}

pub fn emit(entries: &[PeerEntry]) -> Result<Vec<u8>, GossipError> {
    let count = u16::try_from(entries.len()).map_err(|_| GossipError::TooMany(entries.len()))?;
    let mut out = Vec::with_capacity(64 * entries.len() + 2);
    out.extend_from_slice(&count.to_be_bytes());
    for e in entries {
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&e.uid.to_be_bytes());
        out.extend_from_slice(&e.version.to_be_bytes());
        let nick = super::handshake::truncate_utf8(&e.nickname, usize::from(u8::MAX));
        out.push(nick.len() as u8);
        out.extend_from_slice(nick.as_bytes());
        let conns = &e.connections[..e.connections.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(conns.len() as u16).to_be_bytes());
        for c in conns {
            out.extend_from_slice(c.peer.as_bytes());
            let mut flags = if c.outbound { FLAG_OUTBOUND } else { 0 };
            match c.addr.ip() {
                IpAddr::V4(ip) => {
                    out.push(flags);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    flags |= FLAG_IPV6;
                    out.push(flags);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&c.addr.port().to_be_bytes());
        }
    }
    Ok(out)
}

pub fn parse(b: &[u8]) -> Result<Vec<PeerEntry>, GossipError> {
    let mut r = Reader::new(b);
    let count = r.u16().ok_or(GossipError::Truncated(0))?;
    // Each entry needs at least 25 bytes: never reserve more than the input could hold.
    let mut entries = Vec::with_capacity(usize::from(count).min(r.remaining() / 25));
    for i in 0..usize::from(count) {
        entries.push(parse_entry(&mut r, i)?);
    }
    if !r.is_empty() {
        return Err(GossipError::Trailing(r.remaining()));
    }
    Ok(entries)
}

fn parse_entry(r: &mut Reader<'_>, i: usize) -> Result<PeerEntry, GossipError> {
    let t = GossipError::Truncated(i);
    let name = r.peer_name().ok_or(t)?;
    let uid = r.u64().ok_or(t)?;
    let version = r.u64().ok_or(t)?;
    let nick_len = r.u8().ok_or(t)?;
    let nick = r.bytes(usize::from(nick_len)).ok_or(t)?;
    let nickname = std::str::from_utf8(nick)
        .map_err(|_| GossipError::BadNickname(i))?
        .to_string();
    let n = r.u16().ok_or(t)?;
    let mut connections = Vec::with_capacity(usize::from(n).min(r.remaining() / 13));
    for _ in 0..n {
        let peer = r.peer_name().ok_or(t)?;
        let flags = r.u8().ok_or(t)?;
        let ip = if flags & FLAG_IPV6 != 0 {
            let o: [u8; 16] = r.bytes(16).ok_or(t)?.try_into().map_err(|_| t)?;
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let o: [u8; 4] = r.bytes(4).ok_or(t)?.try_into().map_err(|_| t)?;
            IpAddr::V4(Ipv4Addr::from(o))
        };
        let port = r.u16().ok_or(t)?;
        connections.push(ConnectionInfo {
            peer,
            addr: SocketAddr::new(ip, port),
            outbound: flags & FLAG_OUTBOUND != 0,
        });
    }
    Ok(PeerEntry {
        name,
        nickname,
        uid,
        version,
        connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PeerName;

    fn entries() -> Vec<PeerEntry> {
        vec![
            PeerEntry {
                name: PeerName([2, 0, 0, 0, 0, 1]),
                nickname: "h1".into(),
                uid: 1,
                version: 10,
                connections: vec![
                    ConnectionInfo {
                        peer: PeerName([2, 0, 0, 0, 0, 2]),
                        addr: "10.0.0.2:6783".parse().unwrap(),
                        outbound: true,
                    },
                    ConnectionInfo {
                        peer: PeerName([2, 0, 0, 0, 0, 3]),
                        addr: "[fd00::3]:6783".parse().unwrap(),
                        outbound: false,
                    },
                ],
            },
            PeerEntry {
                name: PeerName([2, 0, 0, 0, 0, 2]),
                nickname: String::new(),
                uid: 2,
                version: 3,
                connections: vec![],
            },
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = emit(&entries()).unwrap();
        assert_eq!(parse(&bytes), Ok(entries()));
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let bytes = emit(&entries()).unwrap();
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "accepted {n} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(parse(&longer), Err(GossipError::Trailing(1)));
    }

    #[test]
    fn huge_counts_do_not_allocate_up_front() {
        assert_eq!(parse(&[0xff, 0xff]), Err(GossipError::Truncated(0)));
    }
}
