//! Names for containers across the mesh (weaveDNS's job, done again):
//! - `records`: the name records every peer gossips, each owned by its
//!   origin peer's incarnation, merged per record (a CRDT);
//! - `zone`: what this host answers now, built from the records of the
//!   peers it can reach;
//! - `answer`: one DNS query in, the reply (or "forward it") out;
//! - `resolv_conf`: the host's upstream resolvers.
//!
//! Names are kept as lower-case fully qualified names (`db.weave.local.`),
//! so lookups ignore case; the reply spells the name as it was asked.

pub mod answer;
pub mod deaths;
pub mod flood;
pub mod records;
pub mod resolv_conf;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr};

/// The domain containers are named in unless `--dns-domain` says otherwise.
pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// Where each router answers: a link-local address on its own bridge, the
/// same on every host, which no host's ARP answer ever leaves (the router
/// keeps ARP for it off the overlay), so each container reaches the router
/// of its own host.
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 53, 53));
/// The TTL of every answer, and of the SOA that negative answers carry (so
/// a name that appears is found within as long). Short: a replaced
/// container's new address is seen within one second.
pub const DEFAULT_TTL: u32 = 1;
/// RFC 1035 limits.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty DNS name")]
    Empty,
    #[error("DNS name {0:?} is longer than 253 characters")]
    TooLong(String),
    #[error("DNS name {0:?} has an empty label or one longer than 63 characters")]
    BadLabel(String),
    #[error("DNS name {0:?}: only letters, digits, '-' and '_' may appear in a label")]
    BadChar(String),
    #[error("{0:?} is not in the domain {1}")]
    OutsideDomain(String, String),
}

/// `name` as a lower-case fully qualified name (with the trailing dot),
/// checked: what is stored, gossiped and looked up.
pub fn normalize(name: &str) -> Result<String, NameError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_string()));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(NameError::BadLabel(name.to_string()));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NameError::BadChar(name.to_string()));
        }
    }
    let mut out = bare.to_ascii_lowercase();
    out.push('.');
    Ok(out)
}

/// Is the normalized `name` inside the normalized `domain` (and not the
/// domain itself)?
pub fn in_domain(name: &str, domain: &str) -> bool {
    name.len() > domain.len()
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// A name `registered` under `domain`: `db` becomes `db.weave.local.`; a
/// name that already ends with the domain stays as it is; any other
/// fully qualified name is refused.
pub fn qualify(name: &str, domain: &str) -> Result<String, NameError> {
    let n = normalize(name)?;
    if in_domain(&n, domain) {
        return Ok(n);
    }
    if name.ends_with('.') || name.contains('.') {
        return Err(NameError::OutsideDomain(
            name.to_string(),
            domain.to_string(),
        ));
    }
    normalize(&format!("{}.{domain}", n.trim_end_matches('.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_fully_qualified() {
        assert_eq!(normalize("Db.Weave.Local").unwrap(), "db.weave.local.");
        assert_eq!(normalize("db.weave.local.").unwrap(), "db.weave.local.");
        assert_eq!(normalize("a_b-1").unwrap(), "a_b-1.");
        assert_eq!(normalize(""), Err(NameError::Empty));
        assert_eq!(normalize("."), Err(NameError::Empty));
        assert!(matches!(normalize("a..b"), Err(NameError::BadLabel(_))));
        assert!(matches!(
            normalize(&"x".repeat(64)),
            Err(NameError::BadLabel(_))
        ));
        assert!(matches!(
            normalize(&["a"; 130].join(".")),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(normalize("a b"), Err(NameError::BadChar(_))));
        assert!(matches!(normalize("é.local"), Err(NameError::BadChar(_))));
    }

    #[test]
    fn domain_membership_is_by_whole_labels() {
        let d = "weave.local.";
        assert!(in_domain("db.weave.local.", d));
        assert!(in_domain("a.b.weave.local.", d));
        assert!(!in_domain("weave.local.", d));
        assert!(!in_domain("dbweave.local.", d));
        assert!(!in_domain("db.other.local.", d));
    }

    #[test]
    fn short_names_are_put_in_the_domain() {
        let d = "weave.local.";
        assert_eq!(qualify("db", d).unwrap(), "db.weave.local.");
        assert_eq!(qualify("API.weave.local", d).unwrap(), "api.weave.local.");
        assert!(matches!(
            qualify("api.example.com", d),
            Err(NameError::OutsideDomain(..))
        ));
    }
}
