//! The Docker Engine API side: finding a container's network namespace by
//! its name or ID (over /var/run/docker.sock, with bollard).

use std::collections::HashMap;

use bollard::query_parameters::{EventsOptions, InspectContainerOptions};
use futures::{Stream, StreamExt};

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
    /// Its hostname, with its domain name if it has one.
    pub hostname: Option<String>,
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

/// A full container ID (64 hex digits), as the registry keys containers.
pub fn looks_like_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
    let hostname = info.config.as_ref().and_then(|c| {
        let host = c.hostname.clone().filter(|h| !h.is_empty())?;
        Some(match c.domainname.as_deref() {
            Some(d) if !d.is_empty() => format!("{host}.{d}"),
            _ => host,
        })
    });
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
            hostname,
        }),
        _ => Err(DockerError::NotRunning(name_or_id.to_string())),
    }
}

/// Container events the router acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start(String),
    /// It stopped (it may start again).
    Die(String),
    Destroy {
        id: String,
        run_dir: Option<String>,
    },
    /// A container joined a network of the `weave-rs` driver.
    Connected {
        container: String,
    },
}

/// A stream of container start, die and destroy events.
pub async fn events() -> Result<impl Stream<Item = Result<Event, DockerError>> + Unpin, DockerError>
{
    let docker = connect().await?;
    let filters = HashMap::from([
        (
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        ),
        (
            "event".to_string(),
            vec![
                "start".to_string(),
                "die".to_string(),
                "destroy".to_string(),
                "connect".to_string(),
            ],
        ),
    ]);
    let opts = EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let stream = docker.events(Some(opts)).filter_map(|m| async move {
        match m {
            Err(e) => Some(Err(DockerError::Api(e.to_string()))),
            Ok(m) => {
                let actor = m.actor?;
                if m.typ == Some(bollard::models::EventMessageTypeEnum::NETWORK) {
                    let attrs = actor.attributes?;
                    let ours = attrs.get("type").map(String::as_str)
                        == Some(crate::core::docker_plugin::DRIVER);
                    return match (m.action.as_deref(), attrs.get("container")) {
                        (Some("connect"), Some(c)) if ours => Some(Ok(Event::Connected {
                            container: c.clone(),
                        })),
                        _ => None,
                    };
                }
                let id = actor.id?;
                match m.action.as_deref() {
                    Some("start") => Some(Ok(Event::Start(id))),
                    Some("die") => Some(Ok(Event::Die(id))),
                    Some("destroy") => {
                        let run_dir = actor.attributes.and_then(|a| {
                            a.get(crate::daemon::attachments::RUN_DIR_LABEL).cloned()
                        });
                        Some(Ok(Event::Destroy { id, run_dir }))
                    }
                    _ => None,
                }
            }
        }
    });
    Ok(Box::pin(stream))
}

/// A container's names and its addresses on networks, as the Docker
/// plugin's DNS registration needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub id: String,
    pub name: String,
    pub hostname: Option<String>,
    /// Per network: (endpoint ID, address, aliases).
    pub networks: Vec<(String, std::net::IpAddr, Vec<String>)>,
}

pub async fn endpoints(id: &str) -> Result<Endpoints, DockerError> {
    let docker = connect().await?;
    let info = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| DockerError::Api(e.to_string()))?;
    let hostname = info.config.as_ref().and_then(|c| c.hostname.clone());
    let networks = info
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_values()
        .filter_map(|n| {
            let addr = n.ip_address?.parse().ok()?;
            Some((n.endpoint_id?, addr, n.aliases.unwrap_or_default()))
        })
        .collect();
    Ok(Endpoints {
        id: info.id.unwrap_or_default(),
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        hostname,
        networks,
    })
}

/// The command a container runs: its image's entrypoint, then its own
/// command if it has one, else the image's. (Used when weave-rs replaced
/// the entrypoint with its waiter, which clears the image's command.)
pub async fn original_command(container_id: &str) -> Result<Vec<String>, DockerError> {
    let docker = connect().await?;
    let c = docker
        .inspect_container(container_id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| DockerError::Api(e.to_string()))?;
    let config = c.config.unwrap_or_default();
    let image = config.image.unwrap_or_default();
    let img = docker
        .inspect_image(&image)
        .await
        .map_err(|e| DockerError::Api(format!("image {image}: {e}")))?;
    let img_config = img.config.unwrap_or_default();
    let mut argv = img_config.entrypoint.unwrap_or_default();
    match config.cmd.filter(|c| !c.is_empty()) {
        Some(cmd) => argv.extend(cmd),
        None => argv.extend(img_config.cmd.unwrap_or_default()),
    }
    Ok(argv)
}

