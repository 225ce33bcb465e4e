//! Calling the IPAM plugin a config names instead of weave-rs IPAM, as
//! the spec has a plugin call another: found in `CNI_PATH`, given the same
//! variables and config, its result or error read back.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rscni_types::types::{CNIResult, ErrorResult};

use crate::core::cni::Error;

/// Runs IPAM plugin `kind` for this invocation's command; its result for
/// an ADD (None for other commands).
pub fn call(
    kind: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<CNIResult>, Error> {
    let cmd = env("CNI_COMMAND").unwrap_or_default();
    call_as(kind, &cmd, env, stdin)
}

/// As `call`, with `command` in place of the invocation's.
pub fn call_as(
    kind: &str,
    command: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<CNIResult>, Error> {
    let bin = find(kind, &env("CNI_PATH").unwrap_or_default())?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::IOFailure(format!("running IPAM plugin {}: {e}", bin.display())))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::IOFailure(format!("IPAM plugin {kind}: {e}")))?;
    if !out.status.success() {
        return Err(match serde_json::from_slice::<ErrorResult>(&out.stdout) {
            Ok(e) => Error::from(e),
            Err(_) => Error::Custom(
                103,
                format!("IPAM plugin {kind} failed"),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ),
        });
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice::<CNIResult>(&out.stdout)
        .map(Some)
        .map_err(|e| Error::FailedToDecode(format!("IPAM plugin {kind}'s result: {e}")))
}

/// `kind` in one of `path`'s directories.
fn find(kind: &str, path: &str) -> Result<PathBuf, Error> {
    if kind.contains('/') || kind.is_empty() {
        return Err(Error::InvalidNetworkConfig(format!(
            "IPAM type {kind:?} is not a plugin name"
        )));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::InvalidNetworkConfig(format!(
                "IPAM plugin {kind} not found in CNI_PATH ({path:?})"
            ))
        })
}
