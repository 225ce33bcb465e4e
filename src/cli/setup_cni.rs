//! `weave-rs setup-cni`: installs this binary as the CNI plugin
//! `weave-rs-cni` in the CNI bin directories that exist, and writes a
//! network config list (weave-rs, then the standard `portmap`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::json;

use crate::core::cni::{conf::valid_ifname, SpecVersion, PLUGIN_TYPE};
use crate::files;

/// Where runtimes look for plugins: the usual place, and Debian's.
pub const BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];
pub const CONF_DIR: &str = "/etc/cni/net.d";
const CONF_FILE: &str = "10-weave-rs.conflist";

#[derive(clap::Args, Debug)]
pub struct SetupCniArgs {
    /// Install the plugin here (repeatable; default: those of
    /// /opt/cni/bin and /usr/lib/cni that exist, else /opt/cni/bin).
    #[arg(long = "bin-dir", value_name = "DIR")]
    pub bin_dirs: Vec<PathBuf>,
    /// Write the network config list here.
    #[arg(long, value_name = "DIR", default_value = CONF_DIR)]
    pub conf_dir: PathBuf,
    /// The network's name (`podman run --network NAME`).
    #[arg(long, default_value = "weave-rs")]
    pub network: String,
    /// Allocate from this subnet of the range (default: the default subnet).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<ipnetwork::IpNetwork>,
    /// The containers' interface MTU (default: the overlay's).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// The bridge (default: the router's, `weave`).
    #[arg(long)]
    pub bridge: Option<String>,
    /// The config's cniVersion.
    #[arg(long, default_value = "1.0.0")]
    pub cni_version: String,
}

pub fn run(args: SetupCniArgs) -> anyhow::Result<()> {
    let conflist = conflist(&args)?;
    let exe = std::env::current_exe().context("finding this program")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let dirs = if args.bin_dirs.is_empty() {
        default_bin_dirs()
    } else {
        args.bin_dirs.clone()
    };
    for dir in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let to = dir.join(PLUGIN_TYPE);
        files::write_atomic(&to, &bytes, 0o755, None)
            .with_context(|| format!("installing {}", to.display()))?;
        println!("installed {}", to.display());
    }
    std::fs::create_dir_all(&args.conf_dir)
        .with_context(|| format!("creating {}", args.conf_dir.display()))?;
    let to = args.conf_dir.join(CONF_FILE);
    files::write_atomic(&to, conflist.as_bytes(), 0o644, None)
        .with_context(|| format!("writing {}", to.display()))?;
    println!("wrote {} (network {})", to.display(), args.network);
    Ok(())
}

fn default_bin_dirs() -> Vec<PathBuf> {
    let found: Vec<PathBuf> = BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .collect();
    if found.is_empty() {
        vec![PathBuf::from(BIN_DIRS[0])]
    } else {
        found
    }
}

/// The network config list `args` describe.
pub fn conflist(args: &SetupCniArgs) -> anyhow::Result<String> {
    let version: SpecVersion = args
        .cni_version
        .parse()
        .map_err(|e| anyhow::anyhow!("--cni-version {}: {e}", args.cni_version))?;
    if version < SpecVersion::new(0, 3, 0) {
        bail!("--cni-version {version}: weave-rs-cni speaks 0.3.0 to 1.1.0");
    }
    let named = rscni_types::types::NetConf {
        name: args.network.clone(),
        ..Default::default()
    };
    if named.validate_name().is_err() {
        bail!(
            "--network {:?}: letters, digits, '_', '.' and '-', starting with a letter or digit",
            args.network
        );
    }
    let mut plugin = json!({
        "type": PLUGIN_TYPE,
        "hairpin": true,
        "capabilities": {"aliases": true},
    });
    if let Some(s) = args.subnet {
        plugin["subnet"] = json!(s.to_string());
    }
    if let Some(m) = args.mtu {
        plugin["mtu"] = json!(m);
    }
    if let Some(b) = &args.bridge {
        if !valid_ifname(b) {
            bail!("--bridge {b:?} is not an interface name");
        }
        plugin["bridge"] = json!(b);
    }
    let list = json!({
        "cniVersion": version.to_string(),
        "name": args.network,
        "plugins": [
            plugin,
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
    });
    Ok(serde_json::to_string_pretty(&list)? + "\n")
}
