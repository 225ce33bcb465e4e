//! What each call of the engine does.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::protocol::*;
use super::{save, Endpoint, Network};
use crate::core::docker_plugin as rules;
use crate::daemon::{ipam, Shared};

/// More pool requests without a subnet than this within `POOL_ASK_WINDOW`:
/// the engine is looping (our subnet overlaps one of its host's routes).
const POOL_ASKS: usize = 4;
const POOL_ASK_WINDOW: Duration = Duration::from_secs(2);

fn parse<T: DeserializeOwned + Default>(method: &str, body: &[u8]) -> Result<T, String> {
    if body.is_empty() {
        return Ok(T::default());
    }
    match serde_json::from_slice::<Option<T>>(body) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(e) => Err(format!("{method}: malformed request: {e}")),
    }
}

pub async fn dispatch(shared: &Arc<Shared>, method: &str, body: &[u8]) -> Result<Value, String> {
    match method {
        "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
        "NetworkDriver.GetCapabilities" => {
            Ok(json!({"Scope": "local", "ConnectivityScope": "global"}))
        }
        "IpamDriver.GetCapabilities" => {
            // The MAC makes each address request name its endpoint.
            Ok(json!({"RequiresMACAddress": true, "RequiresRequestReplay": false}))
        }
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": rules::LOCAL_SPACE,
            "GlobalDefaultAddressSpace": rules::GLOBAL_SPACE,
        })),
        "IpamDriver.RequestPool" => request_pool(shared, parse(method, body)?),
        "IpamDriver.ReleasePool" => Ok(json!({})),
        "IpamDriver.RequestAddress" => request_address(shared, parse(method, body)?).await,
        "IpamDriver.ReleaseAddress" => release_address(shared, parse(method, body)?),
        "NetworkDriver.CreateNetwork" => create_network(shared, parse(method, body)?),
        "NetworkDriver.DeleteNetwork" => {
            let r: NetworkRef = parse(method, body)?;
            shared.plugin().networks.remove(&r.network_id);
            save(shared);
            Ok(json!({}))
        }
        "NetworkDriver.CreateEndpoint" => create_endpoint(shared, parse(method, body)?),
        "NetworkDriver.DeleteEndpoint" => delete_endpoint(shared, parse(method, body)?).await,
        "NetworkDriver.Join" => join(shared, parse(method, body)?).await,
        "NetworkDriver.Leave" => leave(shared, parse(method, body)?).await,
        "NetworkDriver.EndpointOperInfo" => Ok(json!({"Value": {}})),
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity" => Ok(json!({})),
        other => Err(format!("{other}: not a call weave-rs knows")),
    }
}

fn request_pool(shared: &Arc<Shared>, r: RequestPool) -> Result<Value, String> {
    let (range, default) = {
        let s = shared.ipam();
        (s.core.range(), s.core.default_subnet())
    };
    if r.v6 != range.is_ipv6() {
        return Err(format!(
            "weave-rs allocates from {range} (--ipalloc-range): no {} pool",
            if r.v6 { "IPv6" } else { "IPv4" }
        ));
    }
    if !r.sub_pool.is_empty() {
        return Err("--ip-range is not supported by weave-rs: give --subnet".into());
    }
    if let Some(k) = r.options.as_ref().and_then(|o| o.keys().next()) {
        return Err(format!("unknown IPAM option {k:?}: weave-rs takes none"));
    }
    let subnet = if r.pool.is_empty() {
        let mut s = shared.plugin();
        let now = Instant::now();
        s.pool_asks
            .retain(|t| now.duration_since(*t) < POOL_ASK_WINDOW);
        s.pool_asks.push(now);
        if s.pool_asks.len() > POOL_ASKS {
            return Err(format!(
                "the default subnet {default} overlaps a route or address on this host (an \
                 exposed address?), so Docker keeps refusing it: create the network with \
                 --subnet, inside {range}"
            ));
        }
        default
    } else {
        let n: IpNetwork = r
            .pool
            .parse()
            .map_err(|_| format!("--subnet {:?} is not a CIDR", r.pool))?;
        let net = IpNetwork::new(n.network(), n.prefix()).map_err(|e| e.to_string())?;
        if net.prefix() < range.prefix() || !range.contains(net.network()) {
            return Err(format!(
                "subnet {net} is outside weave-rs's allocation range {range} \
                 (--ipalloc-range): pick a subnet inside it"
            ));
        }
        net
    };
    Ok(json!({"PoolID": rules::pool_id(subnet), "Pool": subnet.to_string(), "Data": {}}))
}

