//! What a router answers now: the live records of the peers it can reach,
//! indexed both ways. Built again on every change (changes are rare,
//! queries are many) and shared with the server read-only.

use std::collections::HashMap;
use std::net::IpAddr;

/// Names and addresses, by name (lower-case, fully qualified) and by
/// address.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// Normalized, e.g. `weave.local.`.
    pub domain: String,
    pub ttl: u32,
    names: HashMap<String, Vec<IpAddr>>,
    reverse: HashMap<IpAddr, Vec<String>>,
    /// Changes with every build: the SOA serial.
    pub serial: u32,
}

impl Zone {
    pub fn new(domain: &str, ttl: u32) -> Zone {
        Zone {
            domain: domain.to_string(),
            ttl,
            ..Zone::default()
        }
    }

    /// The zone of `records` (name, address), each pair once, addresses of
    /// a name in a stable order (rotation is the answer's job).
    pub fn build<'a>(
        domain: &str,
        ttl: u32,
        serial: u32,
        records: impl IntoIterator<Item = (&'a str, IpAddr)>,
    ) -> Zone {
        let mut z = Zone {
            serial,
            ..Zone::new(domain, ttl)
        };
        for (name, addr) in records {
            let addrs = z.names.entry(name.to_string()).or_default();
            if !addrs.contains(&addr) {
                addrs.push(addr);
                z.reverse.entry(addr).or_default().push(name.to_string());
            }
        }
        for addrs in z.names.values_mut() {
            addrs.sort();
        }
        for names in z.reverse.values_mut() {
            names.sort();
        }
        z
    }

    /// The addresses of a normalized name.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(name).map(Vec::as_slice)
    }

    /// The names of an address.
    pub fn names_of(&self, addr: &IpAddr) -> &[String] {
        self.reverse
            .get(addr)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_both_ways_without_repeats() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let z = Zone::build(
            "weave.local.",
            1,
            7,
            [
                ("web.weave.local.", a),
                ("web.weave.local.", b),
                ("web.weave.local.", a),
                ("db.weave.local.", a),
            ],
        );
        assert_eq!(z.lookup("web.weave.local."), Some(&[b, a][..]));
        assert_eq!(z.names_of(&a), ["db.weave.local.", "web.weave.local."]);
        assert_eq!(z.lookup("nope.weave.local."), None);
        assert!(z.names_of(&"10.9.9.9".parse().unwrap()).is_empty());
        assert_eq!((z.len(), z.serial), (2, 7));
    }
}
