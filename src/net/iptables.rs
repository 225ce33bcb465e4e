//! The firewall rules the router needs:
//! - `iptables -I FORWARD -i <bridge> -o <bridge> -j ACCEPT`, and the same
//!   with `ip6tables`, where that chain could drop bridged frames
//!   ([`Iptables::guard_forward`]; `daemon::firewall` keeps it there);
//! - with DNS on, `-t nat -I PREROUTING -i <bridge> -p udp|tcp --dport 53
//!   ! -d <dns> -j DNAT --to-destination <dns>:53`: the DNS queries that
//!   Docker's embedded resolver sends, from a container on a weave-rs
//!   network, to the host's resolvers (routed to the bridge by the
//!   plugin's Join) are answered by weave-rs DNS, which forwards what is
//!   not its own.
//!
//! With br_netfilter loaded (it is once Docker runs) and a FORWARD policy of
//! DROP, bridged traffic between a container's veth and the router's TAP is
//! silently dropped while ARP (or, for IPv6, whatever the policy lets by)
//! still works. Each rule is added once (checked with `-C` first) and
//! removed on reset. The binaries are run as child processes (blocking, a
//! few milliseconds: from async code use `spawn_blocking`). If one is not
//! installed the functions return [`NetError::IptablesMissing`] for that
//! family, which callers log as a warning.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::NetError;

/// An address family, and so which of `iptables` / `ip6tables` is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The program managing this family's rules.
    pub fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// How to run iptables: the program (default `iptables`, looked up in PATH).
#[derive(Debug, Clone)]
pub struct Iptables {
    program: PathBuf,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables::for_family(Family::V4)
    }
}

/// Removes the FORWARD accept rule for `bridge` (every copy) in each
/// family. Returns, per family, whether one was removed.
pub fn remove_forward_accept(bridge: &str) -> Vec<(Family, Result<bool, NetError>)> {
    Family::ALL
        .iter()
        .map(|&f| (f, Iptables::for_family(f).remove_forward_accept(bridge)))
        .collect()
}

impl Iptables {
    /// `iptables` or `ip6tables`, looked up in PATH.
    pub fn for_family(family: Family) -> Self {
        Iptables::with_program(family.program())
    }

    /// Uses `program` instead of `iptables` (e.g. `iptables-legacy`).
    pub fn with_program(program: impl AsRef<Path>) -> Self {
        Iptables {
            program: program.as_ref().to_path_buf(),
        }
    }

    /// Adds the FORWARD accept rule for `bridge` unless present; returns
    /// whether it was added.
    pub fn ensure_forward_accept(&self, bridge: &str) -> Result<bool, NetError> {
        self.ensure(&forward_accept(bridge))
    }

    /// Adds the FORWARD accept rule for `bridge` if the chain could drop
    /// bridged frames and the rule is not there yet; returns why it was
    /// added. A chain that accepts everything is left alone: its table
    /// would otherwise be created, and every packet of the host, the fast
    /// path's included, would pass its hooks (about a tenth of the packet
    /// rate on the bench).
    pub fn guard_forward(&self, bridge: &str) -> Result<Option<Guarded>, NetError> {
        let args = words(&["-S", "FORWARD"]);
        let listed = self.run(&args)?;
        if !listed.status.success() {
            return Err(self.failed(&args, &listed));
        }
        match forward_chain(&String::from_utf8_lossy(&listed.stdout), bridge) {
            ForwardChain {
                guarded: Some(why),
                ours: false,
            } => {
                self.ensure_forward_accept(bridge)?;
                Ok(Some(why))
            }
            _ => Ok(None),
        }
    }

    /// Whether this iptables is iptables-nft (`-V` says `(nf_tables)`), whose
    /// changes the kernel announces as nftables changes.
    pub fn writes_nftables(&self) -> bool {
        Command::new(&self.program)
            .arg("-V")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nf_tables"))
    }

    /// Removes every copy of the FORWARD accept rule for `bridge`; returns
    /// whether one was removed.
    pub fn remove_forward_accept(&self, bridge: &str) -> Result<bool, NetError> {
        self.remove(&forward_accept(bridge))
    }

