//! `launch`, `stop` and `reset`: the router's life cycle on this host.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use super::{lock, state_dir};
use crate::api::protocol::SOCKET_NAME;
use crate::api::{client, peer};
use crate::core::crypto::keys::{Secret, KEY_LEN};
use crate::core::crypto::psk;
use crate::core::ipam::config::{self as ipam_config, IpamConfig};
use crate::core::PeerName;
use crate::daemon::secure::CryptoConfig;
use crate::daemon::{self, Config, BRIDGE, DEFAULT_CONN_LIMIT, DEFAULT_MTU, DEFAULT_PORT, TAP};

/// How long `launch` waits for the router to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Smallest and largest overlay MTU we accept.
const MTU_RANGE: std::ops::RangeInclusive<u16> = 576..=65_000;

#[derive(Args, Debug, Clone)]
pub struct LaunchArgs {
    /// Peers to connect to: address or address:port.
    pub peers: Vec<String>,
    /// Stay attached to the terminal, logging to stderr.
    #[arg(long)]
    pub foreground: bool,
    /// Peer name (aa:bb:cc:dd:ee:ff); default: generated once and kept.
    #[arg(long)]
    pub name: Option<PeerName>,
    /// A human-friendly name shown to other peers (default: host name).
    #[arg(long)]
    pub nickname: Option<String>,
    /// TCP and UDP port for control and data.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Overlay MTU (the MTU containers get). Default: 1376, or on an
    /// underlay with jumbo frames (MTU above 1500) and the fast path on,
    /// the underlay's MTU minus 50.
    #[arg(long)]
    pub mtu: Option<u16>,
    /// Never carry frames on the kernel's VXLAN fast path: the router's
    /// own UDP sleeve carries everything.
    #[arg(long)]
    pub no_fastdp: bool,
    /// Most connections this router keeps.
    #[arg(long, default_value_t = DEFAULT_CONN_LIMIT, value_parser = parse_conn_limit)]
    pub conn_limit: usize,
    /// Do not connect to peers learned from other peers.
    #[arg(long)]
    pub no_discovery: bool,
    /// Serve read-only HTTP status and metrics on ADDR (host:port), or `off`.
    #[arg(long, value_name = "ADDR", default_value = crate::api::http::DEFAULT_ADDR, value_parser = parse_http_addr)]
    pub http_addr: HttpAddr,
    /// Encrypt and authenticate all traffic between peers with this
    /// password (all peers need the same). The environment variable
    /// WEAVE_PASSWORD or --password-file keep it out of the process list.
    #[arg(long, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// Read the password from this file (a trailing newline is ignored).
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// The mesh's name, which salts the password: routers with the same
    /// password but other mesh names refuse each other. Only matters with
    /// a password.
    #[arg(long, value_name = "NAME", env = "WEAVE_MESH_NAME", default_value = psk::DEFAULT_MESH_NAME)]
    pub mesh_name: String,
    /// Peers in these subnets may exchange data unencrypted if they trust
    /// us too; control traffic stays encrypted. Needs a password.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub trusted_subnets: Vec<String>,
    /// Replace the encryption keys of every connection this often.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REKEY_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rekey_interval: u64,
    /// The addresses the mesh allocates from (IPv4 or IPv6; the same on
    /// every peer). Refused if it overlaps a route or address of the host.
    #[arg(long, value_name = "CIDR", default_value_t = ipam_config::DEFAULT_RANGE.to_string())]
    pub ipalloc_range: String,
    /// Where addresses come from when none is asked for (net:default);
    /// within --ipalloc-range (default: all of it).
    #[arg(long, value_name = "CIDR")]
    pub ipalloc_default_subnet: Option<String>,
    /// How the first ring is made: consensus (a majority of the peers given
    /// here agree), consensus=N (N peers agree), seed=NAME,... (split
    /// between those peers at once) or observer (owns nothing, asks).
    #[arg(long, value_name = "MODE", default_value = "consensus")]
    pub ipalloc_init: String,
    /// How long an allocation may wait (for consensus, a donation, a
    /// claim) before it fails with the reason.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ipalloc_timeout: u64,
    /// The domain containers are named in.
    #[arg(long, value_name = "DOMAIN", default_value = crate::core::dns::DEFAULT_DOMAIN)]
    pub dns_domain: String,
    /// Where the DNS server answers (port 53, on the bridge): an IPv4
    /// address no host uses otherwise.
    #[arg(long, value_name = "ADDR", default_value_t = dns_default_address())]
    pub dns_address: std::net::Ipv4Addr,
    /// The TTL of DNS answers, and of negative answers, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = crate::core::dns::DEFAULT_TTL, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub dns_ttl: u32,
    /// Where the upstream resolvers for other names are read from.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,
    /// Where the Docker plugin (network and IPAM driver `weave-rs`)
    /// listens: the engine's plugin directory; `off`: no plugin.
    #[arg(long, value_name = "PATH|off", env = "WEAVE_RS_PLUGIN_SOCKET", default_value = crate::daemon::plugin::DEFAULT_SOCKET)]
    pub plugin_socket: String,
    /// No DNS server, no names.
    #[arg(long, conflicts_with_all = ["dns_domain", "dns_address", "dns_ttl", "resolv_conf"])]
    pub no_dns: bool,
    /// Internal: read the derived key on stdin (how `launch` hands it to
    /// the background router without putting the password in its argv).
    #[arg(long, hide = true)]
    pub psk_stdin: bool,
    /// Internal: the instance lock's descriptor, inherited from `launch`.
    #[arg(long, hide = true, value_name = "FD")]
    pub lock_fd: Option<i32>,
}

