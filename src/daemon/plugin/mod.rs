//! The Docker plugin, served by the router: a network driver and an IPAM
//! driver, both named `weave-rs`, on a unix socket in the engine's plugin
//! directory (`--plugin-socket`). A thin adapter from the engine's
//! protocol (`protocol`) to the router's own calls: IPAM allocations keyed
//! by the endpoint, the bridge, DNS names.
//!
//! The engine replays nothing to a plugin that restarts (no Activate, no
//! CreateNetwork), so the networks and endpoints it told us of are kept in
//! the state dir (`plugin.json`); pools need no keeping (a PoolID names
//! its subnet).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tracing::{debug, info, warn};

mod handlers;
pub mod protocol;

use super::Shared;
use protocol::ErrorReply;

/// The engine's plugin directory, where it looks for `weave-rs.sock`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/weave-rs.sock";
/// Calls are small JSON objects.
const MAX_BODY: usize = 1 << 20;
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// A network the engine made with our driver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub subnet: ipnetwork::IpNetwork,
    /// The address the engine took as its gateway (held in IPAM).
    #[serde(default)]
    pub gateway: Option<std::net::IpAddr>,
}

/// An endpoint (a container on one of our networks).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub network: String,
    pub address: ipnetwork::IpNetwork,
    pub mac: String,
    /// The sandbox (container namespace) it joined, and whether its Join
    /// gave the route to the DNS server (one per sandbox, or the engine
    /// fails the second with "file exists").
    #[serde(default)]
    pub sandbox: Option<String>,
    #[serde(default)]
    pub dns_route: bool,
    /// The DNS servers the engine's embedded resolver asks for this
    /// endpoint's container (when the engine or the container set some).
    #[serde(default)]
    pub dns_servers: Vec<std::net::IpAddr>,
    /// The container's name and ID, once the engine said (its connect
    /// event).
    #[serde(default)]
    pub container: Option<(String, String)>,
    /// When it joined, in this router's life.
    #[serde(skip)]
    pub joined: Option<Instant>,
}

/// What the plugin keeps (`plugin.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginState {
    pub networks: BTreeMap<String, Network>,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Pool requests without a subnet lately: the engine asks again and
    /// again when our answer overlaps a route on its host.
    #[serde(skip)]
    pool_asks: Vec<Instant>,
    /// Addresses handed out whose endpoint or network the engine has not
    /// made yet (IPAM id -> when): an engine killed in between would leak
    /// them (`sweep`).
    #[serde(skip)]
    pending: BTreeMap<String, Instant>,
}

/// How long an address may wait for its endpoint or network.
const PENDING_GRACE: Duration = Duration::from_secs(60);

/// Frees what the engine asked for and never used: addresses whose
/// endpoint or network did not follow within `PENDING_GRACE`, and, at
/// startup (`all`), every plugin allocation that no kept endpoint or
/// network holds.
pub fn sweep(shared: &Arc<Shared>, all: bool) {
    if !all && shared.plugin().pending.is_empty() {
        return;
    }
    let used: Vec<std::net::IpAddr> = {
        let s = shared.plugin();
        s.endpoints
            .values()
            .map(|e| e.address.ip())
            .chain(s.networks.values().filter_map(|n| n.gateway))
            .collect()
    };
    let expired: Vec<String> = {
        let mut s = shared.plugin();
        let now = Instant::now();
        let old: Vec<String> = s
            .pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= PENDING_GRACE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            s.pending.remove(k);
        }
        old
    };
    if !all && expired.is_empty() {
        return;
    }
    let held: Vec<(String, std::net::IpAddr)> = shared
        .ipam()
        .core
        .allocations()
        .filter(|(id, _)| id.starts_with(crate::core::docker_plugin::IPAM_ID_PREFIX))
        .map(|(id, a)| (id.to_string(), a))
        .collect();
    for (id, addr) in held {
        let unused = !used.contains(&addr);
        if unused && (all || expired.contains(&id)) {
            info!("Docker plugin: releasing {addr} ({id}): the engine never used it");
            super::ipam::release_addrs(shared, &id, &[addr]);
        }
    }
}

fn file(shared: &Shared) -> PathBuf {
    shared.config.state_dir.join("plugin.json")
}

