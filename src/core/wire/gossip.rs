//! Topology gossip: a list of peer entries.
//!
//!     count u16be, then per entry:
//!       name[6] uid u64be version u64be nick_len u8 nick conn_count u16be
//!       per connection: peer[6] flags u8 (bit0 outbound, bit1 ipv6)
//!                       ip (4 or 16 bytes) port u16be
//!
//! Parsing checks structure only; the caps on what a merge may hold are the
//! topology's business. A body is at most `MAX_BODY` bytes: `emit_split`
//! spreads a long list over as many bodies as it takes, whole entries each.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::super::topology::{
    ConnectionInfo, PeerEntry, MAX_CONNECTIONS_PER_PEER, MAX_NICKNAME_LEN,
};
use super::control;
use super::Reader;

const FLAG_OUTBOUND: u8 = 1;
const FLAG_IPV6: u8 = 2;

/// The most bytes of one gossip body: with its type byte, a control frame
/// of 64 KiB.
pub const MAX_BODY: usize = 64 * 1024 - 1;
/// An entry without nickname and connections.
const ENTRY_FIXED_LEN: usize = 6 + 8 + 8 + 1 + 2;
/// A connection to an IPv6 address (IPv4 ones take 12 bytes less).
const MAX_CONNECTION_LEN: usize = 6 + 1 + 16 + 2;
/// The largest entry the topology's caps allow: 25,689 bytes.
pub const MAX_ENTRY_LEN: usize =
    ENTRY_FIXED_LEN + MAX_NICKNAME_LEN + MAX_CONNECTIONS_PER_PEER * MAX_CONNECTION_LEN;

// Every entry the topology holds fits in a body of its own, and every body
// in a control frame: splitting never has to cut an entry.
const _: () = assert!(2 + MAX_ENTRY_LEN <= MAX_BODY);
const _: () = assert!(MAX_BODY < control::MAX_FRAME_LEN);

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
    #[error("gossip entry {index}: nickname of {len} bytes, more than 255")]
    NicknameTooLong { index: usize, len: usize },
    #[error("gossip entry {index}: {count} connections, more than 65535")]
    TooManyConnections { index: usize, count: usize },
    #[error("gossip entry {index}: {len} bytes, more than a message of {max} bytes holds")]
    EntryTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
}

/// The bytes `e` takes in a body.
fn entry_len(e: &PeerEntry) -> usize {
    let conns: usize = e
        .connections
        .iter()
        .map(|c| match c.addr.ip() {
            IpAddr::V4(_) => MAX_CONNECTION_LEN - 12,
            IpAddr::V6(_) => MAX_CONNECTION_LEN,
        })
        .sum();
    ENTRY_FIXED_LEN + e.nickname.len() + conns
}

/// One body carrying `entries`. Nothing is cut: a nickname or connection
/// list longer than the format carries is an error.
pub fn emit(entries: &[PeerEntry]) -> Result<Vec<u8>, GossipError> {
    let count = u16::try_from(entries.len()).map_err(|_| GossipError::TooMany(entries.len()))?;
    let len = 2 + entries.iter().map(entry_len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&count.to_be_bytes());
    for (index, e) in entries.iter().enumerate() {
        emit_entry(&mut out, index, e)?;
    }
    Ok(out)
}

/// `entries` in as few bodies as it takes, in order, each at most
/// `max_body` bytes and holding whole entries. An entry that alone does
/// not fit is an error (impossible for entries within the topology's caps
/// and `max_body` = `MAX_BODY`: see `MAX_ENTRY_LEN`).
pub fn emit_split(entries: &[PeerEntry], max_body: usize) -> Result<Vec<Vec<u8>>, GossipError> {
    let mut bodies = Vec::new();
    let (mut start, mut len) = (0, 2);
    for (index, e) in entries.iter().enumerate() {
        let n = entry_len(e);
        if 2 + n > max_body {
            return Err(GossipError::EntryTooLarge {
                index,
                len: n,
                max: max_body,
            });
        }
        if len + n > max_body || index - start == usize::from(u16::MAX) {
            bodies.push(emit(&entries[start..index])?);
            (start, len) = (index, 2);
        }
        len += n;
    }
    if start < entries.len() {
        bodies.push(emit(&entries[start..])?);
    }
    Ok(bodies)
}

