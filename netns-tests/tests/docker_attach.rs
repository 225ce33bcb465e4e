//! Containers of the real Docker engine attached by name: redis on h1,
//! a client on h2 gets PONG across the overlay; `ps` lists the containers
//! with the MAC their ethwe really has; after `docker rm -f` the listing
//! and the host's links are clean. Needs the engine and the local images
//! (scripts/docker-up.sh, scripts/build-images.sh; scripts/test.sh runs both).

use netns_tests::cmd;
use netns_tests::*;

const REDIS: &str = "weave-rs-test/redis:latest";

/// A detached container removed (`docker rm -f`) when dropped.
struct DockerContainer(String);

impl DockerContainer {
    fn run(name: String, args: &[&str]) -> DockerContainer {
        let mut argv = vec!["docker", "run", "-d", "--name", &name];
        argv.extend_from_slice(args);
        cmd::sh(&argv);
        DockerContainer(name)
    }

    fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["docker", "exec", &self.0];
        full.extend_from_slice(argv);
        cmd::run(&full).stdout
    }
}

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = cmd::run(&["docker", "rm", "-f", &self.0]);
    }
}

fn ethwe_mac(c: &DockerContainer) -> String {
    let pid = cmd::sh(&["docker", "inspect", "-f", "{{.State.Pid}}", &c.0]);
    let out = cmd::sh(&[
        "nsenter",
        "-t",
        pid.trim(),
        "-n",
        "ip",
        "-br",
        "link",
        "show",
        "ethwe",
    ]);
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn docker_containers_by_name() {
    require_images(&[REDIS]);
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    launch_mesh(&hosts);

    let server = DockerContainer::run(format!("{}-redis", lab.prefix()), &[REDIS]);
    let client = DockerContainer::run(
        format!("{}-cli", lab.prefix()),
        &[REDIS, "redis-server", "--port", "7000"],
    );
    h1.weave_ok(&["attach", "10.2.1.1/24", &server.0]);
    h2.weave_ok(&["attach", "10.2.1.2/24", &client.0]);

    wait_until(secs(20), "redis-cli on h2 gets PONG from h1", || {
        client
            .exec(&["redis-cli", "-h", "10.2.1.1", "ping"])
            .contains("PONG")
    });

    let listing = h1.weave_ok(&["ps"]);
    let want = format!("{} {} 10.2.1.1/24", server.0, ethwe_mac(&server));
    assert_eq!(listing.trim(), want, "ps on h1");

    drop(server);
    // The kernel destroys a dead namespace (and so the veth pair) in a
    // work queue: under a loaded machine's parallel tests it took over 10 s.
    wait_until(
        secs(30),
        "the removed container's host veth is gone",
        || !h1.ns().links().iter().any(|l| l.starts_with("vethwr")),
    );
    assert_eq!(
        h1.weave_ok(&["ps"]).trim(),
        "",
        "ps still lists a removed container"
    );
}
