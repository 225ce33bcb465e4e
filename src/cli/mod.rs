//! The command line: argument definitions and one function per command.

mod dns;
mod launch;
mod lock;
mod run;
mod setup_cni;
pub(crate) mod state_dir;
pub(crate) mod status;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::api::client;
use crate::api::protocol::{Reply, Request};
use crate::core::cidr;
use crate::core::ipam::spec::{self, AddrSpec};

#[derive(Parser, Debug)]
#[command(
    name = "weave-rs",
    version,
    about = "One flat layer-2 network for containers on many hosts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the router on this host and connect to the given peers.
    Launch(Box<launch::LaunchArgs>),
    /// docker run a container with ethwe up before its own process starts:
    /// run [ADDR...] <docker run arguments>. ADDR: CIDR (that address),
    /// net:CIDR (one allocated in that subnet), net:default, ip:ADDR/LEN
    /// (claim that address); none: one from the default subnet.
    #[command(disable_help_flag = true)]
    Run {
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "[ADDR...] DOCKER-RUN-ARGS")]
        args: Vec<String>,
    },
    /// Connect to more peers (address or address:port).
    Connect {
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Stop connecting to these peers (closes the connections made to them).
    Forget {
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Give a network namespace an interface ethwe on the overlay:
    /// attach [ADDR...] TARGET, TARGET = /var/run/netns/NAME, pid:N or a
    /// container. ADDR: CIDR, net:CIDR, net:default or ip:ADDR/LEN; none:
    /// one from the default subnet.
    Attach {
        #[arg(required = true, num_args = 1.., value_name = "[ADDR...] TARGET")]
        args: Vec<String>,
    },
    /// Remove addresses (or, with none given, ethwe) from a namespace:
    /// detach [ADDR...] TARGET.
    Detach {
        #[arg(required = true, num_args = 1.., value_name = "[ADDR...] TARGET")]
        args: Vec<String>,
    },
    /// Give this host an address on the overlay: expose [ADDR...], as for
    /// attach (none: one from the default subnet).
    Expose {
        #[arg(value_name = "ADDR")]
        cidrs: Vec<String>,
    },
    /// Remove this host's overlay addresses (all, if none given).
    Hide { cidrs: Vec<String> },
    /// Router summary; `status peers` or `status connections` for detail.
    Status {
        #[arg(value_parser = ["peers", "connections", "targets", "ipam", "dns"])]
        what: Option<String>,
    },
    /// Everything the router knows, as JSON.
    Report,
    /// Attached namespaces and containers: target, ethwe MAC, addresses.
    Ps,
    /// Take over the address ranges of a peer that is gone for good (by
    /// name or nickname). Safe to run on several hosts at once.
    Rmpeer { peer: String },
    /// Name addresses in DNS: dns-add ADDR... NAME|CONTAINER. A NAME has a
    /// dot (api.weave.local); a CONTAINER gets its names, with its overlay
    /// addresses when none are given.
    DnsAdd {
        #[arg(required = true, num_args = 1.., value_name = "[ADDR...] NAME|CONTAINER")]
        args: Vec<String>,
    },
    /// Remove names: dns-remove [ADDR...] NAME|CONTAINER (no address: all).
    DnsRemove {
        #[arg(required = true, num_args = 1.., value_name = "[ADDR...] NAME|CONTAINER")]
        args: Vec<String>,
    },
    /// The addresses of a name, as this host answers it.
    DnsLookup { name: String },
    /// The docker run flags that make a container use weave-rs DNS.
    DnsArgs,
    /// Install the CNI plugin (weave-rs-cni) and a network config list, for
    /// Kubernetes, podman and other CNI runtimes.
    SetupCni(setup_cni::SetupCniArgs),
    /// Stop the router (the bridge and attached namespaces stay).
    Stop,
    /// Stop the router and remove everything weave-rs made on this host.
    Reset,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context and the root cause.
            let mut msg = e.to_string();
            if let Some(root) = e.chain().skip(1).last() {
                msg = format!("{msg}: {root}");
            }
            eprintln!("weave-rs: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn call(req: Request) -> anyhow::Result<String> {
    match client::call(&req)? {
        Reply::Ok { message, .. } => Ok(message),
        Reply::Error { error } => bail!(error),
    }
}

/// Split "[ADDR...] TARGET" and check every address before asking the
/// router; the addresses as the router reads them.
fn specs_and_target(args: &[String]) -> anyhow::Result<(Vec<String>, String)> {
    let (specs, rest) = spec::split_specs(args)?;
    let target = match rest {
        [target] => target,
        [] => match args.last() {
            Some(last) => bail!("{last}: expected a TARGET (/var/run/netns/NAME, pid:N or a container) after the addresses"),
            None => bail!("missing TARGET"),
        },
        [first, .., last] => {
            if spec::looks_like_spec(last) {
                bail!("{last}: expected a TARGET (/var/run/netns/NAME, pid:N or a container) after the addresses");
            }
            bail!("{first}: not an address (CIDR, net:CIDR, net:default or ip:ADDR/LEN); give the addresses, then one TARGET");
        }
    };
    if !crate::docker::looks_like_container(target) {
        target.parse::<crate::net::netns::NetnsTarget>()?;
    }
    Ok((strings(&specs), target.clone()))
}

fn strings(specs: &[AddrSpec]) -> Vec<String> {
    specs.iter().map(AddrSpec::to_string).collect()
}

/// "attach 10.2.1.1/24 TARGET", "attach TARGET": what was asked, for errors.
fn asked(command: &str, specs: &[String], target: &str) -> String {
    let mut words = vec![command];
    words.extend(specs.iter().map(String::as_str));
    words.push(target);
    words.join(" ")
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Launch(args) => launch::launch(*args),
        Command::Run { args } => run::run(args),
        Command::Connect { peers } => call(Request::Connect { peers }).map(drop),
        Command::Forget { peers } => call(Request::Forget { peers }).map(drop),
        Command::Attach { args } => {
            let (cidrs, target) = specs_and_target(&args)?;
            let what = asked("attach", &cidrs, &target);
            let addrs = call(Request::Attach { target, cidrs }).context(what)?;
            println!("{addrs}");
            Ok(())
        }
        Command::Detach { args } => {
            let (cidrs, target) = specs_and_target(&args)?;
            call(Request::Detach {
                target: target.clone(),
                cidrs,
            })
            .with_context(|| format!("detach {target}"))
            .map(drop)
        }
        Command::Expose { cidrs } => {
            let specs = cidrs
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<AddrSpec>, _>>()?;
            let addrs = call(Request::Expose {
                cidrs: strings(&specs),
            })
            .context("expose")?;
            println!("{addrs}");
            Ok(())
        }
        Command::Hide { cidrs } => {
            cidr::parse_all(&cidrs)?;
            call(Request::Hide { cidrs }).context("hide").map(drop)
        }
        Command::Status { what } => status::status(what.as_deref()),
        Command::Report => {
            let r = client::report()?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::Ps => {
            let r = client::report()?;
            print!("{}", status::ps(&r));
            Ok(())
        }
        Command::Rmpeer { peer } => {
            let m = call(Request::RemovePeer { peer: peer.clone() })
                .with_context(|| format!("rmpeer {peer}"))?;
            println!("{m}");
            Ok(())
        }
        Command::DnsAdd { args } => dns::add(&args),
        Command::DnsRemove { args } => dns::remove(&args),
        Command::DnsLookup { name } => dns::lookup(&name),
        Command::DnsArgs => dns::print_args(),
        Command::SetupCni(args) => setup_cni::run(args),
        Command::Stop => launch::stop(),
        Command::Reset => launch::reset(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(v: &[&str]) -> Result<(Vec<String>, String), String> {
        let args: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        specs_and_target(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn addresses_are_optional_and_mix() {
        assert_eq!(
            split(&["/var/run/netns/x"]),
            Ok((vec![], "/var/run/netns/x".into()))
        );
        assert_eq!(
            split(&[
                "net:10.32.1.0/24",
                "ip:10.32.0.9/12",
                "10.0.1.2/24",
                "net:default",
                "pid:42"
            ]),
            Ok((
                vec![
                    "net:10.32.1.0/24".into(),
                    "ip:10.32.0.9/12".into(),
                    "10.0.1.2/24".into(),
                    "net:default".into()
                ],
                "pid:42".into()
            ))
        );
        assert_eq!(
            split(&["10.0.1.2/24", "redis-1"]),
            Ok((vec!["10.0.1.2/24".into()], "redis-1".into()))
        );
    }

    #[test]
    fn bad_addresses_and_targets_are_named() {
        assert_eq!(
            split(&["10.2.1.300/24", "/var/run/netns/x"]),
            Err("10.2.1.300/24: invalid CIDR (expected an address with a prefix length, e.g. 10.2.1.1/24)".into())
        );
        assert_eq!(
            split(&["ip:10.32.0.9", "/var/run/netns/x"]),
            Err("ip:10.32.0.9: ip: needs ADDR/LEN, the address and its subnet's prefix length (e.g. ip:10.32.0.9/12)".into())
        );
        assert_eq!(
            split(&["not-a-cidr", "/var/run/netns/x"]),
            Err("not-a-cidr: not an address (CIDR, net:CIDR, net:default or ip:ADDR/LEN); give the addresses, then one TARGET".into())
        );
        assert_eq!(
            split(&["10.2.1.1/24"]),
            Err("10.2.1.1/24: expected a TARGET (/var/run/netns/NAME, pid:N or a container) after the addresses".into())
        );
        assert_eq!(
            split(&["/var/run/netns/x", "10.2.1.1/24"]),
            Err("10.2.1.1/24: expected a TARGET (/var/run/netns/NAME, pid:N or a container) after the addresses".into())
        );
        assert!(split(&["pid:0"]).unwrap_err().contains("pid:0"));
        assert_eq!(split(&[]), Err("missing TARGET".into()));
    }

    #[test]
    fn what_was_asked() {
        assert_eq!(asked("attach", &[], "pid:4"), "attach pid:4");
        assert_eq!(
            asked("attach", &["net:default".into()], "pid:4"),
            "attach net:default pid:4"
        );
    }

    #[test]
    fn commands_parse_with_and_without_addresses() {
        let parse =
            |v: &[&str]| Cli::try_parse_from(std::iter::once("weave-rs").chain(v.iter().copied()));
        assert!(parse(&["run", "-d", "redis"]).is_ok());
        assert!(parse(&[
            "run",
            "net:10.32.1.0/24",
            "ip:10.32.0.9/12",
            "10.0.1.2/24",
            "-d",
            "redis"
        ])
        .is_ok());
        assert!(parse(&["attach", "/var/run/netns/x"]).is_ok());
        assert!(parse(&["detach", "/var/run/netns/x"]).is_ok());
        assert!(parse(&["expose"]).is_ok());
        assert!(parse(&["expose", "net:default"]).is_ok());
        assert!(parse(&["attach"]).is_err());
        assert!(parse(&["run"]).is_err());
        match parse(&["launch"]).map(|c| c.command) {
            Ok(Command::Launch(a)) => {
                assert_eq!(a.ipalloc_range, "10.32.0.0/12");
                assert_eq!(a.ipalloc_init, "consensus");
                assert_eq!(a.ipalloc_default_subnet, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
