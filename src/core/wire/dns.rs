//! DNS gossip (control frames of kind 5): name records
//! (`core::dns::records`), grouped by origin. Big-endian throughout:
//!
//!     version u8 (1)
//!     groups  u16, groups × (origin [6], uid u64, n u16,
//!             n × (version u64, flags u8 (bit 0: alive), family u8 (4|6),
//!                  address (4|16), name_len u8, name, id_len u8, id))
//!
//! Names arrive as stored: lower case, fully qualified, checked; container
//! IDs are at most 64 letters and digits. A message holds at most
//! `MAX_BODY` bytes: `emit` splits a long list over several, which merge
//! in any order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Reader;
use crate::core::dns::normalize;
use crate::core::dns::records::{Key, Record, MAX_CONTAINER_LEN};

const VERSION: u8 = 1;
/// The most one message holds; a whole record fits many times over.
pub const MAX_BODY: usize = 60 * 1024;
const ALIVE: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsWireError {
    #[error("DNS gossip truncated in its {0}")]
    Truncated(&'static str),
    #[error("DNS gossip version {0} not understood")]
    Version(u8),
    #[error("DNS gossip: bad address family {0}")]
    BadFamily(u8),
    #[error("DNS gossip: bad name {0:?}")]
    BadName(String),
    #[error("DNS gossip: bad container ID")]
    BadContainer,
    #[error("DNS gossip: {0} trailing bytes")]
    Trailing(usize),
}

/// Encoded size of one record (not counting its group header).
fn record_len(r: &Record) -> usize {
    let addr = if r.key.addr.is_ipv4() { 4 } else { 16 };
    8 + 1 + 1 + addr + 1 + r.key.name.len() + 1 + r.container.len()
}

/// Messages carrying `records`, each at most `MAX_BODY` bytes. Records
/// that could never be parsed (a name or ID over its limit) are left out.
pub fn emit(records: &[Record]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Record> = records
        .iter()
        .filter(|r| r.key.name.len() <= 255 && r.container.len() <= MAX_CONTAINER_LEN)
        .collect();
    sorted.sort_by_key(|r| (r.origin, r.uid));
    let mut msg = Msg::new();
    for r in sorted {
        if msg.len() + 16 + record_len(r) > MAX_BODY {
            out.push(msg.finish());
            msg = Msg::new();
        }
        msg.push(r);
    }
    if msg.groups > 0 || out.is_empty() {
        out.push(msg.finish());
    }
    out
}

/// A message being written: groups are closed when the origin changes.
struct Msg {
    buf: Vec<u8>,
    groups: u16,
    /// Where the open group's count is, and its origin.
    open: Option<(usize, [u8; 6], u64)>,
    /// Records in the open group.
    count: u16,
}

impl Msg {
    fn new() -> Msg {
        Msg {
            buf: vec![VERSION, 0, 0],
            groups: 0,
            open: None,
            count: 0,
        }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn push(&mut self, r: &Record) {
        let same = matches!(self.open, Some((_, o, u)) if o == r.origin.0 && u == r.uid);
        if !same {
            self.close();
            self.buf.extend_from_slice(&r.origin.0);
            self.buf.extend_from_slice(&r.uid.to_be_bytes());
            self.open = Some((self.buf.len(), r.origin.0, r.uid));
            self.buf.extend_from_slice(&[0, 0]);
            self.groups += 1;
        }
        self.count += 1;
        self.buf.extend_from_slice(&r.version.to_be_bytes());
        self.buf.push(if r.alive { ALIVE } else { 0 });
        match r.key.addr {
            IpAddr::V4(a) => {
                self.buf.push(4);
                self.buf.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.buf.push(6);
                self.buf.extend_from_slice(&a.octets());
            }
        }
        self.buf.push(r.key.name.len() as u8);
        self.buf.extend_from_slice(r.key.name.as_bytes());
        self.buf.push(r.container.len() as u8);
        self.buf.extend_from_slice(r.container.as_bytes());
    }

    /// Writes the open group's record count.
    fn close(&mut self) {
        if let Some((at, ..)) = self.open.take() {
            self.buf[at..at + 2].copy_from_slice(&self.count.to_be_bytes());
        }
        self.count = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        self.close();
        self.buf[1..3].copy_from_slice(&self.groups.to_be_bytes());
        self.buf
    }
}

pub fn parse(body: &[u8]) -> Result<Vec<Record>, DnsWireError> {
    use DnsWireError::Truncated;
    let mut r = Reader::new(body);
    let version = r.u8().ok_or(Truncated("header"))?;
    if version != VERSION {
        return Err(DnsWireError::Version(version));
    }
    let groups = r.u16().ok_or(Truncated("header"))?;
    let mut out = Vec::new();
    for _ in 0..groups {
        let origin = r.peer_name().ok_or(Truncated("origin"))?;
        let uid = r.u64().ok_or(Truncated("origin"))?;
        let n = r.u16().ok_or(Truncated("origin"))?;
        for _ in 0..n {
            let version = r.u64().ok_or(Truncated("record"))?;
            let flags = r.u8().ok_or(Truncated("record"))?;
            let addr = match r.u8().ok_or(Truncated("record"))? {
                4 => IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(r.bytes(4).ok_or(Truncated("address"))?)
                        .map_err(|_| Truncated("address"))?,
                )),
                6 => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(r.bytes(16).ok_or(Truncated("address"))?)
                        .map_err(|_| Truncated("address"))?,
                )),
                f => return Err(DnsWireError::BadFamily(f)),
            };
            let len = r.u8().ok_or(Truncated("name"))?;
            let raw = r.bytes(usize::from(len)).ok_or(Truncated("name"))?;
            let name = std::str::from_utf8(raw)
                .ok()
                .filter(|s| normalize(s).as_deref() == Ok(*s))
                .ok_or_else(|| DnsWireError::BadName(String::from_utf8_lossy(raw).into()))?
                .to_string();
            let len = r.u8().ok_or(Truncated("container"))?;
            let raw = r.bytes(usize::from(len)).ok_or(Truncated("container"))?;
            if raw.len() > MAX_CONTAINER_LEN || !raw.iter().all(u8::is_ascii_alphanumeric) {
                return Err(DnsWireError::BadContainer);
            }
            out.push(Record {
                origin,
                uid,
                key: Key { name, addr },
                version,
                alive: flags & ALIVE != 0,
                container: String::from_utf8_lossy(raw).into_owned(),
            });
        }
    }
    if !r.is_empty() {
        return Err(DnsWireError::Trailing(r.remaining()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PeerName;
    use proptest::prelude::*;

    fn rec(o: u8, uid: u64, name: &str, addr: IpAddr, alive: bool) -> Record {
        Record {
            origin: PeerName([0, 0, 0, 0, 0, o]),
            uid,
            key: Key {
                name: name.to_string(),
                addr,
            },
            version: 7,
            alive,
            container: if alive {
                "abc123".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn round_trips_grouped_by_origin() {
        let recs = vec![
            rec(1, 5, "db.weave.local.", "10.0.0.1".parse().unwrap(), true),
            rec(2, 6, "web.weave.local.", "fd00::1".parse().unwrap(), false),
            rec(1, 5, "api.weave.local.", "10.0.0.2".parse().unwrap(), true),
        ];
        let msgs = emit(&recs);
        assert_eq!(msgs.len(), 1);
        let mut back = parse(&msgs[0]).unwrap();
        let mut want = recs.clone();
        let order = |r: &Record| (r.origin, r.key.clone());
        back.sort_by_key(order);
        want.sort_by_key(order);
        assert_eq!(back, want);
        assert_eq!(parse(&emit(&[])[0]).unwrap(), vec![]);
    }

    #[test]
    fn long_lists_are_split_under_the_cap() {
        let recs: Vec<Record> = (0..4000u32)
            .map(|i| {
                let name = format!("{}-{i}.weave.local.", "n".repeat(55));
                rec(1, 1, &name, IpAddr::from(i.to_be_bytes()), true)
            })
            .collect();
        let msgs = emit(&recs);
        assert!(msgs.len() > 1);
        assert!(msgs.iter().all(|m| m.len() <= MAX_BODY));
        let back: usize = msgs.iter().map(|m| parse(m).unwrap().len()).sum();
        assert_eq!(back, recs.len());
    }

    #[test]
    fn hostile_messages_are_refused() {
        let good = emit(&[rec(
            1,
            1,
            "db.weave.local.",
            "10.0.0.1".parse().unwrap(),
            true,
        )])
        .remove(0);
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(parse(&extra), Err(DnsWireError::Trailing(1)));
        let mut upper = good.clone();
        let at = upper.windows(2).position(|w| w == b"db").unwrap();
        upper[at] = b'D';
        assert!(matches!(parse(&upper), Err(DnsWireError::BadName(_))));
        let mut v2 = good;
        v2[0] = 2;
        assert_eq!(parse(&v2), Err(DnsWireError::Version(2)));
    }

    proptest! {
        #[test]
        fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&body);
        }
    }
}