/// Every container the engine has, running or not.
async fn all_containers(
    docker: &bollard::Docker,
) -> Result<Vec<bollard::models::ContainerSummary>, DockerError> {
    let opts = bollard::query_parameters::ListContainersOptions {
        all: true,
        ..Default::default()
    };
    docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| DockerError::Api(e.to_string()))
}

/// Containers with restart policy `always` that the engine could not
/// start because a network's plugin was missing (it never retries them),
/// on one of `networks` (network IDs).
pub async fn stranded(networks: &[String]) -> Result<Vec<String>, DockerError> {
    let docker = connect().await?;
    let list = all_containers(&docker).await?;
    let mut out = Vec::new();
    for c in list {
        let on_ours = c
            .network_settings
            .and_then(|n| n.networks)
            .is_some_and(|n| {
                n.values().any(|e| {
                    e.network_id
                        .as_ref()
                        .is_some_and(|id| networks.contains(id))
                })
            });
        let Some(id) = c.id else { continue };
        if !on_ours || c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
            continue;
        }
        let Ok(info) = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        else {
            continue;
        };
        let always = info
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|r| r.name)
            == Some(bollard::models::RestartPolicyNameEnum::ALWAYS);
        let plugin_missing = info
            .state
            .and_then(|s| s.error)
            .is_some_and(|e| e.contains("plugin") || e.contains("weave-rs"));
        if always && plugin_missing {
            out.push(id);
        }
    }
    Ok(out)
}

pub async fn start(id: &str) -> Result<(), DockerError> {
    let docker = connect().await?;
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|e| DockerError::Api(e.to_string()))
}

/// Makes network `name` with `driver` (as network and IPAM driver) unless
/// the engine has one of that name; whether it made it.
pub async fn ensure_network(name: &str, driver: &str) -> Result<bool, DockerError> {
    let docker = connect().await?;
    match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(_) => return Ok(false),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(DockerError::Api(e.to_string())),
    }
    let req = bollard::models::NetworkCreateRequest {
        name: name.to_string(),
        driver: Some(driver.to_string()),
        ipam: Some(bollard::models::Ipam {
            driver: Some(driver.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_network(req)
        .await
        .map_err(|e| DockerError::Api(e.to_string()))?;
    Ok(true)
}

/// Every endpoint ID the engine has, of every container, running or not.
pub async fn endpoint_ids() -> Result<Vec<String>, DockerError> {
    let docker = connect().await?;
    let list = all_containers(&docker).await?;
    Ok(list
        .into_iter()
        .filter_map(|c| c.network_settings?.networks)
        .flat_map(|n| n.into_values().filter_map(|e| e.endpoint_id))
        .filter(|id| !id.is_empty())
        .collect())
}

/// The IDs of the running containers.
pub async fn running() -> Result<Vec<String>, DockerError> {
    let docker = connect().await?;
    let list = docker
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .map_err(|e| DockerError::Api(e.to_string()))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// The running container carrying `label=value`, if any.
pub async fn find_by_label(label: &str, value: &str) -> Result<Option<Container>, DockerError> {
    let docker = connect().await?;
    let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
    let opts = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| DockerError::Api(e.to_string()))?;
    match list.into_iter().next().and_then(|c| c.id) {
        Some(id) => match container(&id).await {
            Ok(c) => Ok(Some(c)),
            // Listed but not yet inspectable (the engine is still making
            // it), or not running yet: look again.
            Err(DockerError::NotRunning(_) | DockerError::NoSuchContainer(_)) => Ok(None),
            Err(e) => Err(e),
        },
        None => Ok(None),
    }
}

/// Is the engine there?
pub async fn ping() -> Result<(), DockerError> {
    connect().await.map(drop)
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