const DEFAULT_REKEY_SECS: u64 = crate::daemon::secure::DEFAULT_REKEY_INTERVAL.as_secs();
/// Launch options not passed on to the background router: the password
/// (it gets the derived key on stdin) and a lock descriptor (it gets ours).
const SECRET_FLAGS: [&str; 3] = ["--password", "--password-file", "--lock-fd"];

/// `--http-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct HttpAddr(pub Option<std::net::SocketAddr>);

fn parse_http_addr(s: &str) -> Result<HttpAddr, String> {
    if s == "off" {
        return Ok(HttpAddr(None));
    }
    s.parse()
        .map(|a| HttpAddr(Some(a)))
        .map_err(|_| format!("{s}: expected host:port (e.g. 127.0.0.1:6784) or off"))
}

/// The router's configuration, and a note for its log if its state dir
/// had to be removed (see `state_dir`).
fn config(args: &LaunchArgs) -> anyhow::Result<(Config, Option<String>)> {
    if let Some(mtu) = args.mtu.filter(|m| !MTU_RANGE.contains(m)) {
        bail!(
            "--mtu {mtu}: must be between {} and {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        );
    }
    let mut peers = Vec::new();
    for p in &args.peers {
        peers.push(daemon::targets::parse_target(p, args.port).map_err(anyhow::Error::msg)?);
    }
    let (ipam, ipam_quorum) = ipam(args, &peers)?;
    let nickname = match &args.nickname {
        Some(n) => n.clone(),
        None => hostname(),
    };
    if nickname.len() > crate::core::topology::MAX_NICKNAME_LEN {
        bail!(
            "--nickname: longer than {} bytes",
            crate::core::topology::MAX_NICKNAME_LEN
        );
    }
    psk::check_mesh_name(&args.mesh_name)
        .map_err(|e| anyhow::anyhow!("--mesh-name {:?}: {e}", args.mesh_name))?;
    let (dir, chosen) = state_dir::path();
    let note = state_dir::prepare(&dir, chosen)?;
    let crypto = crypto_config(args, &dir)?;
    let cfg = Config {
        name: state_dir::peer_name(&dir, args.name)?,
        nickname,
        port: args.port,
        mtu: args.mtu.unwrap_or(DEFAULT_MTU),
        mtu_explicit: args.mtu.is_some(),
        fastdp: !args.no_fastdp,
        conn_limit: args.conn_limit,
        discovery: !args.no_discovery,
        peers,
        bridge: BRIDGE.to_string(),
        tap: TAP.to_string(),
        state_dir: dir,
        http_addr: args.http_addr.0,
        mesh_name: args.mesh_name.clone(),
        crypto,
        ipam,
        ipam_quorum,
        ipam_timeout: std::time::Duration::from_secs(args.ipalloc_timeout),
        dns: dns_config(args)?,
        plugin_socket: match args.plugin_socket.as_str() {
            "off" => None,
            p if p.starts_with('/') => Some(std::path::PathBuf::from(p)),
            p => bail!("--plugin-socket {p:?}: an absolute path, or off"),
        },
    };
    Ok((cfg, note))
}

fn dns_default_address() -> std::net::Ipv4Addr {
    match crate::core::dns::DEFAULT_ADDRESS {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::new(169, 254, 53, 53),
    }
}

/// `--dns-*`, checked; None with `--no-dns`.
fn dns_config(args: &LaunchArgs) -> anyhow::Result<Option<crate::daemon::dns::DnsConfig>> {
    if args.no_dns {
        return Ok(None);
    }
    let domain = crate::core::dns::normalize(&args.dns_domain)
        .map_err(|e| anyhow::anyhow!("--dns-domain: {e}"))?;
    let a = args.dns_address;
    if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
        bail!("--dns-address {a}: must be a unicast address, not loopback");
    }
    Ok(Some(crate::daemon::dns::DnsConfig {
        address: a,
        domain,
        ttl: args.dns_ttl,
        resolv_conf: args.resolv_conf.clone(),
    }))
}

