//! `status`: the router's report as text for people.

use std::fmt::Write;

use crate::api::client;
use crate::api::protocol::Report;

pub fn status(what: Option<&str>) -> anyhow::Result<()> {
    let r = client::report()?;
    let text = match what {
        None => summary(&r),
        Some("peers") => peers(&r),
        Some("connections") => connections(&r),
        Some("targets") => r.targets.iter().map(|t| format!("{t}\n")).collect(),
        Some(other) => anyhow::bail!("status {other}: unknown (peers, connections, targets)"),
    };
    print!("{text}");
    Ok(())
}

pub fn summary(r: &Report) -> String {
    let established = r
        .connections
        .iter()
        .filter(|c| c.state == "established")
        .count();
    let symmetric: usize = r
        .peers
        .iter()
        .map(|p| p.connections.iter().filter(|c| c.established).count())
        .sum::<usize>()
        / 2;
    let mut s = String::new();
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "{k:>16}: {v}");
    };
    row(
        &mut s,
        "Version",
        format!("weave-rs {} (protocol {})", r.version, r.protocol),
    );
    row(
        &mut s,
        "Name",
        format!("{}({})", r.router.name, r.router.nickname),
    );
    row(&mut s, "Port", r.router.port.to_string());
    row(
        &mut s,
        "Encryption",
        if r.router.encryption {
            let plain = r
                .connections
                .iter()
                .filter(|c| c.encryption == "control-only")
                .count();
            if plain > 0 {
                format!("enabled ({plain} trusted connections with plain data)")
            } else {
                "enabled".into()
            }
        } else {
            "disabled".into()
        },
    );
    row(
        &mut s,
        "PeerDiscovery",
        if r.router.discovery {
            "enabled"
        } else {
            "disabled"
        }
        .into(),
    );
    row(&mut s, "Targets", r.targets.len().to_string());
    row(
        &mut s,
        "Connections",
        format!(
            "{} ({} established, {} other)",
            r.connections.len(),
            established,
            r.connections.len() - established
        ),
    );
    row(
        &mut s,
        "Peers",
        format!(
            "{} (with {} established connections)",
            r.peers.len(),
            symmetric
        ),
    );
    row(&mut s, "MTU", r.router.mtu.to_string());
    row(&mut s, "Bridge", r.router.bridge.clone());
    row(&mut s, "Attached", r.attached.len().to_string());
    if !r.refused.is_empty() {
        row(
            &mut s,
            "Refused",
            format!(
                "{} recent inbound (see `status connections`)",
                r.refused.len()
            ),
        );
    }
    s
}

pub fn connections(r: &Report) -> String {
    let mut s = String::new();
    for c in &r.connections {
        let dir = if c.outbound { "->" } else { "<-" };
        let who = match (&c.peer, &c.nickname) {
            (Some(p), Some(n)) => format!("{p}({n})"),
            (Some(p), None) => p.to_string(),
            _ => String::new(),
        };
        let protection = match c.encryption.as_str() {
            "full" => "encrypted",
            "control-only" => "encrypted control, plain data (trusted)",
            "none" => "unencrypted",
            _ => "",
        };
        let info = match (c.last_error.as_deref(), protection) {
            (Some(e), "") => e.to_string(),
            (Some(e), p) => format!("{p}; {e}"),
            (None, p) => p.to_string(),
        };
        let _ = writeln!(s, "{dir} {:<24} {:<12} {:<28} {info}", c.addr, c.state, who);
    }
    for f in &r.refused {
        let times = if f.count > 1 {
            format!("{} times, last ", f.count)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "<- {:<24} {:<12} {:<28} {} ({times}{}s ago)",
            f.addr, "refused", "", f.reason, f.secs_ago
        );
    }
    s
}

pub fn peers(r: &Report) -> String {
    let mut s = String::new();
    for p in &r.peers {
        let _ = writeln!(s, "{}({})", p.name, p.nickname);
        for c in &p.connections {
            let dir = if c.outbound { "->" } else { "<-" };
            let nick = r
                .peers
                .iter()
                .find(|q| q.name == c.peer)
                .map(|q| q.nickname.as_str())
                .unwrap_or("");
            let state = if c.established {
                "established"
            } else {
                "pending"
            };
            let _ = writeln!(s, "   {dir} {:<24} {}({nick}) {state}", c.addr, c.peer);
        }
    }
    s
}

/// `ps`: one line per attached target, then the host's own (exposed) addresses.
pub fn ps(r: &Report) -> String {
    let mut s = String::new();
    if !r.exposed.is_empty() {
        let _ = writeln!(
            s,
            "weave:expose {} {}",
            r.router.bridge,
            r.exposed.join(" ")
        );
    }
    for a in &r.attached {
        let _ = writeln!(s, "{} {} {}", a.target, a.mac, a.addrs.join(" "));
    }
    s
}
