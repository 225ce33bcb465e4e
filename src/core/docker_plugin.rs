//! The Docker plugin's decisions that need no I/O: how pools and the
//! addresses of endpoints are named in IPAM, which network options and
//! address spaces are accepted, and the names of an endpoint's veth pair.

use ipnetwork::IpNetwork;
use serde_json::Value;

/// The driver's name, for `-d` and `--ipam-driver`.
pub const DRIVER: &str = "weave-rs";
/// The address spaces we report; Docker's own IPAM uses `LocalDefault` and
/// `GlobalDefault`.
pub const LOCAL_SPACE: &str = "weave-rs";
pub const GLOBAL_SPACE: &str = "weave-rs-global";
const POOL_PREFIX: &str = "weave-rs:";
/// IPAM ids of the plugin's allocations (so startup can tell them apart).
pub const IPAM_ID_PREFIX: &str = "docker:";
/// `RequestAddress`'s option naming the gateway request.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
pub const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";

/// A PoolID says which subnet it is, so nothing about pools needs keeping.
pub fn pool_id(subnet: IpNetwork) -> String {
    format!("{POOL_PREFIX}{subnet}")
}

pub fn parse_pool_id(id: &str) -> Result<IpNetwork, String> {
    id.strip_prefix(POOL_PREFIX)
        .and_then(|s| s.parse::<IpNetwork>().ok())
        .ok_or_else(|| format!("{id:?} is not a weave-rs pool"))
}

/// The IPAM id of a network's gateway address on this host.
pub fn gateway_key(subnet: IpNetwork) -> String {
    format!("{IPAM_ID_PREFIX}gateway:{subnet}")
}

/// The IPAM id of an endpoint's address: the endpoint's MAC (the engine
/// sends it with every address request, and the same MAC with the
/// endpoint that follows).
pub fn endpoint_key(mac: &str) -> String {
    format!("{IPAM_ID_PREFIX}endpoint:{}", mac.to_ascii_lowercase())
}

/// `docker network create -o K=V` options: weave-rs networks take none,
/// so each one is an error naming it.
pub fn check_network_options(generic: Option<&Value>) -> Result<(), String> {
    let Some(Value::Object(opts)) = generic else {
        return Ok(());
    };
    match opts.keys().next() {
        None => Ok(()),
        Some(k) => Err(format!(
            "unknown network option {k:?}: weave-rs networks take no -o options"
        )),
    }
}

/// The address space of a new network: ours, or Docker's own IPAM (which
/// would hand out the same addresses on every host).
pub fn check_address_space(space: &str) -> Result<(), String> {
    if space == LOCAL_SPACE || space == GLOBAL_SPACE {
        Ok(())
    } else {
        Err(format!(
            "a weave-rs network needs --ipam-driver {DRIVER} (its addresses came from {space:?}: \
             Docker's own IPAM allocates on each host alone, so two hosts would hand out the same \
             addresses)"
        ))
    }
}

/// The veth pair of an endpoint: the end that stays on the bridge, and the
/// one the engine moves into the container (as `ethweN`). 15 bytes at most.
pub fn veth_names(endpoint_id: &str) -> (String, String) {
    let short: String = endpoint_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    (format!("vethwrp{short}"), format!("vethwpc{short}"))
}

/// A MAC for an endpoint the engine gave none: locally administered,
/// unicast, from the endpoint ID.
pub fn endpoint_mac(endpoint_id: &str) -> String {
    let mut mac = [0u8; 6];
    let digest = super::ipam::digest_u64(|c| c.update(endpoint_id.as_bytes()));
    mac[1..].copy_from_slice(&digest.to_be_bytes()[..5]);
    mac[0] = 0x02;
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_ids_name_their_subnet() {
        let n: IpNetwork = "10.32.0.0/12".parse().unwrap();
        assert_eq!(parse_pool_id(&pool_id(n)), Ok(n));
        assert!(parse_pool_id("pool-1").is_err());
        assert!(parse_pool_id("weave-rs:10.32.0.300/12").is_err());
    }

    #[test]
    fn options_and_address_spaces_are_checked() {
        assert!(check_network_options(None).is_ok());
        assert!(check_network_options(Some(&json!({}))).is_ok());
        let e = check_network_options(Some(&json!({"mtu": "9000"}))).unwrap_err();
        assert!(e.contains("\"mtu\""), "{e}");
        assert!(check_address_space(LOCAL_SPACE).is_ok());
        let e = check_address_space("LocalDefault").unwrap_err();
        assert!(e.contains("--ipam-driver weave-rs"), "{e}");
    }

    #[test]
    fn veth_names_fit_and_macs_are_local_unicast() {
        let (h, p) = veth_names("4674fb97e2a1ffff");
        assert_eq!(
            (h.as_str(), p.as_str()),
            ("vethwrp4674fb97", "vethwpc4674fb97")
        );
        assert!(h.len() <= 15 && p.len() <= 15);
        let mac = endpoint_mac("4674fb97");
        assert!(mac.starts_with("02:"), "{mac}");
        assert_eq!(mac, endpoint_mac("4674fb97"));
        assert_ne!(mac, endpoint_mac("4674fb98"));
        assert_eq!(
            endpoint_key("02:42:AB:00:00:01"),
            "docker:endpoint:02:42:ab:00:00:01"
        );
    }
}
