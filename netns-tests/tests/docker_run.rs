//! `weave-rs run` with the real Docker engine (issue 3): the seed scenario
//! (redis on h1, `redis-cli ping` from h2 gets PONG), ethwe present at the
//! container's first instruction, exit codes passed through, `docker
//! restart` and a router restart both bring the container back on its
//! overlay address by themselves, and the errors a user meets are clear.
//! Needs the engine and the local images (scripts/test.sh sets them up).

use std::time::Instant;

use netns_tests::cmd;
use netns_tests::*;

const REDIS: &str = "weave-rs-test/redis:latest";
const BUSYBOX: &str = "weave-rs-test/busybox:latest";

/// `weave-rs run CIDR --label ... ARGS` on `h`.
fn run(h: &Host, c: &DockerContainers, cidr: &str, args: &[&str]) -> Output {
    let label = c.label();
    let mut argv = vec!["run", cidr, "--label", &label];
    argv.extend_from_slice(args);
    h.weave(&argv)
}

fn redis_ping(client: &str, server_ip: &str) -> bool {
    // redis-cli 7.0 has no connect timeout: bound the whole command.
    let mut c = std::process::Command::new("docker");
    c.args(["exec", client, "redis-cli", "-h", server_ip, "ping"]);
    cmd::run_cmd(c, secs(3)).stdout.contains("PONG")
}