/// `--ipalloc-*`, checked, and the consensus quorum: inferred, when not
/// given, from the distinct `peers` (as parsed) named at launch.
fn ipam(args: &LaunchArgs, peers: &[String]) -> anyhow::Result<(IpamConfig, Option<u32>)> {
    let range = parse_network("--ipalloc-range", &args.ipalloc_range)?;
    let subnet = match &args.ipalloc_default_subnet {
        Some(s) => Some(parse_network("--ipalloc-default-subnet", s)?),
        None => None,
    };
    let init = ipam_config::parse_init(&args.ipalloc_init).map_err(anyhow::Error::msg)?;
    let cfg = IpamConfig::new(range, subnet, init).map_err(anyhow::Error::msg)?;
    let mut distinct = peers.to_vec();
    distinct.sort();
    distinct.dedup();
    let quorum = ipam_config::quorum(&cfg.init, distinct.len());
    Ok((cfg, quorum))
}

/// A CIDR given to `flag`; its prefix length is required (a bare address
/// is not taken for a /32).
fn parse_network(flag: &str, s: &str) -> anyhow::Result<ipnetwork::IpNetwork> {
    let s = s.trim();
    match s.contains('/').then(|| s.parse().ok()).flatten() {
        Some(n) => Ok(n),
        None => bail!(
            "{flag} {s}: not a CIDR (expected a network with a prefix length, e.g. 10.32.0.0/12)"
        ),
    }
}

/// Refuses an IPAM range that overlaps a route or an address of this host
/// (our own bridge aside: it holds exposed overlay addresses), with one
/// line naming the clash and the flag.
fn check_range_is_free(range: ipnetwork::IpNetwork) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let host = rt
        .block_on(async {
            let nl = crate::net::netlink::Netlink::connect()?;
            nl.host_networks(BRIDGE).await
        })
        .context("list this host's routes and addresses")?;
    if let Some(clash) = ipam_config::overlap(range, &host) {
        bail!(clash);
    }
    Ok(())
}

/// The password from --password, --password-file or WEAVE_PASSWORD.
fn password(args: &LaunchArgs) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(p) = &args.password {
        return Ok(Some(p.clone().into_bytes()));
    }
    if let Some(path) = &args.password_file {
        let bytes =
            fs::read(path).with_context(|| format!("--password-file {}", path.display()))?;
        return Ok(Some(psk::trim_newline(&bytes).to_vec()));
    }
    Ok(std::env::var_os("WEAVE_PASSWORD")
        .filter(|v| !v.is_empty())
        .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()))
}

fn crypto_config(
    args: &LaunchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<Option<Arc<CryptoConfig>>> {
    let mut trusted = Vec::new();
    for s in &args.trusted_subnets {
        let n: ipnetwork::IpNetwork = s.trim().parse().map_err(|_| {
            anyhow::anyhow!("--trusted-subnets {s}: not a CIDR (e.g. 192.168.0.0/16)")
        })?;
        trusted.push(n);
    }
    let psk = if args.psk_stdin {
        read_psk_stdin()?
    } else {
        match password(args)? {
            None => {
                if !trusted.is_empty() {
                    bail!("--trusted-subnets needs a password: without one nothing is encrypted");
                }
                return Ok(None);
            }
            Some(p) => psk::derive_psk(&p, &args.mesh_name)
                .map_err(|e| anyhow::anyhow!("password: {e}"))?,
        }
    };
    Ok(Some(Arc::new(CryptoConfig {
        psk,
        key: state_dir::static_key(dir)?,
        trusted,
        rekey_interval: Duration::from_secs(args.rekey_interval),
    })))
}

fn read_psk_stdin() -> anyhow::Result<Secret> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .context("read the key on stdin")?;
    let mut key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    if !hex_decode(line.trim(), &mut key[..]) {
        bail!("--psk-stdin: expected {} hex digits on stdin", 2 * KEY_LEN);
    }
    Ok(key)
}

