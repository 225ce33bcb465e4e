//! The Docker Engine API side: finding a container's network namespace by
//! its name or ID (over /var/run/docker.sock, with bollard).

use bollard::query_parameters::InspectContainerOptions;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine ({0}); is dockerd running?")]
    Unreachable(String),
    #[error("{0}: no such container")]
    NoSuchContainer(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("Docker engine: {0}")]
    Api(String),
}

/// A running container, as attach needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The PID of its main process: its network namespace is /proc/PID/ns/net.
    pub pid: u32,
}

/// Could `s` name a container (a name or an ID prefix)? Docker names are
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, optionally written with a leading `/`.
pub fn looks_like_container(s: &str) -> bool {
    let s = s.strip_prefix('/').unwrap_or(s);
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.len() <= 128
}

async fn connect() -> Result<bollard::Docker, DockerError> {
    let d = bollard::Docker::connect_with_unix_defaults()
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
    d.negotiate_version()
        .await
        .map_err(|e| DockerError::Unreachable(e.to_string()))
}

/// Look a running container up by name or ID.
pub async fn container(name_or_id: &str) -> Result<Container, DockerError> {
    let docker = connect().await?;
    let info = docker
        .inspect_container(name_or_id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NoSuchContainer(name_or_id.to_string()),
            e => DockerError::Api(e.to_string()),
        })?;
    let state = info.state.unwrap_or_default();
    let pid = state
        .pid
        .filter(|p| *p > 0)
        .and_then(|p| u32::try_from(p).ok());
    match (state.running, pid) {
        (Some(true), Some(pid)) => Ok(Container {
            id: info.id.unwrap_or_default(),
            name: info
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            pid,
        }),
        _ => Err(DockerError::NotRunning(name_or_id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        for ok in ["redis", "/redis", "my_app.1-2", "3f2a9c"] {
            assert!(looks_like_container(ok), "{ok}");
        }
        for bad in ["", "-x", "a/b", "pid:1", "a b", "10.2.1.1/24"] {
            assert!(!looks_like_container(bad), "{bad}");
        }
    }
}
