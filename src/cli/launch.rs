//! `launch`, `stop` and `reset`: the router's life cycle on this host.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::api::client;
use crate::core::PeerName;
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
    /// Overlay MTU (the MTU containers get).
    #[arg(long, default_value_t = DEFAULT_MTU)]
    pub mtu: u16,
    /// Most connections this router keeps.
    #[arg(long, default_value_t = DEFAULT_CONN_LIMIT, value_parser = parse_conn_limit)]
    pub conn_limit: usize,
    /// Do not connect to peers learned from other peers.
    #[arg(long)]
    pub no_discovery: bool,
    /// Serve read-only HTTP status and metrics on ADDR (host:port), or `off`.
    #[arg(long, value_name = "ADDR", default_value = crate::api::http::DEFAULT_ADDR, value_parser = parse_http_addr)]
    pub http_addr: HttpAddr,
}

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

/// Where this network namespace's router keeps its files.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WEAVE_RS_STATE_DIR") {
        return PathBuf::from(d);
    }
    let ns = fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    PathBuf::from(format!("/var/lib/weave-rs/netns-{ns}"))
}

fn peer_name(dir: &std::path::Path, given: Option<PeerName>) -> anyhow::Result<PeerName> {
    let file = dir.join("peer-name");
    if let Some(n) = given {
        fs::write(&file, format!("{n}\n")).with_context(|| format!("write {}", file.display()))?;
        return Ok(n);
    }
    if let Ok(s) = fs::read_to_string(&file) {
        if let Ok(n) = s.trim().parse() {
            return Ok(n);
        }
    }
    let n = PeerName::random();
    fs::write(&file, format!("{n}\n")).with_context(|| format!("write {}", file.display()))?;
    Ok(n)
}

fn config(args: &LaunchArgs) -> anyhow::Result<Config> {
    if !MTU_RANGE.contains(&args.mtu) {
        bail!(
            "--mtu {}: must be between {} and {}",
            args.mtu,
            MTU_RANGE.start(),
            MTU_RANGE.end()
        );
    }
    let mut peers = Vec::new();
    for p in &args.peers {
        peers.push(daemon::targets::parse_target(p, args.port).map_err(anyhow::Error::msg)?);
    }
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
    let dir = state_dir();
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(Config {
        name: peer_name(&dir, args.name)?,
        nickname,
        port: args.port,
        mtu: args.mtu,
        conn_limit: args.conn_limit,
        discovery: !args.no_discovery,
        peers,
        bridge: BRIDGE.to_string(),
        tap: TAP.to_string(),
        state_dir: dir,
        http_addr: args.http_addr.0,
    })
}

pub fn launch(args: LaunchArgs) -> anyhow::Result<()> {
    if let Ok(r) = client::report() {
        bail!(
            "weave-rs router is already running in this network namespace (name {}, pid {})",
            r.router.name,
            r.router.pid
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("launch: must be run as root");
    }
    let cfg = config(&args)?;
    if args.foreground {
        return run_foreground(cfg);
    }
    spawn_background(&cfg)
}

fn run_foreground(cfg: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEAVE_RS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(cfg))
}

/// Start `launch --foreground` detached, logging to the state dir, and wait
/// until it answers on the control socket.
fn spawn_background(cfg: &Config) -> anyhow::Result<()> {
    let log_path = cfg.state_dir.join("router.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locate the weave-rs binary")?;
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    argv.push("--foreground".into());
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
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the router from our
    // session so it outlives this command and the terminal.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("start the router")?;
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
            client::call(&crate::api::protocol::Request::Stop)?;
            wait_gone(r.router.pid)?;
        }
        Err(client::ClientError::NotRunning) => {}
        Err(e) => return Err(e.into()),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let nl = crate::net::netlink::Netlink::connect()?;
        nl.reset(BRIDGE, TAP).await?;
        anyhow::Ok(())
    })?;
    if let Err(e) = crate::net::iptables::remove_forward_accept(BRIDGE) {
        tracing::debug!("iptables: {e}");
    }
    let dir = state_dir();
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