fn emit_entry(out: &mut Vec<u8>, index: usize, e: &PeerEntry) -> Result<(), GossipError> {
    let nick_len = u8::try_from(e.nickname.len()).map_err(|_| GossipError::NicknameTooLong {
        index,
        len: e.nickname.len(),
    })?;
    let conn_count =
        u16::try_from(e.connections.len()).map_err(|_| GossipError::TooManyConnections {
            index,
            count: e.connections.len(),
        })?;
    out.extend_from_slice(e.name.as_bytes());
    out.extend_from_slice(&e.uid.to_be_bytes());
    out.extend_from_slice(&e.version.to_be_bytes());
    out.push(nick_len);
    out.extend_from_slice(e.nickname.as_bytes());
    out.extend_from_slice(&conn_count.to_be_bytes());
    for c in &e.connections {
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
    Ok(())
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

    /// An entry as large as the topology's caps allow.
    fn largest(i: u16) -> PeerEntry {
        let [hi, lo] = i.to_be_bytes();
        PeerEntry {
            name: PeerName([6, 0, 0, 0, hi, lo]),
            nickname: "n".repeat(MAX_NICKNAME_LEN),
            uid: u64::MAX,
            version: u64::MAX,
            connections: (0..MAX_CONNECTIONS_PER_PEER as u16)
                .map(|c| ConnectionInfo {
                    peer: PeerName([6, 0, 0, 1, (c >> 8) as u8, c as u8]),
                    addr: SocketAddr::new(Ipv6Addr::from(u128::from(c)).into(), c),
                    outbound: c % 2 == 0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_largest_entry_fits_a_body() {
        let e = largest(1);
        assert_eq!(entry_len(&e), MAX_ENTRY_LEN);
        let bodies = emit_split(std::slice::from_ref(&e), MAX_BODY).unwrap();
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].len(), 2 + MAX_ENTRY_LEN);
        assert_eq!(parse(&bodies[0]), Ok(vec![e]));
    }

    #[test]
    fn long_lists_are_split_by_bytes_whole_entries_each() {
        // Two of the largest fit a body, a third does not.
        let big: Vec<PeerEntry> = (0..5).map(largest).collect();
        let bodies = emit_split(&big, MAX_BODY).unwrap();
        let counts: Vec<_> = bodies.iter().map(|b| parse(b).unwrap().len()).collect();
        assert_eq!(counts, vec![2, 2, 1]);
        // Many small entries: as few bodies as the bytes need.
        let small: Vec<PeerEntry> = (0..5000u16)
            .map(|i| PeerEntry {
                name: PeerName([6, 0, 0, 0, (i >> 8) as u8, i as u8]),
                ..entries()[0].clone()
            })
            .collect();
        let bodies = emit_split(&small, MAX_BODY).unwrap();
        let total: usize = small.iter().map(entry_len).sum();
        assert_eq!(bodies.len(), total.div_ceil(MAX_BODY - 2));
        let mut back = Vec::new();
        for b in &bodies {
            assert!(b.len() <= MAX_BODY, "{} bytes", b.len());
            back.extend(parse(b).unwrap());
        }
        assert_eq!(back, small);
        assert_eq!(emit_split(&[], MAX_BODY), Ok(vec![]));
    }

    #[test]
    fn nothing_is_cut_silently() {
        let mut e = entries()[0].clone();
        e.nickname = "n".repeat(256);
        assert_eq!(
            emit(&[entries()[1].clone(), e.clone()]),
            Err(GossipError::NicknameTooLong { index: 1, len: 256 })
        );
        e.nickname.clear();
        e.connections = vec![e.connections[0].clone(); 65_536];
        assert_eq!(
            emit(&[e.clone()]),
            Err(GossipError::TooManyConnections {
                index: 0,
                count: 65_536
            })
        );
        // An entry too large for the body size asked for.
        let e = largest(1);
        assert_eq!(
            emit_split(&[entries()[1].clone(), e], 1000),
            Err(GossipError::EntryTooLarge {
                index: 1,
                len: MAX_ENTRY_LEN,
                max: 1000
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn split_bodies_fit_and_carry_everything(
            n in 0usize..200,
            conns in 0usize..40,
            max_body in 200usize..3000,
        ) {
            let list: Vec<PeerEntry> = (0..n)
                .map(|i| {
                    let mut e = entries()[i % 2].clone();
                    e.name = PeerName([6, 0, 0, 0, (i >> 8) as u8, i as u8]);
                    let c = e.connections.first().cloned();
                    e.connections = c.into_iter().cycle().take(conns * (i % 3)).collect();
                    e
                })
                .collect();
            match emit_split(&list, max_body) {
                Ok(bodies) => {
                    let mut back = Vec::new();
                    for b in &bodies {
                        proptest::prop_assert!(b.len() <= max_body);
                        back.extend(parse(b).unwrap());
                    }
                    proptest::prop_assert_eq!(back, list);
                }
                Err(GossipError::EntryTooLarge { index, len, .. }) => {
                    proptest::prop_assert!(2 + len > max_body);
                    proptest::prop_assert_eq!(entry_len(&list[index]), len);
                }
                Err(e) => proptest::prop_assert!(false, "{e}"),
            }
        }
    }
}