/// An address in the pool: a network's gateway (the engine wants one; it
/// is only held, as no gateway service runs), or an endpoint's, keyed by
/// its MAC.
/// `Address` given (`--ip`, `--gateway`): claimed.
async fn request_address(shared: &Arc<Shared>, r: RequestAddress) -> Result<Value, String> {
    let subnet = rules::parse_pool_id(&r.pool_id)?;
    let opt = |k: &str| {
        r.options
            .as_ref()
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let key = if opt("RequestAddressType").as_deref() == Some(rules::GATEWAY_REQUEST) {
        // Each network's own (a failed create releases its gateway; a
        // shared key would free another network's).
        format!(
            "{}:{:016x}",
            rules::gateway_key(subnet),
            rand::random::<u64>()
        )
    } else {
        match opt(rules::MAC_OPTION) {
            Some(mac) => rules::endpoint_key(&mac),
            // An engine that cached older capabilities sends no MAC.
            None => format!(
                "{}address:{:016x}",
                rules::IPAM_ID_PREFIX,
                rand::random::<u64>()
            ),
        }
    };
    let cidr = if r.address.is_empty() {
        ipam::allocate(shared, &key, Some(subnet)).await?
    } else {
        let ip: IpAddr = r
            .address
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", r.address))?;
        if !subnet.contains(ip) {
            return Err(format!("{ip} is not in the network's subnet {subnet}"));
        }
        let cidr = IpNetwork::new(ip, subnet.prefix()).map_err(|e| e.to_string())?;
        let holder = shared.ipam().core.holder(ip).map(str::to_string);
        if let Some(holder) = holder.filter(|h| *h != key) {
            return Err(format!(
                "--ip {ip}: the address is in use by {}",
                super::holder_description(shared, &holder)
            ));
        }
        ipam::claim(shared, &key, cidr).await?
    };
    shared.plugin().pending.insert(key, Instant::now());
    Ok(json!({"Address": cidr.to_string(), "Data": {}}))
}

fn release_address(shared: &Arc<Shared>, r: ReleaseAddress) -> Result<Value, String> {
    let ip: IpAddr = r
        .address
        .parse()
        .map_err(|_| format!("{:?} is not an IP address", r.address))?;
    release_plugin_address(shared, ip);
    Ok(json!({}))
}

fn create_network(shared: &Arc<Shared>, r: CreateNetwork) -> Result<Value, String> {
    let generic = r
        .options
        .as_ref()
        .and_then(|o| o.get("com.docker.network.generic"));
    rules::check_network_options(generic)?;
    if r.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err("IPv6 on weave-rs networks is not supported yet".into());
    }
    let data = r.ipv4_data.unwrap_or_default();
    let [v4] = data.as_slice() else {
        return Err(format!(
            "a weave-rs network has one IPv4 subnet, not {}",
            data.len()
        ));
    };
    rules::check_address_space(&v4.address_space)?;
    let subnet: IpNetwork = v4
        .pool
        .parse()
        .map_err(|_| format!("pool {:?} is not a CIDR", v4.pool))?;
    let gateway = v4.gateway.parse::<IpNetwork>().ok().map(|g| g.ip());
    // Never the plugin's lock and IPAM's together.
    let holder = gateway.and_then(|g| shared.ipam().core.holder(g).map(str::to_string));
    {
        let mut s = shared.plugin();
        if let Some(id) = holder {
            s.pending.remove(&id);
        }
        s.networks.insert(r.network_id, Network { subnet, gateway });
    }
    save(shared);
    Ok(json!({}))
}

