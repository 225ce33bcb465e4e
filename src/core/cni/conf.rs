//! A weave-rs network config, as the runtime hands it to the plugin: the
//! spec's fields (`rscni_types::types::NetConf`) and ours, checked.
//!
//! ```json
//! {"cniVersion": "1.1.0", "name": "weave-rs", "type": "weave-rs-cni",
//!  "bridge": "weave", "mtu": 1376, "subnet": "10.32.8.0/24",
//!  "hairpin": true, "dns": {"nameservers": ["169.254.53.53"]}}
//! ```
//! `subnet` (or `"ipam": {"type": "weave-rs", "subnet": ...}`) picks the
//! subnet of the allocation range to allocate from; none: the default
//! subnet. An `ipam` of another type is called instead of weave-rs IPAM.

use ipnetwork::IpNetwork;
use rscni_types::error::Error;
use rscni_types::types::{CNIResult, Dns, NetConf};
use serde_json::Value;

use super::SpecVersion;

/// The IPAM type that means weave-rs IPAM itself.
pub const OUR_IPAM: &str = "weave-rs";

/// Where addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// weave-rs IPAM, in this subnet (None: the default subnet).
    Ours(Option<IpNetwork>),
    /// Another IPAM plugin, called with the same config.
    Delegated(String),
}

/// A config the plugin can act on.
#[derive(Debug, Clone)]
pub struct PluginConf {
    pub name: String,
    /// The bridge the runtime expects (checked against the router's).
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    pub addressing: Addressing,
    /// Hairpin mode on the host end: a pod reaches itself through a
    /// service address. Default on.
    pub hairpin: bool,
    /// A default route via the host, exposed in the subnet (`gateway`,
    /// default on; off when the IPAM plugin is another's).
    pub gateway: bool,
    /// DNS settings to report, replacing the router's.
    pub dns: Option<Dns>,
    /// The container's aliases on this network (runtimeConfig `aliases`).
    pub aliases: Vec<String>,
    /// Addresses asked for in runtimeConfig `ips`.
    pub ips: Vec<String>,
    pub prev_result: Option<CNIResult>,
    /// GC: the attachments to keep (container ID, interface name).
    pub valid_attachments: Option<Vec<(String, String)>>,
}

/// Reads a config from stdin's bytes; the spec's error codes for what is
/// wrong (6: not JSON or not a config; 7: a bad value).
pub fn parse(bytes: &[u8]) -> Result<(NetConf, SpecVersion), Error> {
    let conf: NetConf = serde_json::from_slice(bytes)
        .map_err(|e| Error::FailedToDecode(format!("the network config: {e}")))?;
    let version = conf.version()?;
    Ok((conf, version))
}

/// Our fields of `conf`, checked.
pub fn plugin_conf(conf: &NetConf) -> Result<PluginConf, Error> {
    conf.validate_name()?;
    let bad = |field: &str, want: &str, v: &Value| {
        Error::InvalidNetworkConfig(format!("{field:?} must be {want}, not {v}"))
    };
    let custom = &conf.custom;
    let bridge = match custom.get("bridge") {
        None | Some(Value::Null) => None,
        Some(Value::String(b)) if valid_ifname(b) => Some(b.clone()),
        Some(v) => return Err(bad("bridge", "an interface name", v)),
    };
    let mtu = match custom.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(m @ 68..=65535) => Some(m as u32),
            _ => return Err(bad("mtu", "a number from 68 to 65535", v)),
        },
    };
    let hairpin = match custom.get("hairpin").or_else(|| custom.get("hairpinMode")) {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(bad("hairpin", "true or false", v)),
    };
    let gateway = match custom.get("gateway") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(bad("gateway", "true or false", v)),
    };
    let subnet = match custom.get("subnet") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_subnet("subnet", v)?),
    };
    let addressing = match (&conf.ipam, subnet) {
        (None, s) => Addressing::Ours(s),
        (Some(ipam), s) if ipam.r#type == OUR_IPAM => {
            let inner = match ipam.custom.get("subnet") {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_subnet("ipam.subnet", v)?),
            };
            if s.is_some() && inner.is_some() && s != inner {
                return Err(Error::InvalidNetworkConfig(
                    "\"subnet\" and \"ipam.subnet\" differ: give one".into(),
                ));
            }
            Addressing::Ours(s.or(inner))
        }
        (Some(ipam), None) if !ipam.r#type.is_empty() => Addressing::Delegated(ipam.r#type.clone()),
        (Some(ipam), None) => {
            return Err(Error::InvalidNetworkConfig(format!(
                "\"ipam\" needs a \"type\" ({OUR_IPAM}, or another IPAM plugin), not {:?}",
                ipam.r#type
            )))
        }
        (Some(ipam), Some(_)) => {
            return Err(Error::InvalidNetworkConfig(format!(
                "\"subnet\" is for weave-rs IPAM; the config names IPAM plugin {:?}",
                ipam.r#type
            )))
        }
    };
    let gateway = gateway && matches!(addressing, Addressing::Ours(_));
    let runtime = |key: &str| conf.runtime_config.as_ref()?.custom.get(key);
    // Podman's aliases: {"<network>": ["alias", ...]}.
    let aliases = strings(runtime("aliases").and_then(|a| a.get(&conf.name)));
    let ips = strings(runtime("ips"));
    let valid_attachments = conf.valid_attachments.as_ref().map(|v| {
        v.iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect()
    });
    Ok(PluginConf {
        name: conf.name.clone(),
        bridge,
        mtu,
        addressing,
        hairpin,
        gateway,
        dns: conf.dns.clone(),
        aliases,
        ips,
        prev_result: conf.prev_result.clone(),
        valid_attachments,
    })
}