/// Loads `plugin.json` (at start).
pub fn load(shared: &Shared) {
    let path = file(shared);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    match serde_json::from_slice::<PluginState>(&bytes) {
        Ok(s) => *shared.plugin() = s,
        Err(e) => warn!("ignoring {}: {e}", path.display()),
    }
}

/// Writes `plugin.json` (atomically; serialised like the attachments').
fn save(shared: &Shared) {
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let snapshot = shared.plugin().clone();
    let path = file(shared);
    let written = serde_json::to_vec_pretty(&snapshot)
        .map_err(std::io::Error::other)
        .and_then(|b| crate::files::write_atomic(&path, &b, 0o600, None));
    if let Err(e) = written {
        warn!("saving {}: {e}", path.display());
    }
}

/// Names a container's endpoints on our networks in DNS: its name, its
/// network aliases and its hostname in the domain, with the endpoint's
/// address (Docker tells the driver none of them: they come from the
/// engine, on its "connect" event).
pub async fn name_endpoints(shared: &Arc<Shared>, container: &str) {
    let Some(domain) = shared.config.dns.as_ref().map(|d| d.domain.clone()) else {
        return;
    };
    let info = match crate::docker::endpoints(container).await {
        Ok(i) => i,
        Err(e) => {
            debug!("Docker plugin: naming {container}: {e}");
            return;
        }
    };
    for (endpoint, addr, aliases) in &info.networks {
        match shared.plugin().endpoints.get_mut(endpoint) {
            Some(e) => e.container = Some((info.name.clone(), info.id.clone())),
            None => continue,
        }
        let mut names = super::dns::container_names(&domain, &info.name, info.hostname.as_deref());
        for a in aliases {
            // Docker adds the short container ID as an alias.
            if info.id.starts_with(a.as_str()) {
                continue;
            }
            if let Ok(n) = crate::core::dns::qualify(a, &domain) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        if let Err(e) = super::dns::register(shared, &info.id, &names, &[*addr]) {
            warn!("Docker plugin: {} not named in DNS: {e}", info.name);
        }
    }
}

/// The plugin's endpoints as `ps` lists attachments.
/// Who an IPAM holder id is, in words a `docker` user knows: the
/// container behind one of our endpoints, a network's gateway, or the id
/// itself (`weave-rs ps` shows what `attach` holds).
pub fn holder_description(shared: &Shared, holder: &str) -> String {
    use crate::core::docker_plugin as rules;
    if holder.starts_with(&format!("{}gateway:", rules::IPAM_ID_PREFIX)) {
        return "the gateway of a weave-rs network".to_string();
    }
    let plugin = shared.plugin();
    let endpoint = plugin
        .endpoints
        .iter()
        .find(|(_, e)| rules::endpoint_key(&e.mac) == holder);
    match endpoint {
        Some((id, e)) => match &e.container {
            Some((name, _)) => format!("container {name}"),
            None => format!(
                "a container joining now (endpoint {})",
                id.get(..12).unwrap_or(id)
            ),
        },
        None => format!("{holder} (see `weave-rs ps` and `weave-rs status ipam`)"),
    }
}

pub fn attached(shared: &Shared) -> Vec<crate::api::protocol::AttachedReport> {
    shared
        .plugin()
        .endpoints
        .iter()
        .map(|(id, e)| {
            let (name, container) = match &e.container {
                Some((n, c)) => (n.clone(), Some(c.clone())),
                None => (format!("endpoint {}", id.get(..12).unwrap_or(id)), None),
            };
            crate::api::protocol::AttachedReport {
                target: name,
                container,
                host_veth: crate::core::docker_plugin::veth_names(id).0,
                mac: e.mac.clone(),
                addrs: vec![e.address.to_string()],
            }
        })
        .collect()
}

/// The network `docker run --network weave` finds out of the box.
pub const DEFAULT_NETWORK: &str = "weave";

/// Once the engine answers (at start, and whenever it restarted): the
/// default network if the engine has none of that name, and the
/// `restart=always` containers on our networks that the engine gave up on
/// while the plugin was away (it never tries them again).
pub async fn on_engine(shared: &Arc<Shared>) {
    // The first address may wait for the mesh to agree on the range.
    for attempt in 1..=6 {
        match crate::docker::ensure_network(DEFAULT_NETWORK, crate::core::docker_plugin::DRIVER)
            .await
        {
            Ok(true) => info!("Docker plugin: made the network {DEFAULT_NETWORK}"),
            Ok(false) => {}
            Err(e) if attempt < 6 => {
                debug!("Docker plugin: making the network {DEFAULT_NETWORK}: {e}; again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            }
            Err(e) => warn!("Docker plugin: making the network {DEFAULT_NETWORK}: {e}"),
        }
        break;
    }
    forget_stale_endpoints(shared).await;
    let ours: Vec<String> = shared.plugin().networks.keys().cloned().collect();
    if ours.is_empty() {
        return;
    }
    for id in crate::docker::stranded(&ours).await.unwrap_or_default() {
        match crate::docker::start(&id).await {
            Ok(()) => info!(
                "Docker plugin: started {}, which the engine gave up on while the plugin was away",
                id.get(..12).unwrap_or(&id)
            ),
            Err(e) => warn!("Docker plugin: starting {id}: {e}"),
        }
    }
}

/// Endpoints we keep that the engine no longer has (it restarted while
/// the plugin was away, and could not tell us): their veths, names and
/// addresses go, so the containers' new endpoints can have them. Those
/// joined lately are spared (the engine may be making them now).
async fn forget_stale_endpoints(shared: &Arc<Shared>) {
    let Ok(known) = crate::docker::endpoint_ids().await else {
        return;
    };
    let stale: Vec<(String, Endpoint)> = shared
        .plugin()
        .endpoints
        .iter()
        .filter(|(id, e)| {
            !known.contains(id) && e.joined.is_none_or(|t| t.elapsed() >= STALE_AFTER)
        })
        .map(|(id, e)| (id.clone(), e.clone()))
        .collect();
    for (id, e) in stale {
        info!(
            "Docker plugin: the engine no longer has endpoint {} ({}): forgetting it",
            id.get(..12).unwrap_or(&id),
            e.address
        );
        handlers::drop_endpoint(shared, &id).await;
        handlers::release_plugin_address(shared, e.address.ip());
    }
    save(shared);
}

/// An endpoint joined this recently is never taken for stale.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// Serves the plugin until the router stops. A socket that cannot be made
/// is logged and leaves the router running without the plugin.
pub async fn serve(shared: Arc<Shared>) -> anyhow::Result<()> {
    let Some(path) = shared.config.plugin_socket.clone() else {
        return std::future::pending().await;
    };
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!("Docker plugin: cannot listen on {}: {e}", path.display());
            return std::future::pending().await;
        }
    };
    info!(
        "Docker plugin {} on {}",
        crate::core::docker_plugin::DRIVER,
        path.display()
    );
    let _unlink = Unlink(path);
    let app = axum::Router::new()
        .route("/{method}", axum::routing::post(call))
        .with_state(shared.clone());
    // The engine waits on IPAM (up to --ipalloc-timeout) within one call.
    let limits = crate::api::http::Limits {
        max_conns: 64,
        header_timeout: Duration::from_secs(5),
        conn_lifetime: shared.config.ipam_timeout + Duration::from_secs(30),
    };
    crate::api::http::serve_app(listener, app, limits).await
}

/// Removes the socket when the router stops (a socket nobody answers
/// costs the engine 15 s of retries per lookup).
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds `path`, replacing a stale socket (root only: 0600 in a 0755 dir).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => debug!("removed a stale {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// One call: `POST /<Method>` with a JSON body.
async fn call(
    State(shared): State<Arc<Shared>>,
    UrlPath(method): UrlPath<String>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_BODY {
        return error(format!("{method}: request body over {MAX_BODY} bytes"));
    }
    debug!("Docker plugin: {method} {}", String::from_utf8_lossy(&body));
    let reply = handlers::dispatch(&shared, &method, &body).await;
    match reply {
        Ok(v) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], v.to_string()).into_response(),
        Err(e) => {
            info!("Docker plugin: {method}: {e}");
            error(e)
        }
    }
}

fn error(e: String) -> Response {
    let body = serde_json::to_string(&ErrorReply { err: e }).unwrap_or_default();
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body,
    )
        .into_response()
}
