//! `weave-rs run [ADDR...] <docker run arguments>`: a container that has
//! its overlay interface before its own process starts. The addresses are
//! those of `attach` (`crate::core::ipam::spec`), none meaning one from
//! the default subnet.
//!
//! The container's entrypoint is replaced by weave-rs's waiter (a static
//! binary, bind-mounted read-only at /.weave-rs). Once the container runs,
//! its original command is read from Docker (the image's entrypoint, then
//! the user's command or the image's), the router attaches ethwe, and the
//! command is written to /.weave-rs/argv: the waiter sees ethwe up and the
//! command, and execs it. On a restart the waiter waits again until the
//! router has re-attached ethwe (the router follows Docker's events).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::client;
use crate::api::protocol::{Reply, Request};
use crate::core::ipam::spec;
use crate::daemon::attachments::{remove_run_dir, RUN_DIR, RUN_DIR_LABEL};
use crate::docker;
use crate::files;
use crate::waiter;

/// Where the waiter and the command appear inside the container.
const MOUNT: &str = "/.weave-rs";

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let (specs, docker_args) = spec::split_specs(&args)?;
    let cidrs: Vec<String> = specs.iter().map(ToString::to_string).collect();
    if docker_args.is_empty() {
        bail!("run: missing docker run arguments (at least an image)");
    }
    if docker_args
        .iter()
        .any(|a| a == "--entrypoint" || a.starts_with("--entrypoint="))
    {
        bail!("run: --entrypoint cannot be used with weave-rs run (weave-rs sets the entrypoint to wait for ethwe)");
    }
    let report = client::report()?;
    let dns = dns_flags(&report, docker_args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(docker::ping())?;

    let dir = PathBuf::from(RUN_DIR).join(format!("{:016x}", rand::random::<u64>()));
    make_run_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    let dir_s = dir.display().to_string();
    let result = start(&rt, &dir, &dir_s, &cidrs, &dns, docker_args);
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            remove_run_dir(&dir_s);
            Err(e)
        }
    }
}

/// The router's DNS for the container (`dns-args`), unless the user chose
/// DNS servers, or a network mode where Docker takes none.
fn dns_flags(report: &crate::api::protocol::Report, docker_args: &[String]) -> Vec<String> {
    let own_dns = docker_args.iter().any(|a| {
        a == "--dns"
            || a.starts_with("--dns=")
            || a == "--dns-search"
            || a.starts_with("--dns-search=")
    });
    let shared_net = docker_args.windows(2).any(|w| {
        matches!(w[0].as_str(), "--network" | "--net")
            && (w[1] == "host" || w[1] == "none" || w[1].starts_with("container:"))
    }) || docker_args.iter().any(|a| {
        ["--network=", "--net="].iter().any(|p| {
            a.strip_prefix(p)
                .is_some_and(|m| m == "host" || m == "none" || m.starts_with("container:"))
        })
    });
    if own_dns || shared_net {
        return Vec::new();
    }
    super::dns::args(report).unwrap_or_default()
}

/// Host users see nothing under the run dir (0700 down to it). A container's
/// own dir is 0711: the waiter runs as the container's user, which may not
/// be root, and must reach `wait` and its own `argv` (0600, given to that
/// user) without being able to list anything.
const CONTAINER_DIR_MODE: u32 = 0o711;

fn make_run_dir(dir: &Path) -> std::io::Result<()> {
    files::dir_with_mode(Path::new(files::BASE_DIR), 0o700)?;
    files::dir_with_mode(Path::new(RUN_DIR), 0o700)?;
    files::dir_with_mode(dir, CONTAINER_DIR_MODE)
}

/// Effective uid and gid from a `/proc/PID/status`.
fn effective_ids(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Who must be able to read `argv`: the user the container's waiter (its
/// main process, `pid`) runs as, if not root. Unknown: root (the file
/// stays root's, and a non-root waiter reports it cannot read it).
fn waiter_owner(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    effective_ids(&status).filter(|(uid, _)| *uid != 0)
}

/// Start the container, attach it, release the waiter; the docker run exit code.
fn start(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    dir_s: &str,
    cidrs: &[String],
    dns: &[String],
    docker_args: &[String],
) -> anyhow::Result<i32> {
    waiter::install(dir).context("install the waiter")?;
    let mut child = Command::new("docker")
        .arg("run")
        .args(["--entrypoint", &format!("{MOUNT}/wait")])
        .args(["-v", &format!("{dir_s}:{MOUNT}:ro")])
        .args(["--label", &format!("{RUN_DIR_LABEL}={dir_s}")])
        .args(dns)
        .args(docker_args)
        .stdin(Stdio::inherit())
        .spawn()
        .context("start `docker run` (is the docker CLI installed?)")?;
    // Find the container docker run made.
    let container = loop {
        if let Some(c) = rt.block_on(docker::find_by_label(RUN_DIR_LABEL, dir_s))? {
            break c;
        }
        if let Some(status) = child.try_wait()? {
            // docker run failed before the container ran (it said why).
            return Ok(status.code().unwrap_or(125));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let attached = (|| -> anyhow::Result<()> {
        let argv = rt.block_on(docker::original_command(&container.id))?;
        if argv.is_empty() {
            bail!("container {} has no command to run", container.name);
        }
        match client::call(&Request::Attach {
            target: container.id.clone(),
            cidrs: cidrs.to_vec(),
        })? {
            Reply::Ok { .. } => {}
            Reply::Error { error } => bail!(error),
        }
        waiter::write_argv(dir, &argv, waiter_owner(container.pid))?;
        Ok(())
    })();
    if let Err(e) = attached {
        let _ = Command::new("docker")
            .args(["rm", "-f", &container.id])
            .stdout(Stdio::null())
            .status();
        let _ = child.wait();
        return Err(e.context(format!("run: attach container {}", container.name)));
    }
    let status = child.wait()?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_ids() {
        let status = "Name:\tsh\nUid:\t1000\t1001\t1001\t1001\nGid:\t50\t51\t51\t51\n";
        assert_eq!(effective_ids(status), Some((1001, 51)));
        assert_eq!(effective_ids("Uid:\t1\n"), None);
        assert_eq!(effective_ids("Uid:\tx y\nGid:\t1 2\n"), None);
        // This process: root's files stay root's.
        let me = nix::unistd::geteuid().as_raw();
        let want = (me != 0).then(|| (me, nix::unistd::getegid().as_raw()));
        assert_eq!(waiter_owner(std::process::id()), want);
    }
}
