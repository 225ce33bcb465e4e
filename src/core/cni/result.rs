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

/// `result` as JSON in `version`'s layout (an interface's MTU is 1.1's).
pub fn render(version: SpecVersion, mut result: CNIResult) -> String {
    if version < SpecVersion::new(1, 1, 0) {
        for i in &mut result.interfaces {
            i.mtu = None;
        }
    }
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
        assert_eq!(rendered("1.1.0")["interfaces"][0]["mtu"], 1376);
        for v in ["1.0.0", "1.1.0"] {
            let mut r = rendered(v);
            r["interfaces"][0].as_object_mut().unwrap().remove("mtu");
            assert_eq!(
                r,
                json!({
                    "cniVersion": v,
                    "interfaces": [{"name": "eth0", "mac": "02:42:0a:20:00:05",
                                    "sandbox": "/var/run/netns/pod"}],
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

    /// The ADD result example of the spec (SPEC.md, "Success"), 1.x
    /// layout; 1.1 adds an interface's "mtu".
    const SPEC_1X: &str = r#"{
      "cniVersion": "1.1.0",
      "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "veth3243", "mac": "55:44:33:22:11:11"},
        {"name": "eth0", "mac": "99:88:77:66:55:44", "mtu": 1500, "sandbox": "/var/run/netns/blue"}
      ],
      "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
      "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
      "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com", "search": ["example.com"]}
    }"#;

    /// The same example in the 0.3.x/0.4.0 layout (SPEC.md of 0.4.0).
    const SPEC_04: &str = r#"{
      "cniVersion": "0.4.0",
      "interfaces": [{"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}],
      "ips": [{"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
      "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
      "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com", "search": ["example.com"]}
    }"#;

    /// Every key of `ours` is a key of `spec` with a value of the same JSON
    /// type, all the way down (array elements against the spec's first).
    fn same_shape(ours: &Value, spec: &Value, path: &str) {
        match (ours, spec) {
            (Value::Object(o), Value::Object(s)) => {
                for (k, v) in o {
                    let sv = s
                        .get(k)
                        .unwrap_or_else(|| panic!("{path}.{k}: not in the spec's example"));
                    same_shape(v, sv, &format!("{path}.{k}"));
                }
            }
            (Value::Array(o), Value::Array(s)) => {
                for (i, v) in o.iter().enumerate() {
                    // The example's fullest element.
                    let sv = s
                        .iter()
                        .max_by_key(|x| x.as_object().map_or(0, |o| o.len()))
                        .unwrap();
                    same_shape(v, sv, &format!("{path}[{i}]"));
                }
            }
            (o, s) => assert_eq!(
                std::mem::discriminant(o),
                std::mem::discriminant(s),
                "{path}: {o} is not of the type of the spec's {s}"
            ),
        }
    }

    #[test]
    fn results_have_the_shape_of_the_specs_examples() {
        let mut a = attached();
        a.gateways = vec![(a.addrs[0], "10.32.0.1".parse().unwrap())];
        a.routes = vec![Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.32.0.1".parse().unwrap()),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }];
        let spec_1x: Value = serde_json::from_str(SPEC_1X).unwrap();
        let spec_04: Value = serde_json::from_str(SPEC_04).unwrap();
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let version: SpecVersion = v.parse().unwrap();
            let ours: Value = serde_json::from_str(&render(version, add_result(&a))).unwrap();
            let mut spec = if version.is_legacy() {
                spec_04.clone()
            } else {
                spec_1x.clone()
            };
            if v == "1.0.0" {
                // 1.0 has no interface MTU.
                spec["interfaces"][2].as_object_mut().unwrap().remove("mtu");
            }
            let spec = &spec;
            same_shape(&ours, spec, v);
            for key in ["cniVersion", "interfaces", "ips", "routes", "dns"] {
                assert!(ours.get(key).is_some(), "{v}: no {key} in {ours}");
            }
            assert_eq!(ours["ips"][0]["gateway"], "10.32.0.1", "{v}");
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