pub(super) fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fill `out` from exactly `2 * out.len()` hex digits.
pub(super) fn hex_decode(s: &str, out: &mut [u8]) -> bool {
    if s.len() != 2 * out.len() || !s.is_ascii() {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match s
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(v) => *o = v,
            None => return false,
        }
    }
    true
}

/// The background router's arguments: ours without the password options.
fn background_argv(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if SECRET_FLAGS.contains(&a.as_str()) {
            skip_value = true;
            continue;
        }
        if SECRET_FLAGS.iter().any(|f| a.starts_with(&format!("{f}="))) {
            continue;
        }
        out.push(a);
    }
    out
}

pub fn launch(args: LaunchArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("launch: must be run as root");
    }
    let lock_path = lock::path_for_this_netns().context("network namespace")?;
    // Held until this process ends; the background router shares it.
    let lock = match args.lock_fd {
        // We are that background router: `launch` did the checks.
        Some(fd) => lock::InstanceLock::adopt(fd, &lock_path)?,
        None => {
            let lock = take_lock(&lock_path)?;
            check_control_name()?;
            lock
        }
    };
    let (cfg, note) = config(&args)?;
    if args.lock_fd.is_none() {
        // Here, not in the background router, so that the user reads why.
        check_range_is_free(cfg.ipam.range)?;
    }
    if args.foreground {
        return run_foreground(cfg, note);
    }
    if let Some(n) = &note {
        eprintln!("weave-rs: {n}");
    }
    spawn_background(&cfg, &lock, note)
}

