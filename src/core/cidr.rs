//! Addresses users type for `attach`, `expose` and friends.

use ipnetwork::IpNetwork;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0}: invalid CIDR (expected an address with a prefix length, e.g. 10.2.1.1/24)")]
    Invalid(String),
    #[error("{0}: missing prefix length (e.g. {0}/24)")]
    NoPrefix(String),
    #[error("{0}: is the network address of its subnet, not a host address")]
    NetworkAddress(String),
}

/// Parse "10.2.1.1/24" or "fd00::1/64": an address with a prefix length.
pub fn parse(s: &str) -> Result<IpNetwork, CidrError> {
    let s = s.trim();
    if !s.contains('/') {
        return match s.parse::<std::net::IpAddr>() {
            Ok(_) => Err(CidrError::NoPrefix(s.to_string())),
            Err(_) => Err(CidrError::Invalid(s.to_string())),
        };
    }
    let net: IpNetwork = s.parse().map_err(|_| CidrError::Invalid(s.to_string()))?;
    let host_bits = u32::from(match net {
        IpNetwork::V4(_) => 32u8,
        IpNetwork::V6(_) => 128u8,
    }) - u32::from(net.prefix());
    if host_bits >= 2 && net.ip() == net.network() {
        return Err(CidrError::NetworkAddress(s.to_string()));
    }
    Ok(net)
}

/// Parse several, failing on the first bad one.
pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Vec<IpNetwork>, CidrError> {
    items.iter().map(|s| parse(s.as_ref())).collect()
}

/// Is `s` meant as a CIDR, valid or not (for telling the CIDRs of `run` from
/// the docker arguments after them)? Address characters, a slash, digits:
/// "10.2.1.300/24" is a (bad) CIDR, "example/redis" is not.
pub fn looks_like_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((addr, prefix)) => {
            !addr.is_empty()
                && !prefix.is_empty()
                && addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
                && prefix.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad() {
        assert!(parse("10.2.1.1/24").is_ok());
        assert!(parse("fd00::1/64").is_ok());
        assert!(parse("10.2.1.1/32").is_ok());
        assert_eq!(
            parse("10.2.1.300/24"),
            Err(CidrError::Invalid("10.2.1.300/24".into()))
        );
        assert_eq!(
            parse("10.2.1.1/33"),
            Err(CidrError::Invalid("10.2.1.1/33".into()))
        );
        assert_eq!(
            parse("10.2.1.1"),
            Err(CidrError::NoPrefix("10.2.1.1".into()))
        );
        assert_eq!(
            parse("10.2.1.0/24"),
            Err(CidrError::NetworkAddress("10.2.1.0/24".into()))
        );
        assert_eq!(
            parse("nonsense"),
            Err(CidrError::Invalid("nonsense".into()))
        );
        assert_eq!(
            parse("10.2.1.300/24").unwrap_err().to_string(),
            "10.2.1.300/24: invalid CIDR (expected an address with a prefix length, e.g. 10.2.1.1/24)"
        );
    }

    #[test]
    fn recognises_cidrs_among_docker_arguments() {
        assert!(looks_like_cidr("10.2.1.1/24"));
        assert!(looks_like_cidr("10.2.1.300/24"));
        assert!(looks_like_cidr("fd00::1/64"));
        assert!(!looks_like_cidr("dead/beef"));
        assert!(!looks_like_cidr("-d"));
        assert!(!looks_like_cidr("example/redis"));
    }
}