    /// Adds the DNS redirections (UDP and TCP) for `bridge` unless present.
    pub fn ensure_dns_redirect(
        &self,
        bridge: &str,
        dns: std::net::Ipv4Addr,
    ) -> Result<(), NetError> {
        for proto in ["udp", "tcp"] {
            self.ensure(&dns_redirect(bridge, dns, proto))?;
        }
        Ok(())
    }

    /// Removes the DNS redirections of `bridge`, whatever their address.
    pub fn remove_dns_redirects(&self, bridge: &str) -> Result<bool, NetError> {
        let listed = self.run(&["-t".into(), "nat".into(), "-S".into(), "PREROUTING".into()])?;
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        let mut removed = false;
        for line in text.lines() {
            let Some(spec) = line.strip_prefix("-A PREROUTING ") else {
                continue;
            };
            let words: Vec<String> = spec.split_whitespace().map(str::to_string).collect();
            let ours = words.windows(2).any(|w| w[0] == "-i" && w[1] == bridge)
                && words.windows(2).any(|w| w[0] == "--dport" && w[1] == "53")
                && words.iter().any(|w| w == "DNAT");
            if ours {
                let mut args = vec![
                    "-t".to_string(),
                    "nat".into(),
                    "-D".into(),
                    "PREROUTING".into(),
                ];
                args.extend(words);
                self.run_ok(&args)?;
                removed = true;
            }
        }
        Ok(removed)
    }

    /// Adds `r` (at the top of its chain) unless present; whether it was.
    fn ensure(&self, r: &Rule) -> Result<bool, NetError> {
        if self.check(r)? {
            return Ok(false);
        }
        self.run_ok(&r.args("-I"))?;
        Ok(true)
    }

    /// Removes every copy of `r`; whether one was removed.
    fn remove(&self, r: &Rule) -> Result<bool, NetError> {
        let mut removed = false;
        // Bounded: each round deletes one copy; never loop forever on a
        // misbehaving binary.
        for _ in 0..16 {
            if !self.check(r)? {
                break;
            }
            self.run_ok(&r.args("-D"))?;
            removed = true;
        }
        Ok(removed)
    }

    /// Whether the rule is present (`-C` exits 0; 1 means absent).
    fn check(&self, r: &Rule) -> Result<bool, NetError> {
        let args = r.args("-C");
        let out = self.run(&args)?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failed(&args, &out)),
        }
    }

    fn run_ok(&self, args: &[String]) -> Result<(), NetError> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failed(args, &out))
        }
    }

    fn program_name(&self) -> String {
        self.program.display().to_string()
    }

    fn run(&self, args: &[String]) -> Result<std::process::Output, NetError> {
        Command::new(&self.program)
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::IptablesMissing {
                    program: self.program_name(),
                },
                _ => NetError::Iptables {
                    program: self.program_name(),
                    args: args.join(" "),
                    cause: e.to_string(),
                },
            })
    }

    fn failed(&self, args: &[String], out: &std::process::Output) -> NetError {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        NetError::Iptables {
            program: self.program_name(),
            args: args.join(" "),
            cause: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        }
    }
}

/// A FORWARD chain, as far as bridged frames go.
#[derive(Debug, PartialEq, Eq)]
pub struct ForwardChain {
    /// Why it could drop them; None: policy ACCEPT and no rules but ours
    /// (or no table at all).
    pub guarded: Option<Guarded>,
    /// Our accept rule is there.
    pub ours: bool,
}

/// Why a FORWARD chain could drop bridged frames.
#[derive(Debug, PartialEq, Eq)]
pub enum Guarded {
    /// Its policy is not ACCEPT.
    Policy(String),
    /// It has rules (other than ours).
    Rules(usize),
}

impl std::fmt::Display for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guarded::Policy(p) => write!(f, "has the policy {p}"),
            Guarded::Rules(n) => write!(f, "has {n} rule(s)"),
        }
    }
}

/// Reads `-S FORWARD`'s listing (`-P FORWARD DROP`, `-A FORWARD ...`).
pub fn forward_chain(listing: &str, bridge: &str) -> ForwardChain {
    let rule = forward_accept(bridge);
    let mut policy = None;
    let (mut others, mut ours) = (0, false);
    for line in listing.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix("-P FORWARD ") {
            policy = Some(p.trim());
        } else if let Some(spec) = line.strip_prefix("-A FORWARD ") {
            if spec
                .split_whitespace()
                .eq(rule.spec.iter().map(String::as_str))
            {
                ours = true;
            } else {
                others += 1;
            }
        }
    }
    let guarded = match policy {
        Some(p) if p != "ACCEPT" => Some(Guarded::Policy(p.to_string())),
        _ if others > 0 => Some(Guarded::Rules(others)),
        _ => None,
    };
    ForwardChain { guarded, ours }
}