#[test]
fn docker_run() {
    require_images(&[REDIS, BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    launch_mesh(&hosts);

    lab.step("seed scenario: redis on h1, redis-cli on h2");
    let server = format!("{}-redis", lab.prefix());
    let out = run(
        h1,
        &containers,
        "10.2.1.1/24",
        &["-d", "--name", &server, REDIS],
    )
    .ok();
    let id = out.stdout.trim();
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "run -d should print the container ID, got {:?}",
        out.stdout
    );
    let out = run(
        h2,
        &containers,
        "10.2.1.2/24",
        &["--rm", REDIS, "redis-cli", "-h", "10.2.1.1", "ping"],
    )
    .ok();
    assert!(
        out.stdout.contains("PONG"),
        "no PONG from redis on h1:\n{out}"
    );

    lab.step("ethwe is there at the container's first instruction");
    let out = run(
        h2,
        &containers,
        "10.2.1.3/24",
        &["--rm", BUSYBOX, "ip", "-o", "addr", "show", "ethwe"],
    )
    .ok();
    assert!(
        out.stdout.contains("10.2.1.3/24"),
        "first instruction did not see ethwe:\n{out}"
    );

    lab.step("exit codes pass through");
    let out = run(
        h2,
        &containers,
        "10.2.1.4/24",
        &["--rm", BUSYBOX, "sh", "-c", "exit 3"],
    );
    assert_eq!(out.code(), Some(3), "exit code not passed through:\n{out}");

    lab.step("docker restart: back on the same address within 10 s");
    let client = format!("{}-cli", lab.prefix());
    run(
        h2,
        &containers,
        "10.2.1.5/24",
        &[
            "-d",
            "--name",
            &client,
            REDIS,
            "redis-server",
            "--port",
            "7000",
        ],
    )
    .ok();
    wait_until(secs(10), "client reaches redis", || {
        redis_ping(&client, "10.2.1.1")
    });
    cmd::sh(&["docker", "restart", "-t", "1", &server]);
    let t = Instant::now();
    wait_until(
        secs(10),
        "redis reachable again after docker restart",
        || redis_ping(&client, "10.2.1.1"),
    );
    eprintln!("back {:?} after docker restart", t.elapsed());

    lab.step("router stopped and launched again while containers run");
    h1.weave_ok(&["stop"]);
    assert!(
        !redis_ping(&client, "10.2.1.1"),
        "reached redis with h1's router stopped"
    );
    h1.relaunch();
    let t = Instant::now();
    wait_until(
        secs(15),
        "redis reachable again after the router restart",
        || redis_ping(&client, "10.2.1.1"),
    );
    eprintln!("back {:?} after the router relaunch", t.elapsed());
    let ps = h1.weave_ok(&["ps"]);
    assert!(
        ps.contains(&server) && ps.contains("10.2.1.1/24"),
        "ps after router restart:\n{ps}"
    );

    lab.step("docker rm -f: listing and links clean");
    cmd::sh(&["docker", "rm", "-f", &server]);
    wait_until(secs(10), "h1 has no container veth left", || {
        !h1.ns().links().iter().any(|l| l.starts_with("vethwr"))
    });
    assert_eq!(
        h1.weave_ok(&["ps"]).trim(),
        "",
        "ps lists a removed container"
    );
}

#[test]
fn docker_run_errors() {
    require_images(&[REDIS, BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let h1 = lab.switched_host("h1");

    // No router.
    let out = run(&h1, &containers, "10.2.1.1/24", &["--rm", BUSYBOX, "true"]).err();
    assert!(
        out.stderr.contains("router"),
        "should say no router runs:\n{out}"
    );

    h1.launch(NO_ARGS);
    // Unknown image: docker's own error, a non-zero exit, nothing left behind.
    let out = run(
        &h1,
        &containers,
        "10.2.1.1/24",
        &["--rm", "weave-rs-test/no-such-image:latest"],
    )
    .err();
    assert!(
        out.stderr.contains("no-such-image"),
        "should name the image:\n{out}"
    );

    // No Docker engine where the client looks for one.
    let bin = weave_bin().display().to_string();
    let out = cmd::run(&[
        "ip",
        "netns",
        "exec",
        h1.ns().name(),
        "env",
        "DOCKER_HOST=unix:///nonexistent/docker.sock",
        &bin,
        "run",
        "10.2.1.1/24",
        "--rm",
        BUSYBOX,
        "true",
    ])
    .err();
    assert!(
        out.stderr.contains("Docker engine"),
        "should say the engine is unreachable:\n{out}"
    );

    // A malformed CIDR is refused before Docker is asked anything.
    let out = h1
        .weave(&["run", "10.2.1.300/24", "--rm", BUSYBOX, "true"])
        .err();
    assert!(
        out.stderr.contains("10.2.1.300/24"),
        "should name the CIDR:\n{out}"
    );

    // Attaching the address the container already has on eth0.
    let name = format!("{}-bb", lab.prefix());
    let label = containers.label();
    cmd::sh(&[
        "docker", "run", "-d", "--label", &label, "--name", &name, BUSYBOX, "sleep", "300",
    ]);
    let eth0 = cmd::sh(&[
        "docker",
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}",
        &name,
    ]);
    let out = h1
        .weave(&["attach", &format!("{}/16", eth0.trim()), &name])
        .err();
    assert!(
        out.stderr.contains("already on eth0") || out.stderr.contains("overlaps"),
        "should name the clash with eth0:\n{out}"
    );
}

#[test]
fn docker_run_interactive() {
    require_images(&[REDIS, BUSYBOX]);
    let lab = Lab::new();
    let containers = DockerContainers(lab.prefix().to_string());
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    // `script` gives the run a terminal, as a user's shell would; what the
    // "user" types goes in on stdin.
    let label = containers.label();
    let line = format!(
        "{} run 10.2.1.6/24 -it --rm --label {label} {BUSYBOX} sh",
        weave_bin().display()
    );
    let mut c = std::process::Command::new("sh");
    c.args([
        "-c",
        &format!(
            "echo 'ip -o addr show ethwe; exit 4' | ip netns exec {} script -qec '{line}' /dev/null",
            h1.ns().name()
        ),
    ]);
    let out = cmd::run_cmd(c, secs(30));
    assert!(
        out.stdout.contains("inet 10.2.1.6/24"),
        "the interactive shell did not see ethwe:\n{out}"
    );
    assert_eq!(
        out.code(),
        Some(4),
        "the interactive run's exit code was not passed through:\n{out}"
    );
}