fn create_endpoint(shared: &Arc<Shared>, r: CreateEndpoint) -> Result<Value, String> {
    if !shared.plugin().networks.contains_key(&r.network_id) {
        return Err(format!(
            "network {} is not one weave-rs knows (made before this router's state was lost?): \
             remove it and create it again",
            short(&r.network_id)
        ));
    }
    let iface = r.interface.unwrap_or_default();
    let address: IpNetwork = iface
        .address
        .parse()
        .map_err(|_| format!("endpoint address {:?} is not a CIDR", iface.address))?;
    let holder = shared.ipam().core.holder(address.ip()).map(str::to_string);
    if let Some(id) = holder {
        shared.plugin().pending.remove(&id);
    }
    let (mac, reply) = if iface.mac_address.is_empty() {
        let mac = rules::endpoint_mac(&r.endpoint_id);
        (mac.clone(), json!({"Interface": {"MacAddress": mac}}))
    } else {
        (iface.mac_address.clone(), json!({}))
    };
    let dns_servers = r
        .options
        .as_ref()
        .and_then(|o| o.get("com.docker.network.endpoint.dnsservers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    shared.plugin().endpoints.insert(
        r.endpoint_id,
        Endpoint {
            network: r.network_id,
            address,
            mac,
            sandbox: None,
            dns_route: false,
            dns_servers,
            container: None,
            joined: None,
        },
    );
    save(shared);
    Ok(reply)
}

async fn join(shared: &Arc<Shared>, r: Join) -> Result<Value, String> {
    let ep = shared
        .plugin()
        .endpoints
        .get(&r.endpoint_id)
        .cloned()
        .ok_or_else(|| {
            format!(
                "endpoint {} is not one weave-rs made",
                short(&r.endpoint_id)
            )
        })?;
    let mac = parse_mac(&ep.mac)?;
    let names = rules::veth_names(&r.endpoint_id);
    shared
        .netlink
        .endpoint_veth(
            &shared.config.bridge,
            (&names.0, &names.1),
            mac,
            u32::from(shared.config.mtu),
        )
        .await
        .map_err(|e| e.to_string())?;
    confine(shared, &names.0, &ep.network, true).await?;
    // The route to the DNS server, once per sandbox.
    let dns = shared.config.dns.as_ref().map(|d| d.address);
    let route = {
        let mut s = shared.plugin();
        let taken = s
            .endpoints
            .values()
            .any(|e| e.dns_route && e.sandbox.as_deref() == Some(r.sandbox_key.as_str()));
        let give = dns.is_some() && !taken;
        if let Some(e) = s.endpoints.get_mut(&r.endpoint_id) {
            e.sandbox = Some(r.sandbox_key.clone());
            e.dns_route = give;
            e.joined = Some(Instant::now());
        }
        give
    };
    save(shared);
    // The DNS server on link, then the resolvers the engine's embedded
    // resolver asks (from inside the container) through it: the host
    // hands those queries to weave-rs DNS (iptables' DNS redirect), which
    // answers the mesh's names and forwards the rest.
    let mut routes: Vec<Value> = Vec::new();
    if let (true, Some(a)) = (route, dns) {
        routes.push(json!({"Destination": format!("{a}/32"), "RouteType": 1, "NextHop": ""}));
        // The engine's own list when it told us (its --dns), else the
        // host's resolvers, which the engine uses too.
        let servers: Vec<IpAddr> = if ep.dns_servers.is_empty() {
            match shared.dns_served.status() {
                Some(Ok(s)) => s.iter().map(|s| s.ip()).collect(),
                _ => Vec::new(),
            }
        } else {
            ep.dns_servers.clone()
        };
        let mut routed = Vec::new();
        for s in servers {
            if s.is_ipv4() && !s.is_loopback() && s != IpAddr::V4(a) && !routed.contains(&s) {
                routed.push(s);
                routes.push(json!({
                    "Destination": format!("{s}/32"),
                    "RouteType": 0,
                    "NextHop": a.to_string(),
                }));
            }
        }
    }
    Ok(json!({
        "InterfaceName": {"SrcName": names.1, "DstPrefix": "ethwe"},
        "StaticRoutes": routes,
        "DisableGatewayService": true,
    }))
}

async fn leave(shared: &Arc<Shared>, r: EndpointRef) -> Result<Value, String> {
    let (host, _) = rules::veth_names(&r.endpoint_id);
    let network = shared
        .plugin()
        .endpoints
        .get(&r.endpoint_id)
        .map(|e| e.network.clone());
    if let Some(n) = network {
        let _ = confine(shared, &host, &n, false).await;
    }
    // Deleting our end takes the pair, wherever the other end is.
    if let Err(e) = shared.netlink.delete_link(&host).await {
        tracing::warn!("Docker plugin: removing {host}: {e}");
    }
    {
        let mut s = shared.plugin();
        if let Some(e) = s.endpoints.get_mut(&r.endpoint_id) {
            e.sandbox = None;
            e.dns_route = false;
        }
    }
    save(shared);
    Ok(json!({}))
}

async fn delete_endpoint(shared: &Arc<Shared>, r: EndpointRef) -> Result<Value, String> {
    drop_endpoint(shared, &r.endpoint_id).await;
    save(shared);
    Ok(json!({}))
}

/// Takes endpoint `id` down: its isolation rules, its veth pair, its
/// names, and our record of it (its address stays: the engine releases
/// it). The endpoint as it was, if we had it.
pub(super) async fn drop_endpoint(shared: &Arc<Shared>, id: &str) -> Option<Endpoint> {
    let (host, peer) = rules::veth_names(id);
    let network = shared.plugin().endpoints.get(id).map(|e| e.network.clone());
    if let Some(n) = network {
        let _ = confine(shared, &host, &n, false).await;
    }
    for name in [host, peer] {
        let _ = shared.netlink.delete_link(&name).await;
    }
    let gone = shared.plugin().endpoints.remove(id);
    if let Some(ep) = &gone {
        let addr = ep.address.ip();
        crate::daemon::dns::unregister(shared, |k, _| k.addr == addr);
    }
    gone
}

/// Frees `ip` if one of the plugin's allocations holds it (not another
/// id's: the engine may release what it never had).
pub(super) fn release_plugin_address(shared: &Arc<Shared>, ip: IpAddr) {
    let holder = shared.ipam().core.holder(ip).map(str::to_string);
    if let Some(id) = holder.filter(|h| h.starts_with(rules::IPAM_ID_PREFIX)) {
        ipam::release_addrs(shared, &id, &[ip]);
    }
}

/// Confines (or frees) the endpoint veth `host` to its network's subnet
/// (`net::ebtables`).
async fn confine(shared: &Arc<Shared>, host: &str, network: &str, on: bool) -> Result<(), String> {
    let subnet = shared.plugin().networks.get(network).map(|n| n.subnet);
    let Some(ipnetwork::IpNetwork::V4(subnet)) = subnet else {
        return Ok(());
    };
    let host = host.to_string();
    tokio::task::spawn_blocking(move || {
        if on {
            crate::net::ebtables::isolate(&host, subnet)
        } else {
            crate::net::ebtables::release(&host, subnet);
            Ok(())
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("keeping the network apart from others: {e}"))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    s.parse::<crate::core::PeerName>()
        .map(|p| p.0)
        .map_err(|_| format!("{s:?} is not a MAC address"))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
