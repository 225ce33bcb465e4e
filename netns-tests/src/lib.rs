//! Test bed for weave-rs: real routers in real network namespaces.
//!
//! A [`Lab`] owns a unique name prefix (`wrt<pid>x<counter>`), so tests can
//! run in parallel, and everything it makes is removed when the guards drop,
//! including when the test panics:
//!
//! * [`Host`]: a network namespace standing for a machine; the weave-rs
//!   router runs in it ([`Host::launch`], [`Host::weave`],
//!   [`Host::status_json`]).
//! * [`Container`]: a network namespace that a router attaches
//!   (`weave-rs attach CIDR /var/run/netns/<name>`).
//! * the underlay: a "switch" namespace with a bridge and one veth per host
//!   ([`Lab::switched_hosts`], hosts on 10.77.0.0/24), or point-to-point
//!   links ([`Lab::link`], [`Lab::chain`]) with forwarding off.
//!
//! * [`Flood`]: many TCP connections from one namespace, idle, trickling
//!   or fake peers, reopened as the router closes them; [`RssWatch`] and
//!   [`rss_kib`] read a router's resident memory.
//! * [`dig`] runs dig in a namespace and parses the reply ([`DigResult`]);
//!   [`DnsmasqUpstream`] is a dnsmasq serving fixed names in one.
//! * [`DockerEngine`]: a second dockerd in one host's namespace (its own
//!   data, socket and images; `DOCKER_HOST` set on the host), so that two
//!   hosts can each run a container with the same Docker name;
//!   [`DockerEngine::start_with_plugin`] also has the host's router serve
//!   the weave-rs Docker plugin in that engine's plugin directory.
//! * [`Podman`]: a podman with its own storage and CNI configuration
//!   (`network_backend = "cni"`, the test's plugin directory before
//!   /usr/lib/cni) run in one host's namespace, with a busybox image
//!   ([`BUSYBOX_IMAGE`]); the runtime side of the weave-rs CNI plugin.
//! * [`Capture`]: `tcpdump -w` on an underlay interface, read back as a
//!   [`Pcap`] (UDP/TCP payloads over IPv4); [`tcp_transfer`] and
//!   [`udp_send`] make known traffic from Rust inside a namespace.
//!
//! Only namespaces the test made receive traffic. Every command run through
//! the harness has a timeout, and a failing one panics with its stderr.

pub mod cmd;
pub mod cni_driver;
pub mod container;
pub mod dns;
pub mod docker_engine;
pub mod flood;
pub mod host;
pub mod lab;
pub mod memory;
pub mod netns;
pub mod pcap;
pub mod podman;
pub mod report;
pub mod tools;
pub mod traffic;
pub mod wire;

pub use cmd::{run, sh, Output};
pub use container::Container;
pub use dns::{dig, try_dig, DigError, DigResult, DnsmasqUpstream};
pub use docker_engine::DockerEngine;
pub use flood::{Behaviour, Flood, FloodSpec, FloodStats};
pub use host::{weave_bin, Host, NO_ARGS};
pub use lab::{
    connected_containers, launch_mesh, require_images, wait_full_mesh, DockerContainers, Lab,
};
pub use memory::{rss_kib, RssWatch};
pub use netns::{in_netns, spawn_in_netns, AsNetns, Netns};
pub use pcap::{Capture, Pcap, Segment};
pub use podman::{Podman, BUSYBOX_IMAGE};
pub use report::{Conn, Report};
pub use std::time::Duration;
pub use tools::{
    assert_pings, icmp_echo_reply_sniffer, iperf3_client, ping, ping_count, require_tool, secs,
    try_wait_until, wait_ping, wait_until, Iperf3Server, IperfResult,
};
pub use traffic::{
    eth_send, mac_of, random_local_mac, raw_udp_send, repeated, tcp_transfer, udp_send,
    IptablesRule,
};