/// The strings of a JSON array (none: empty; other values skipped).
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_subnet(field: &str, v: &Value) -> Result<IpNetwork, Error> {
    let text = v.as_str().ok_or_else(|| {
        Error::InvalidNetworkConfig(format!("{field:?} must be a CIDR string, not {v}"))
    })?;
    let net: IpNetwork = text.parse().map_err(|_| {
        Error::InvalidNetworkConfig(format!(
            "{field:?}: {text:?} is not a CIDR (e.g. 10.32.8.0/24)"
        ))
    })?;
    if net.ip() != net.network() {
        return Err(Error::InvalidNetworkConfig(format!(
            "{field:?}: {text} has host bits set (did you mean {}/{}?)",
            net.network(),
            net.prefix()
        )));
    }
    Ok(net)
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<PluginConf, Error> {
        let (c, _) = parse(json.as_bytes())?;
        plugin_conf(&c)
    }

    fn code(e: &Error) -> u32 {
        u32::from(e)
    }

    #[test]
    fn a_plain_config_means_the_default_subnet_and_hairpin() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"weave-rs","type":"weave-rs-cni"}"#).unwrap();
        assert_eq!(c.addressing, Addressing::Ours(None));
        assert!(c.hairpin);
        assert_eq!((c.bridge, c.mtu), (None, None));
    }

    #[test]
    fn fields_are_read() {
        let c = conf(
            r#"{"cniVersion":"0.4.0","name":"n","type":"weave-rs-cni","bridge":"weave",
                "mtu":1400,"subnet":"10.32.8.0/24","hairpin":false,
                "dns":{"nameservers":["10.0.0.53"]},
                "runtimeConfig":{"aliases":{"n":["web","www"],"other":["x"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.bridge.as_deref(), Some("weave"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(
            c.addressing,
            Addressing::Ours(Some("10.32.8.0/24".parse().unwrap()))
        );
        assert!(!c.hairpin);
        assert_eq!(c.dns.unwrap().nameservers, ["10.0.0.53"]);
        assert_eq!(c.aliases, ["web", "www"]);
    }

    #[test]
    fn ipam_is_ours_or_delegated() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"weave-rs","subnet":"10.32.9.0/24"}}"#).unwrap();
        assert_eq!(
            c.addressing,
            Addressing::Ours(Some("10.32.9.0/24".parse().unwrap()))
        );
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"host-local","ranges":[]}}"#).unwrap();
        assert_eq!(c.addressing, Addressing::Delegated("host-local".into()));
        let e = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t","subnet":"10.32.9.0/24","ipam":{"type":"host-local"}}"#).unwrap_err();
        assert_eq!(code(&e), 7);
    }

    #[test]
    fn bad_values_are_named_with_code_7() {
        for (json, words) in [
            (r#""mtu":"big""#, "\"mtu\""),
            (r#""mtu":20"#, "68 to 65535"),
            (r#""subnet":"10.32.8.1/24""#, "host bits"),
            (r#""subnet":"ten""#, "not a CIDR"),
            (r#""bridge":"a/b""#, "\"bridge\""),
            (r#""hairpin":"yes""#, "\"hairpin\""),
        ] {
            let e = conf(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"t",{json}}}"#
            ))
            .unwrap_err();
            assert_eq!(code(&e), 7, "{json}: {e}");
            assert!(e.to_string().contains(words), "{json}: {e}");
        }
    }

    #[test]
    fn not_a_config_is_code_6_and_a_bad_name_code_7() {
        assert_eq!(code(&conf("{").unwrap_err()), 6);
        assert_eq!(
            code(&conf(r#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap_err()),
            6
        );
        let e = conf(r#"{"cniVersion":"1.0.0","name":"bad name","type":"t"}"#).unwrap_err();
        assert_eq!(code(&e), 7);
    }

    #[test]
    fn ifnames() {
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a-name-that-is-too-long"));
        assert!(!valid_ifname("a b"));
    }
}
