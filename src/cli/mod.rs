//! The command line: argument definitions and one function per command.

mod launch;
mod lock;
mod run;
mod state_dir;
pub(crate) mod status;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::api::client;
use crate::api::protocol::{Reply, Request};
use crate::core::cidr;

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
    /// run CIDR... <docker run arguments>.
    #[command(disable_help_flag = true)]
    Run {
        #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "CIDR... DOCKER-RUN-ARGS")]
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
    /// attach CIDR... TARGET, TARGET = /var/run/netns/NAME or pid:N.
    Attach {
        #[arg(required = true, num_args = 2.., value_name = "CIDR... TARGET")]
        args: Vec<String>,
    },
    /// Remove addresses (or, with none given, ethwe) from a namespace:
    /// detach [CIDR...] TARGET.
    Detach {
        #[arg(required = true, num_args = 1.., value_name = "[CIDR...] TARGET")]
        args: Vec<String>,
    },
    /// Give this host an address on the overlay.
    Expose {
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    /// Remove this host's overlay addresses (all, if none given).
    Hide { cidrs: Vec<String> },
    /// Router summary; `status peers` or `status connections` for detail.
    Status {
        #[arg(value_parser = ["peers", "connections", "targets"])]
        what: Option<String>,
    },
    /// Everything the router knows, as JSON.
    Report,
    /// Attached namespaces and containers: target, ethwe MAC, addresses.
    Ps,
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

/// Split "CIDR... TARGET" and check every CIDR before asking the router.
fn cidrs_and_target(args: &[String]) -> anyhow::Result<(Vec<String>, String)> {
    let (target, cidrs) = args.split_last().context("missing TARGET")?;
    cidr::parse_all(cidrs)?;
    if cidr::looks_like_cidr(target) {
        bail!("{target}: expected a TARGET (/var/run/netns/NAME, pid:N or a container) after the CIDRs");
    }
    if !crate::docker::looks_like_container(target) {
        target.parse::<crate::net::netns::NetnsTarget>()?;
    }
    Ok((cidrs.to_vec(), target.clone()))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Launch(args) => launch::launch(*args),
        Command::Run { args } => run::run(args),
        Command::Connect { peers } => call(Request::Connect { peers }).map(drop),
        Command::Forget { peers } => call(Request::Forget { peers }).map(drop),
        Command::Attach { args } => {
            let (cidrs, target) = cidrs_and_target(&args)?;
            let mac = call(Request::Attach {
                target: target.clone(),
                cidrs: cidrs.clone(),
            })
            .with_context(|| format!("attach {} {target}", cidrs.join(" ")))?;
            println!("{mac}");
            Ok(())
        }
        Command::Detach { args } => {
            let (cidrs, target) = cidrs_and_target(&args)?;
            call(Request::Detach {
                target: target.clone(),
                cidrs,
            })
            .with_context(|| format!("detach {target}"))
            .map(drop)
        }
        Command::Expose { cidrs } => {
            cidr::parse_all(&cidrs)?;
            call(Request::Expose { cidrs }).context("expose").map(drop)
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
        Command::Stop => launch::stop(),
        Command::Reset => launch::reset(),
    }
}