/// The instance lock, or an error naming who holds it.
fn take_lock(path: &std::path::Path) -> anyhow::Result<lock::InstanceLock> {
    match lock::InstanceLock::acquire_at(path) {
        Ok(l) => Ok(l),
        Err(lock::LockError::Held { pid, path }) => {
            let holder = pid.map_or("an unknown process".to_string(), |p| format!("pid {p}"));
            match client::report() {
                Ok(r) => bail!(
                    "weave-rs router is already running in this network namespace (name {}, pid {}; {holder} holds the lock {})",
                    r.router.name,
                    r.router.pid,
                    path.display()
                ),
                Err(_) => bail!(
                    "weave-rs router is already running or starting in this network namespace ({holder} holds the lock {})",
                    path.display()
                ),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuse to start when the control socket's name is taken, naming who
/// holds it. Only a root process that answers like a router is "already
/// running": anyone can bind an abstract socket's name.
fn check_control_name() -> anyhow::Result<()> {
    if peer::name_is_free().context("control socket")? {
        return Ok(());
    }
    let name = String::from_utf8_lossy(SOCKET_NAME);
    match peer::holder_of_name() {
        Some(h) if h.is_root() => match client::report() {
            Ok(r) => bail!(
                "weave-rs router is already running in this network namespace (name {}, pid {})",
                r.router.name,
                r.router.pid
            ),
            Err(e) => bail!(
                "the control socket name @{name} is taken by {h}, which does not answer like a weave-rs router ({e})"
            ),
        },
        Some(h) => bail!(
            "the control socket name @{name} is taken by {h}: not a weave-rs router (it does not run as root); stop that process and launch again"
        ),
        None => bail!(
            "the control socket name @{name} is taken by a process that could not be identified"
        ),
    }
}

fn run_foreground(cfg: Config, note: Option<String>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEAVE_RS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(n) = note {
        tracing::warn!("{n}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(cfg))
}

/// Start `launch --foreground` detached, logging to the state dir, and wait
/// until it answers on the control socket.
fn spawn_background(
    cfg: &Config,
    held: &lock::InstanceLock,
    note: Option<String>,
) -> anyhow::Result<()> {
    let log_path = cfg.state_dir.join("router.log");
    // The previous router's log (perhaps its last words) is kept one launch.
    let _ = fs::rename(&log_path, cfg.state_dir.join("router.log.1"));
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    if let Some(n) = note {
        // The router appends after it (the descriptor is shared).
        let _ = std::io::Write::write_all(&mut log, format!("launch: {n}\n").as_bytes());
    }
    let exe = std::env::current_exe().context("locate the weave-rs binary")?;
    let mut argv = background_argv(std::env::args().skip(1));
    argv.push("--foreground".into());
    let lock_fd = held.raw_fd();
    argv.push(format!("--lock-fd={lock_fd}"));
    if cfg.crypto.is_some() {
        argv.push("--psk-stdin".into());
    }
    // The name chosen now is the one the router must use.
    if !argv
        .iter()
        .any(|a| a == "--name" || a.starts_with("--name="))
    {
        argv.push("--name".into());
        argv.push(cfg.name.to_string());
    }
    let mut cmd = Command::new(exe);
    cmd.args(&argv)
        .env_remove("WEAVE_PASSWORD")
        .stdin(if cfg.crypto.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid and fcntl are async-signal-safe. setsid detaches the
    // router from our session so it outlives this command and the terminal;
    // clearing FD_CLOEXEC lets it inherit the lock's descriptor.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::fcntl(lock_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the router")?;
    if let (Some(c), Some(mut stdin)) = (&cfg.crypto, child.stdin.take()) {
        let line = zeroize::Zeroizing::new(format!("{}\n", hex_encode(&c.psk[..])));
        // A failure shows up below as the router exiting with its reason.
        let _ = std::io::Write::write_all(&mut stdin, line.as_bytes());
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(r) = client::report() {
            if r.router.pid == child.id() {
                println!("{}", r.router.name);
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            let tail = fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let last = last.trim_start_matches("weave-rs: ");
            bail!(
                "router exited ({status}) during start: {last} (log: {})",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "router did not answer within {}s (log: {})",
                READY_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ask the router to stop and wait until it is gone.
pub fn stop() -> anyhow::Result<()> {
    let pid = client::report()?.router.pid;
    client::call(&crate::api::protocol::Request::Stop)?;
    wait_gone(pid)
}

fn wait_gone(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            break;
        }
        if Instant::now() > deadline {
            bail!("router (pid {pid}) did not stop within 10s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stop the router if it runs, then remove every link, rule and file
/// weave-rs made in this network namespace.
pub fn reset() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("reset: must be run as root");
    }
    match client::report() {
        Ok(r) => {
            // Our addresses and ranges go to a peer rather than be lost.
            match client::call(&crate::api::protocol::Request::IpamLeave) {
                Ok(crate::api::protocol::Reply::Ok { message, .. }) => {
                    tracing::info!("{message}")
                }
                Ok(crate::api::protocol::Reply::Error { error }) => {
                    tracing::warn!("IPAM: {error}")
                }
                Err(e) => tracing::warn!("IPAM: {e}"),
            }
            client::call(&crate::api::protocol::Request::Stop)?;
            wait_gone(r.router.pid)?;
        }
        Err(client::ClientError::NotRunning) => {}
        Err(e) => return Err(e.into()),
    }
    // A launch under way would lose its devices: wait for none.
    let lock_path = lock::path_for_this_netns().context("network namespace")?;
    let _lock = take_lock(&lock_path).context("reset")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let nl = crate::net::netlink::Netlink::connect()?;
        nl.reset(BRIDGE, TAP).await?;
        // A router killed with -9 leaves its fast path's device behind.
        nl.delete_link(crate::daemon::fastpath::DEVICE).await?;
        anyhow::Ok(())
    })?;
    for (family, result) in crate::net::iptables::remove_forward_accept(BRIDGE) {
        if let Err(e) = result {
            tracing::debug!("{}: {e}", family.program());
        }
    }
    if let Err(e) = crate::net::iptables::Iptables::default().remove_dns_redirects(BRIDGE) {
        tracing::debug!("iptables: {e}");
    }
    crate::net::ebtables::release_all("vethwrp");
    let (dir, _) = state_dir::path();
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}

fn parse_conn_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("{s}: expected a number from 1 to 10000")),
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_argv_drops_passwords_only() {
        let argv = |v: &[&str]| background_argv(v.iter().map(|s| s.to_string()));
        assert_eq!(
            argv(&[
                "launch",
                "--password",
                "s3cret",
                "10.0.0.1",
                "--password-file=/p",
                "--mtu",
                "1400"
            ]),
            ["launch", "10.0.0.1", "--mtu", "1400"]
        );
        assert_eq!(
            argv(&["launch", "--password=x", "--password-file", "/p"]),
            ["launch"]
        );
        assert_eq!(
            argv(&["launch", "--lock-fd", "7", "--lock-fd=8", "h2"]),
            ["launch", "h2"]
        );
        // The IPAM flags reach the router.
        let ipam = [
            "launch",
            "--ipalloc-range",
            "fd00::/64",
            "--ipalloc-default-subnet=fd00::/80",
            "--ipalloc-init",
            "consensus=2",
            "h2",
        ];
        assert_eq!(argv(&ipam), ipam);
    }

    fn launch_args(argv: &[&str]) -> LaunchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            launch: LaunchArgs,
        }
        let argv = std::iter::once("launch").chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().launch
    }

    #[test]
    fn ipam_flags() {
        let peers = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (c, q) = ipam(&launch_args(&[]), &[]).unwrap();
        assert_eq!(c.range, ipam_config::DEFAULT_RANGE);
        assert_eq!(c.default_subnet, ipam_config::DEFAULT_RANGE);
        assert_eq!(c.init, ipam_config::Init::Consensus(None));
        assert_eq!(q, Some(1));
        // Inferred from the distinct peers named: 2 of 3.
        let two = peers(&["10.0.0.2:6783", "10.0.0.3:6783", "10.0.0.2:6783"]);
        assert_eq!(ipam(&launch_args(&[]), &two).unwrap().1, Some(2));
        let a = launch_args(&[
            "--ipalloc-range",
            "fd00:1::/64",
            "--ipalloc-default-subnet",
            "fd00:1::/96",
            "--ipalloc-init",
            "consensus=3",
        ]);
        let (c, q) = ipam(&a, &two).unwrap();
        assert_eq!(c.range.to_string(), "fd00:1::/64");
        assert_eq!(c.default_subnet.to_string(), "fd00:1::/96");
        assert_eq!(q, Some(3));
        let (_, q) = ipam(&launch_args(&["--ipalloc-init", "observer"]), &two).unwrap();
        assert_eq!(q, None);
    }

    #[test]
    fn bad_ipam_flags_are_one_line_naming_the_flag() {
        let err = |argv: &[&str]| ipam(&launch_args(argv), &[]).unwrap_err().to_string();
        assert_eq!(
            err(&["--ipalloc-range", "10.32.0.0"]),
            "--ipalloc-range 10.32.0.0: not a CIDR (expected a network with a prefix length, e.g. 10.32.0.0/12)"
        );
        assert_eq!(
            err(&["--ipalloc-range", "10.32.0.0/33"]),
            "--ipalloc-range 10.32.0.0/33: not a CIDR (expected a network with a prefix length, e.g. 10.32.0.0/12)"
        );
        assert_eq!(
            err(&["--ipalloc-range", "10.32.0.1/12"]),
            "--ipalloc-range 10.32.0.1/12: not a network address (host bits set); did you mean 10.32.0.0/12?"
        );
        assert_eq!(
            err(&["--ipalloc-default-subnet", "10.1.0.0/16"]),
            "--ipalloc-default-subnet 10.1.0.0/16: not within --ipalloc-range 10.32.0.0/12"
        );
        assert_eq!(
            err(&["--ipalloc-default-subnet", "x"]),
            "--ipalloc-default-subnet x: not a CIDR (expected a network with a prefix length, e.g. 10.32.0.0/12)"
        );
        assert!(err(&["--ipalloc-init", "consensus=0"]).starts_with("--ipalloc-init consensus=0: "));
        assert!(err(&["--ipalloc-init", "seed="]).starts_with("--ipalloc-init seed=: "));
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let mut out = [0u8; 4];
        assert!(hex_decode(&hex_encode(&[1, 0xab, 0, 255]), &mut out));
        assert_eq!(out, [1, 0xab, 0, 255]);
        assert!(!hex_decode("0g000000", &mut out));
        assert!(!hex_decode("000000", &mut out));
        assert!(!hex_decode("éé000000", &mut out));
    }
}
