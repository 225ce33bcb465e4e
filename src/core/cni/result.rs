//! What the plugin prints: an ADD result in the layout the config's
//! version expects (0.3.x and 0.4.0 share one, 1.x another), VERSION's
//! answer, and errors.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use rscni_types::error::Error;
use rscni_types::ipnet::IpNet;
use rscni_types::legacy;
use rscni_types::types::{
    CNIResult, CNIResultWithVersion, Dns, ErrorResult, Interface, IpConfig, Route,
};
use rscni_types::version::PluginInfo;

use super::SpecVersion;

/// An interface made for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ifname: String,
    pub mac: String,
    /// The network namespace path (`CNI_NETNS`).
    pub sandbox: String,
    pub mtu: u32,
    pub addrs: Vec<IpNetwork>,
    /// From a delegated IPAM plugin: gateways and routes it gave.
    pub gateways: Vec<(IpNetwork, IpAddr)>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

pub fn ipnet(n: IpNetwork) -> IpNet {
    IpNet::new(n.ip(), n.prefix()).unwrap_or_else(|_| IpNet::from(n.ip()))
}

pub fn ipnetwork(n: &IpNet) -> Option<IpNetwork> {
    IpNetwork::new(n.addr(), n.prefix_len()).ok()
}

/// The spec's result: the container's interface (index 0), its addresses
/// on it, routes and DNS.
pub fn add_result(a: &Attached) -> CNIResult {
    CNIResult {
        interfaces: vec![Interface {
            name: a.ifname.clone(),
            mac: a.mac.clone(),
            mtu: Some(a.mtu),
            sandbox: Some(a.sandbox.clone()),
            socket_path: None,
            pci_id: None,
        }],
        ips: a
            .addrs
            .iter()
            .map(|n| IpConfig {
                interface: Some(0),
                address: ipnet(*n),
                gateway: a.gateways.iter().find(|(net, _)| net == n).map(|(_, g)| *g),
            })
            .collect(),
        routes: a.routes.clone(),
        dns: Some(a.dns.clone()),
    }
}

/// `result` as JSON in `version`'s layout.
pub fn render(version: SpecVersion, result: CNIResult) -> String {
    let json = if version.is_legacy() {
        serde_json::to_string(&legacy::CNIResult::new(version, result))
    } else {
        serde_json::to_string(&CNIResultWithVersion::new(version, result))
    };
    json.unwrap_or_else(|e| render_error(version, &Error::IOFailure(e.to_string())))
}

/// VERSION's answer: the versions this plugin speaks.
pub fn version_info() -> String {
    serde_json::to_string(&PluginInfo::default()).unwrap_or_default()
}

pub fn render_error(version: SpecVersion, e: &Error) -> String {
    serde_json::to_string(&ErrorResult::new(version, e)).unwrap_or_else(|_| {
        format!(
            r#"{{"cniVersion":"{version}","code":{},"msg":"error"}}"#,
            u32::from(e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn attached() -> Attached {
        Attached {
            ifname: "eth0".into(),
            mac: "02:42:0a:20:00:05".into(),
            sandbox: "/var/run/netns/pod".into(),
            mtu: 1376,
            addrs: vec!["10.32.0.5/12".parse().unwrap()],
            gateways: vec![],
            routes: vec![],
            dns: Dns {
                nameservers: vec!["169.254.53.53".into()],
                domain: None,
                search: Some(vec!["weave.local".into()]),
                options: None,
            },
        }
    }

    fn rendered(v: &str) -> Value {
        let version: SpecVersion = v.parse().unwrap();
        serde_json::from_str(&render(version, add_result(&attached()))).unwrap()
    }

    /// The shapes of the spec's own examples (SPEC.md, "Success"; for
    /// 0.4.0, its "version" per address).
    #[test]
    fn one_dot_x_results_have_the_spec_shape() {
        for v in ["1.0.0", "1.1.0"] {
            assert_eq!(
                rendered(v),
                json!({
                    "cniVersion": v,
                    "interfaces": [{"name": "eth0", "mac": "02:42:0a:20:00:05",
                                    "mtu": 1376, "sandbox": "/var/run/netns/pod"}],
                    "ips": [{"address": "10.32.0.5/12", "interface": 0}],
                    "dns": {"nameservers": ["169.254.53.53"], "search": ["weave.local"]}
                })
            );
        }
    }

    #[test]
    fn legacy_results_carry_the_address_version() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let r = rendered(v);
            assert_eq!(r["cniVersion"], v);
            assert_eq!(
                r["ips"],
                json!([{"version": "4", "address": "10.32.0.5/12", "interface": 0}])
            );
            assert_eq!(r["interfaces"][0]["sandbox"], "/var/run/netns/pod");
            assert!(r["interfaces"][0].get("mtu").is_none(), "{r}");
        }
    }

    #[test]
    fn errors_and_versions_have_the_spec_shape() {
        let e: Value = serde_json::from_str(&render_error(
            "1.0.0".parse().unwrap(),
            &Error::TryAgainLater("the router is starting".into()),
        ))
        .unwrap();
        assert_eq!(e["code"], 11);
        assert_eq!(e["cniVersion"], "1.0.0");
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()));
        let v: Value = serde_json::from_str(&version_info()).unwrap();
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
