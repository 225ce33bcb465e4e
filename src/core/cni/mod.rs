//! The CNI plugin's decisions that need no I/O: what a network config
//! means (`conf`), how an attachment is named in IPAM, which attachments a
//! GC releases, and the result each spec version expects (`result`).
//!
//! The spec's types come from `rscni-types` (the configuration, results in
//! both layouts, error codes and version negotiation for 0.3.0 to 1.1.0):
//! it holds the types and nothing else, so the plugin stays ours.

pub mod conf;
pub mod result;

pub use rscni_types::error::Error;
pub use rscni_types::version::SpecVersion;

/// The plugin's `type` in a network config, and its binary's name.
pub const PLUGIN_TYPE: &str = "weave-rs-cni";
/// IPAM ids of CNI attachments.
pub const KEY_PREFIX: &str = "cni:";

/// The IPAM id (and registry key) of a runtime's attachment: the spec keys
/// an attachment by container ID and interface name.
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{KEY_PREFIX}{container_id}:{ifname}")
}

/// Who owns a CNI attachment's DNS names: DNS gossip carries owners of
/// at most 64 letters and digits, which a key (`cni:<id>:<ifname>`) is
/// not; two FNV-1a hashes of it (both directions) make one that is.
pub fn dns_owner(key: &str) -> String {
    fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
        bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    format!(
        "cni{:016x}{:016x}",
        fnv(key.bytes()),
        fnv(key.bytes().rev())
    )
}

/// How the router's refusals that a runtime should retry begin.
pub const TRY_AGAIN: &str = "try again later: ";

/// A container ID as the spec allows it: letters, digits, `_`, `.`, `-`
/// (and 1 to 256 of them).
pub fn valid_container_id(id: &str) -> bool {
    (1..=256).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// (container ID, interface name) of a key made by `key`.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(KEY_PREFIX)?.rsplit_once(':')
}

/// The keys among `held` that a GC keeping `valid` (container ID,
/// interface name) releases: CNI attachments only, never another front
/// door's.
pub fn gc_victims<'a>(
    held: impl IntoIterator<Item = &'a str>,
    valid: &[(String, String)],
) -> Vec<String> {
    let keep: std::collections::BTreeSet<String> = valid.iter().map(|(c, i)| key(c, i)).collect();
    let mut out: Vec<String> = held
        .into_iter()
        .filter(|k| parse_key(k).is_some() && !keep.contains(*k))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `CNI_ARGS` (`K=V;K=V`): the pairs, or what is wrong with them.
pub fn parse_args(args: &str) -> Result<Vec<(String, String)>, String> {
    args.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("CNI_ARGS: {p:?} is not KEY=VALUE")),
        })
        .collect()
}

/// The addresses a runtime asks for: `IP=` in `CNI_ARGS` (podman's
/// `--ip`; several separated by commas) and runtimeConfig `ips`.
pub fn requested_ips(
    args: &[(String, String)],
    runtime_ips: &[String],
) -> Result<Vec<std::net::IpAddr>, String> {
    let from_args = args
        .iter()
        .filter(|(k, _)| k == "IP")
        .flat_map(|(_, v)| v.split(','));
    let mut out = Vec::new();
    for text in from_args.chain(runtime_ips.iter().map(String::as_str)) {
        let text = text.trim();
        // runtimeConfig gives CIDRs; the address is what counts.
        let addr = text.split('/').next().unwrap_or_default();
        let ip = addr
            .parse()
            .map_err(|_| format!("requested IP {text:?} is not an address"))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// The most names one attachment gets (DNS records per peer are capped).
pub const MAX_NAMES: usize = 16;

/// The names a container is known by: the pod or container name a runtime
/// passes (`K8S_POD_NAME`), then its network aliases, each once, at most
/// `MAX_NAMES` (the router qualifies them in its domain and drops what is
/// not a name).
pub fn names(args: &[(String, String)], aliases: &[String]) -> Vec<String> {
    let pod = args
        .iter()
        .filter(|(k, _)| k == "K8S_POD_NAME")
        .map(|(_, v)| v.clone());
    let mut out: Vec<String> = Vec::new();
    for name in pod.chain(aliases.iter().cloned()) {
        let name = name.to_ascii_lowercase();
        if !name.is_empty() && !out.contains(&name) && out.len() < MAX_NAMES {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_name_the_interface() {
        let k = key("0123abcd", "eth0");
        assert_eq!(k, "cni:0123abcd:eth0");
        assert_eq!(parse_key(&k), Some(("0123abcd", "eth0")));
        assert_eq!(parse_key("docker:endpoint:02:42:00:00:00:01"), None);
        assert_eq!(parse_key("cni:nocolon"), None);
    }

    #[test]
    fn dns_owners_fit_dns_gossip_and_differ_per_interface() {
        let a = dns_owner(&key(&"f".repeat(64), "eth0"));
        let b = dns_owner(&key(&"f".repeat(64), "eth1"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 35);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a, dns_owner(&key(&"f".repeat(64), "eth0")));
    }

    #[test]
    fn gc_releases_cni_attachments_not_listed_only() {
        let held = [
            "cni:a:eth0",
            "cni:a:eth1",
            "cni:b:eth0",
            "docker:endpoint:02:42:00:00:00:01",
            "0f3e9a",
            "cni:b:eth0",
        ];
        let valid = vec![("a".to_string(), "eth0".to_string())];
        assert_eq!(gc_victims(held, &valid), ["cni:a:eth1", "cni:b:eth0"]);
        assert_eq!(gc_victims(held, &[]).len(), 3);
    }

    #[test]
    fn cni_args_parse_or_say_what_is_wrong() {
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[1], ("K8S_POD_NAME".to_string(), "web".to_string()));
        assert_eq!(parse_args("").unwrap(), vec![]);
        let e = parse_args("IgnoreUnknown=1;oops").unwrap_err();
        assert!(e.contains("\"oops\""), "{e}");
    }

    #[test]
    fn requested_ips_come_from_cni_args_and_runtime_config() {
        let args = parse_args("IgnoreUnknown=1;IP=10.32.5.5,10.32.5.6").unwrap();
        let ips = requested_ips(&args, &["10.32.5.6/24".to_string()]).unwrap();
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0].to_string(), "10.32.5.5");
        let e = requested_ips(&parse_args("IP=ten").unwrap(), &[]).unwrap_err();
        assert!(e.contains("\"ten\""), "{e}");
        assert!(requested_ips(&[], &[]).unwrap().is_empty());
    }

    #[test]
    fn names_are_the_pod_name_and_aliases_once() {
        let args = vec![("K8S_POD_NAME".to_string(), "Web".to_string())];
        let aliases = vec!["web".to_string(), "db".to_string(), String::new()];
        assert_eq!(names(&args, &aliases), ["web", "db"]);
        assert!(names(&[], &[]).is_empty());
        let many: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
        assert_eq!(names(&[], &many).len(), MAX_NAMES);
    }
}
