//! `weave-rs-cni`: the CNI plugin a runtime executes (the `weave-rs`
//! binary under that name). It reads the spec's `CNI_*` variables and the
//! network config on stdin, asks the router over its control socket
//! (`daemon::cni` does the work), and prints a result or an error in the
//! layout of the config's `cniVersion`.
//!
//! It never hangs a runtime: with no router, ADD fails at once with code
//! 11 (try again later), STATUS with 50, and DEL is recorded for the
//! router to replay when it starts.

mod delegate;

use std::io::{Read, Write};
use std::process::ExitCode;

use rscni_types::types::{Cmd, Dns};

use crate::api::client::{self, ClientError};
use crate::api::protocol::{CniAdd, CniAttached, Reply, Request};
use crate::core::cni::conf::{self, Addressing, PluginConf};
use crate::core::cni::result::{self, Attached};
use crate::core::cni::{self as rules, Error, SpecVersion};

/// How long an ADD lets the router wait for an address before the runtime
/// is told to try again.
const ADD_PATIENCE_MS: u64 = 5_000;
/// The longest network config read from stdin.
const MAX_CONF: u64 = 1 << 20;

/// The plugin's entry point.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_CONF).read_to_end(&mut stdin);
    let (out, ok) = match read {
        Ok(_) => run(&env_var, &stdin),
        Err(e) => (
            result::render_error(
                SpecVersion::CURRENT,
                &Error::IOFailure(format!("stdin: {e}")),
            ),
            false,
        ),
    };
    if !out.is_empty() {
        let mut so = std::io::stdout();
        let _ = so.write_all(out.as_bytes());
        let _ = so.write_all(b"\n");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One invocation: what to print, and whether it succeeded.
pub fn run(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> (String, bool) {
    let cmd = match env("CNI_COMMAND").unwrap_or_default().parse::<Cmd>() {
        Ok(c) => c,
        Err(e) => return (result::render_error(SpecVersion::CURRENT, &e), false),
    };
    if cmd == Cmd::Version {
        return (result::version_info(), true);
    }
    let (conf, version) = match conf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return (result::render_error(SpecVersion::CURRENT, &e), false),
    };
    let outcome = rscni_types::version::PluginInfo::default()
        .negotiate(&conf, cmd)
        .and_then(|_| conf::plugin_conf(&conf))
        .and_then(|pc| dispatch(cmd, version, env, &pc, stdin));
    match outcome {
        Ok(out) => (out, true),
        Err(e) => (result::render_error(version, &e), false),
    }
}

fn dispatch(
    cmd: Cmd,
    version: SpecVersion,
    env: &dyn Fn(&str) -> Option<String>,
    pc: &PluginConf,
    stdin: &[u8],
) -> Result<String, Error> {
    match cmd {
        Cmd::Add => {
            let ids = Ids::read(env, true)?;
            add(version, &ids, pc, env, stdin)
        }
        Cmd::Del => {
            let ids = Ids::read(env, false)?;
            // Ours first: the other plugin failing must not leave the
            // interface and names behind.
            let out = del(&ids)?;
            if let Addressing::Delegated(t) = &pc.addressing {
                delegate::call(t, env, stdin)?;
            }
            Ok(out)
        }
        Cmd::Check => {
            let ids = Ids::read(env, true)?;
            check(&ids, pc)
        }
        Cmd::Gc => {
            let keep = pc.valid_attachments.clone().ok_or_else(|| {
                Error::InvalidNetworkConfig("GC needs \"cni.dev/valid-attachments\"".into())
            })?;
            call(Request::CniGc { keep }).map(|_| String::new())
        }
        Cmd::Status => match client::call(&Request::CniStatus) {
            Ok(_) => Ok(String::new()),
            Err(e) => Err(Error::PluginNotAvailable(describe(&e))),
        },
        Cmd::Version => Ok(result::version_info()),
    }
}

/// The attachment an invocation is about.
struct Ids {
    container_id: String,
    ifname: String,
    netns: Option<String>,
}

impl Ids {
    fn read(env: &dyn Fn(&str) -> Option<String>, netns_needed: bool) -> Result<Ids, Error> {
        let mut missing = Vec::new();
        let container_id = env("CNI_CONTAINERID");
        let ifname = env("CNI_IFNAME");
        let netns = env("CNI_NETNS");
        for (name, v) in [
            ("CNI_CONTAINERID", &container_id),
            ("CNI_IFNAME", &ifname),
            ("CNI_NETNS", &netns),
        ] {
            if v.is_none() && (netns_needed || name != "CNI_NETNS") {
                missing.push(name);
            }
        }
        if !missing.is_empty() {
            return Err(Error::missing_env(&missing));
        }
        let container_id = container_id.unwrap_or_default();
        let ifname = ifname.unwrap_or_default();
        if !rules::valid_container_id(&container_id) {
            return Err(Error::InvalidEnvValue(format!(
                "CNI_CONTAINERID {container_id:?}: letters, digits, '_', '.' and '-' only"
            )));
        }
        if !conf::valid_ifname(&ifname) {
            return Err(Error::InvalidEnvValue(format!(
                "CNI_IFNAME {ifname:?} is not an interface name"
            )));
        }
        if netns_needed {
            let path = netns.as_deref().unwrap_or_default();
            if !std::path::Path::new(path).exists() {
                return Err(Error::NotExist(format!(
                    "CNI_NETNS {path}: no such network namespace"
                )));
            }
        }
        Ok(Ids {
            container_id,
            ifname,
            netns,
        })
    }
}

fn add(
    version: SpecVersion,
    ids: &Ids,
    pc: &PluginConf,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<String, Error> {
    let args =
        rules::parse_args(&env("CNI_ARGS").unwrap_or_default()).map_err(Error::InvalidEnvValue)?;
    let (addrs, delegated) = match &pc.addressing {
        Addressing::Ours(None) => (Vec::new(), None),
        Addressing::Ours(Some(subnet)) => (vec![format!("net:{subnet}")], None),
        Addressing::Delegated(t) => {
            let got = delegate::call(t, env, stdin)?.ok_or_else(|| {
                Error::Custom(
                    102,
                    "no address".into(),
                    format!("IPAM plugin {t} gave no result"),
                )
            })?;
            let addrs = got
                .ips
                .iter()
                .map(|ip| ip.address.to_string())
                .collect::<Vec<_>>();
            (addrs, Some(got))
        }
    };
    let routes = delegated.as_ref().map(delegated_routes).unwrap_or_default();
    let req = CniAdd {
        container_id: ids.container_id.clone(),
        ifname: ids.ifname.clone(),
        netns: ids.netns.clone().unwrap_or_default(),
        addrs,
        claims: rules::requested_ips(&args, &pc.ips).map_err(Error::InvalidEnvValue)?,
        names: rules::names(&args, &pc.aliases),
        mtu: pc.mtu,
        bridge: pc.bridge.clone(),
        hairpin: pc.hairpin,
        gateway: pc.gateway,
        routes,
        patience_ms: ADD_PATIENCE_MS,
    };
    let made = match call(Request::CniAdd(req)) {
        Ok(Reply::Ok { cni: Some(a), .. }) => a,
        Ok(_) => {
            return Err(Error::IOFailure(
                "the router's reply had no attachment".into(),
            ))
        }
        Err(e) => {
            if let Addressing::Delegated(t) = &pc.addressing {
                let _ = delegate::call_as(t, "DEL", env, stdin);
            }
            return Err(e);
        }
    };
    Ok(result::render(
        version,
        result::add_result(&attached(ids, pc, made, delegated)),
    ))
}

fn attached(
    ids: &Ids,
    pc: &PluginConf,
    made: CniAttached,
    delegated: Option<rscni_types::types::CNIResult>,
) -> Attached {
    let addrs = made.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let dns = pc.dns.clone().unwrap_or_else(|| match &made.dns {
        Some((server, domain)) => Dns {
            nameservers: vec![server.clone()],
            domain: None,
            search: Some(vec![domain.trim_end_matches('.').to_string()]),
            options: None,
        },
        None => Dns::default(),
    });
    let ours = made.gateway.map(|g| {
        let addr = made
            .addrs
            .iter()
            .filter_map(|a| a.parse::<ipnetwork::IpNetwork>().ok())
            .find(|a| a.is_ipv4() == g.is_ipv4());
        (addr, g)
    });
    let (gateways, routes) = match delegated {
        Some(r) => (
            r.ips
                .iter()
                .filter_map(|ip| Some((result::ipnetwork(&ip.address)?, ip.gateway?)))
                .collect(),
            r.routes,
        ),
        None => match ours {
            Some((Some(addr), g)) => (
                vec![(addr, g)],
                vec![rscni_types::types::Route {
                    dst: "0.0.0.0/0".parse().unwrap_or_else(|_| result::ipnet(addr)),
                    gw: Some(g),
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                }],
            ),
            _ => (Vec::new(), Vec::new()),
        },
    };
    Attached {
        ifname: ids.ifname.clone(),
        mac: made.mac,
        sandbox: ids.netns.clone().unwrap_or_default(),
        mtu: made.mtu,
        addrs,
        gateways,
        routes,
        dns,
    }
}

/// An IPAM plugin's routes to install: each via its own gateway, else the
/// gateway of the first address of its family (the spec's default).
fn delegated_routes(
    r: &rscni_types::types::CNIResult,
) -> Vec<(ipnetwork::IpNetwork, Option<std::net::IpAddr>)> {
    r.routes
        .iter()
        .filter_map(|route| {
            let dst = result::ipnetwork(&route.dst)?;
            let gw = route.gw.or_else(|| {
                r.ips
                    .iter()
                    .filter(|ip| ip.address.addr().is_ipv4() == dst.is_ipv4())
                    .find_map(|ip| ip.gateway)
            });
            Some((dst, gw))
        })
        .collect()
}

/// DEL: through the router, or, with none running, recorded for it.
fn del(ids: &Ids) -> Result<String, Error> {
    let req = Request::CniDel {
        container_id: ids.container_id.clone(),
        ifname: ids.ifname.clone(),
    };
    match client::call(&req) {
        Ok(_) => Ok(String::new()),
        Err(ClientError::Router(e)) => Err(Error::Custom(100, "DEL refused".into(), e)),
        Err(_) => {
            let key = rules::key(&ids.container_id, &ids.ifname);
            record_release(&key).map_err(|e| {
                Error::IOFailure(format!(
                    "no router to take the DEL, and recording it failed: {e}"
                ))
            })?;
            Ok(String::new())
        }
    }
}

/// Leaves `key` for the router to release when it starts.
fn record_release(key: &str) -> std::io::Result<()> {
    let (dir, _) = crate::cli::state_dir::path();
    let dir = dir.join(crate::daemon::cni::RELEASED_DIR);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(key.replace([':', '/'], "_"));
    crate::files::write_atomic(&file, key.as_bytes(), 0o600, None)
}

/// CHECK: the addresses of the previous result, on our interface.
fn check(ids: &Ids, pc: &PluginConf) -> Result<String, Error> {
    let prev = pc.prev_result.as_ref().ok_or_else(|| {
        Error::InvalidNetworkConfig("CHECK needs the previous result (\"prevResult\")".into())
    })?;
    let ours = prev.interfaces.iter().position(|i| i.name == ids.ifname);
    let addrs = prev
        .ips
        .iter()
        .filter(|ip| match (ip.interface, ours) {
            (Some(i), Some(o)) => i as usize == o,
            _ => true,
        })
        .map(|ip| ip.address.to_string())
        .collect();
    let req = Request::CniCheck {
        container_id: ids.container_id.clone(),
        ifname: ids.ifname.clone(),
        netns: ids.netns.clone().unwrap_or_default(),
        addrs,
    };
    call(req).map(|_| String::new())
}

/// A call to the router, its failures in the spec's codes: no router, or
/// one going away mid-call, is "try again later".
fn call(req: Request) -> Result<Reply, Error> {
    match client::call(&req) {
        Ok(r) => Ok(r),
        Err(ClientError::Router(e)) => match e.strip_prefix(rules::TRY_AGAIN) {
            Some(rest) => Err(Error::TryAgainLater(rest.to_string())),
            None => Err(Error::Custom(100, "weave-rs refused".into(), e)),
        },
        Err(e) => Err(Error::TryAgainLater(describe(&e))),
    }
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::BadReply(m) if m.starts_with("empty reply") => {
            "the router stopped during the call (restarting?)".to_string()
        }
        ClientError::Router(m) => m.strip_prefix(rules::TRY_AGAIN).unwrap_or(m).to_string(),
        e => e.to_string(),
    }
}
