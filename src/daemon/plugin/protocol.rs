//! The Docker engine's remote driver protocol (libnetwork's network and
//! IPAM drivers), as engine 20.10 speaks it: JSON bodies, PascalCase
//! fields. Requests are read leniently (a missing field or `null` is
//! empty: docker-compose sends `"Options": null`); unknown fields are
//! ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Options as the engine sends them: a map, or `null`.
pub type Options = Option<BTreeMap<String, Value>>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    pub options: Options,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolReply {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePool {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Options,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressReply {
    pub address: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: Options,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Interface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<Interface>,
    pub options: Options,
}

/// Leave, DeleteEndpoint, EndpointOperInfo and the rest that name an
/// endpoint only.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    pub options: Options,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    pub destination: String,
    /// 1: on link (no next hop).
    pub route_type: u8,
    pub next_hop: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    pub interface_name: InterfaceName,
    pub static_routes: Vec<StaticRoute>,
    /// Without it the engine adds docker_gwbridge (a second interface and
    /// a default route) to every container.
    pub disable_gateway_service: bool,
}

/// The error body: `{"Err": "..."}` (sent with status 500: the engine
/// drops an IPAM error sent with 200).
#[derive(Debug, Serialize)]
pub struct ErrorReply {
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_engine_and_compose_send() {
        let r: RequestPool = serde_json::from_str(
            r#"{"AddressSpace":"weave-rs","Options":null,"Pool":"","SubPool":"","V6":false}"#,
        )
        .unwrap();
        assert!(r.options.is_none() && r.pool.is_empty());
        let a: RequestAddress = serde_json::from_str(
            r#"{"Address":"","Options":{"com.docker.network.endpoint.macaddress":"02:42:5b:c5:16:dc"},"PoolID":"weave-rs:10.32.0.0/12"}"#,
        )
        .unwrap();
        assert_eq!(a.pool_id, "weave-rs:10.32.0.0/12");
        let c: CreateNetwork = serde_json::from_str(
            r#"{"IPv4Data":[{"AddressSpace":"weave-rs","Gateway":"10.32.0.2/12","Pool":"10.32.0.0/12"}],"IPv6Data":[],"NetworkID":"95d9","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{}}}"#,
        )
        .unwrap();
        assert_eq!(c.ipv4_data.unwrap()[0].pool, "10.32.0.0/12");
        let e: CreateEndpoint = serde_json::from_str(
            r#"{"EndpointID":"4674","Interface":{"Address":"10.32.0.4/12","AddressIPv6":"","MacAddress":""},"NetworkID":"95d9","Options":{}}"#,
        )
        .unwrap();
        assert_eq!(e.interface.unwrap().address, "10.32.0.4/12");
        // Anything else, even garbage fields, is ignored; null is empty.
        let j: Join = serde_json::from_str("null").unwrap_or_default();
        assert!(j.endpoint_id.is_empty());
    }
}