/// A rule: its table, its chain, and what it matches and does.
struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    /// The arguments after `-w`, with `op` = `-C`, `-I` or `-D`.
    fn args(&self, op: &str) -> Vec<String> {
        // The filter table is the default, and not named.
        let mut a = Vec::new();
        if self.table != "filter" {
            a.extend(["-t".to_string(), self.table.to_string()]);
        }
        a.extend([op.to_string(), self.chain.to_string()]);
        a.extend(self.spec.iter().cloned());
        a
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// The same for both families.
fn forward_accept(bridge: &str) -> Rule {
    Rule {
        table: "filter",
        chain: "FORWARD",
        spec: words(&["-i", bridge, "-o", bridge, "-j", "ACCEPT"]),
    }
}

fn dns_redirect(bridge: &str, dns: std::net::Ipv4Addr, proto: &str) -> Rule {
    let (to, dst) = (format!("{dns}:53"), dns.to_string());
    Rule {
        table: "nat",
        chain: "PREROUTING",
        spec: words(&[
            "-i",
            bridge,
            "-p",
            proto,
            "--dport",
            "53",
            "!",
            "-d",
            &dst,
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_chain_open_or_guarded() {
        let chain = |guarded, ours| ForwardChain { guarded, ours };
        let open = "-P FORWARD ACCEPT\n";
        assert_eq!(forward_chain(open, "weave"), chain(None, false));
        assert_eq!(forward_chain("", "weave"), chain(None, false));
        // Docker: policy DROP and its own jumps.
        let docker = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n";
        assert_eq!(
            forward_chain(docker, "weave"),
            chain(Some(Guarded::Policy("DROP".into())), false)
        );
        // ufw-like: policy ACCEPT, rules that may reject.
        let rules =
            "-P FORWARD ACCEPT\n-A FORWARD -i weave -o weave -j ACCEPT\n-A FORWARD -j REJECT\n";
        assert_eq!(
            forward_chain(rules, "weave"),
            chain(Some(Guarded::Rules(1)), true)
        );
        // Another bridge's accept rule is not ours.
        let other = "-P FORWARD ACCEPT\n-A FORWARD -i br0 -o br0 -j ACCEPT\n";
        assert_eq!(
            forward_chain(other, "weave"),
            chain(Some(Guarded::Rules(1)), false)
        );
        // Only ours left (an older router's): nothing more to do.
        let ours = "-P FORWARD ACCEPT\n-A FORWARD -i weave -o weave -j ACCEPT\n";
        assert_eq!(forward_chain(ours, "weave"), chain(None, true));
        assert_eq!(
            Guarded::Policy("DROP".into()).to_string(),
            "has the policy DROP"
        );
    }

    #[test]
    fn rule_arguments() {
        assert_eq!(
            forward_accept("weave").args("-I").join(" "),
            "-I FORWARD -i weave -o weave -j ACCEPT"
        );
        assert_eq!(
            forward_accept("br0").args("-D").join(" "),
            "-D FORWARD -i br0 -o br0 -j ACCEPT"
        );
        assert_eq!(
            dns_redirect("weave", [169, 254, 53, 53].into(), "udp")
                .args("-C")
                .join(" "),
            "-t nat -C PREROUTING -i weave -p udp --dport 53 ! -d 169.254.53.53 -j DNAT \
             --to-destination 169.254.53.53:53"
        );
        assert_eq!(Family::V4.program(), "iptables");
        assert_eq!(Family::V6.program(), "ip6tables");
    }

    #[test]
    fn missing_program_is_its_own_error() {
        let e = Iptables::with_program("/nonexistent/ip6tables")
            .ensure_forward_accept("weave")
            .unwrap_err();
        assert!(matches!(e, NetError::IptablesMissing { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("/nonexistent/ip6tables is not installed"));
    }
}
