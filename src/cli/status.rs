//! `status`: the router's report as text for people.
//!
//! Every string of the report goes through [`clean`] or [`clean_long`]
//! before it is printed: nicknames, errors and close or refusal reasons
//! come from peers (and a report from anything on the control socket), so
//! they may carry terminal escapes or megabytes.

use std::fmt::Write;

use crate::api::client;
use crate::api::protocol::Report;
use crate::core::text::sanitize;

/// Longest name-like field shown (nicknames are at most 64 bytes anyway).
const MAX_NAME_CHARS: usize = 64;
/// Longest error, reason or target (a DNS name may have 253 bytes) shown.
const MAX_LONG_CHARS: usize = 300;

/// A name, address or other short field, safe to print.
pub(super) fn clean(s: &str) -> String {
    sanitize(s, MAX_NAME_CHARS)
}

/// A list of short fields, each safe to print, joined by spaces.
fn clean_each(v: &[String]) -> String {
    v.iter().map(|a| clean(a)).collect::<Vec<_>>().join(" ")
}

/// An error, a reason or a target, safe to print.
pub(super) fn clean_long(s: &str) -> String {
    sanitize(s, MAX_LONG_CHARS)
}

pub fn status(what: Option<&str>) -> anyhow::Result<()> {
    let r = client::report()?;
    let text = match what {
        None => summary(&r),
        Some("peers") => peers(&r),
        Some("connections") => connections(&r),
        Some("targets") => r
            .targets
            .iter()
            .map(|t| format!("{}\n", clean_long(t)))
            .collect(),
        Some("ipam") => ipam(&r),
        Some("dns") => super::dns::status(&r),
        Some(other) => {
            anyhow::bail!("status {other}: unknown (peers, connections, targets, ipam, dns)")
        }
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
        format!(
            "weave-rs {} (protocol {})",
            clean(&r.version),
            clean(&r.protocol)
        ),
    );
    row(
        &mut s,
        "Name",
        format!("{}({})", r.router.name, clean(&r.router.nickname)),
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
    if r.router.encryption {
        row(&mut s, "MeshName", clean(&r.router.mesh_name));
    }
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
    if !r.router.fast_path.is_empty() {
        let fast = r.connections.iter().filter(|c| c.fast_path).count();
        row(
            &mut s,
            "FastPath",
            format!(
                "{} ({fast} connections on it)",
                clean_long(&r.router.fast_path)
            ),
        );
    }
    row(&mut s, "Bridge", clean(&r.router.bridge));
    row(&mut s, "Attached", r.attached.len().to_string());
    row(
        &mut s,
        "DNS",
        match &r.dns {
            None => "off".into(),
            Some(d) => {
                let names = d.records.iter().filter(|x| x.answered).count();
                let state = match &d.error {
                    Some(e) => format!("NOT ANSWERING: {}", clean_long(e)),
                    None => format!("{names} names"),
                };
                format!("{} on {}:53, {state}", clean(&d.domain), clean(&d.address))
            }
        },
    );
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
            (Some(p), Some(n)) => format!("{p}({})", clean(n)),
            (Some(p), None) => p.to_string(),
            _ => String::new(),
        };
        let protection = match c.encryption.as_str() {
            "full" => "encrypted",
            "control-only" => "encrypted control, plain data (trusted)",
            "none" => "unencrypted",
            _ => "",
        };
        let mut info = match (c.last_error.as_deref().map(clean_long), protection) {
            (Some(e), "") => e,
            (Some(e), p) => format!("{p}; {e}"),
            (None, p) => p.to_string(),
        };
        if let Some(why) = &c.ipam_refused {
            info = format!("{info}; IPAM refused: {}", clean_long(why));
        }
        if let Some(path) = &c.data_path {
            info = if info.is_empty() {
                clean_long(path)
            } else {
                format!("{info}; {}", clean_long(path))
            };
        }
        let _ = writeln!(
            s,
            "{dir} {:<24} {:<12} {:<28} {info}",
            clean_long(&c.addr),
            clean(&c.state),
            who
        );
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
            clean(&f.addr),
            "refused",
            "",
            clean_long(&f.reason),
            f.secs_ago
        );
    }
    s
}

pub fn peers(r: &Report) -> String {
    let mut s = String::new();
    for p in &r.peers {
        let _ = match &p.data_path {
            Some(path) => writeln!(
                s,
                "{}({}) data: {}",
                p.name,
                clean(&p.nickname),
                clean_long(path)
            ),
            None => writeln!(s, "{}({})", p.name, clean(&p.nickname)),
        };
        for c in &p.connections {
            let dir = if c.outbound { "->" } else { "<-" };
            let nick = r
                .peers
                .iter()
                .find(|q| q.name == c.peer)
                .map(|q| clean(&q.nickname))
                .unwrap_or_default();
            let state = if c.established {
                "established"
            } else {
                "pending"
            };
            let _ = writeln!(
                s,
                "   {dir} {:<24} {}({nick}) {state}",
                clean(&c.addr),
                c.peer
            );
        }
    }
    s
}

/// `status ipam`: the range, each owner's share, and what waits.
pub fn ipam(r: &Report) -> String {
    let Some(i) = &r.ipam else {
        return "this router reports no IPAM state\n".to_string();
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Range: {} (default subnet {})",
        clean(&i.range),
        clean(&i.default_subnet)
    );
    let ring = if i.ready {
        format!("ready (cluster {})", clean(&i.cluster))
    } else {
        "not yet made".to_string()
    };
    let _ = writeln!(s, "Init: {}; ring {ring}", clean(&i.init));
    if let Some(c) = &i.consensus {
        let waiting = c
            .waiting_secs
            .map(|w| format!(", a request waiting for {w}s"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "Consensus: heard from {} of {} peers{waiting}",
            c.heard.len(),
            c.quorum
        );
    }
    let total: u64 = i
        .owners
        .iter()
        .map(|o| o.addresses)
        .fold(0, u64::saturating_add);
    if !i.owners.is_empty() {
        let _ = writeln!(s, "Owners:");
    }
    let mut lost = Vec::new();
    for o in &i.owners {
        let share = if total > 0 {
            o.addresses as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let who = format!("{}({})", o.peer, clean(&o.nickname));
        let state = if o.reachable { "" } else { "  UNREACHABLE" };
        let _ = writeln!(
            s,
            "  {who:<32} {:>12} addresses ({share:5.1}%) {:>12} free in {} ranges{state}",
            o.addresses, o.free, o.ranges
        );
        if !o.reachable {
            lost.push((o.peer, o.addresses));
        }
    }
    for (p, n) in lost {
        let _ = writeln!(
            s,
            "  {p} is unreachable and holds {n} addresses: if it is gone for good, run weave-rs rmpeer {p}"
        );
    }
    let _ = writeln!(s, "Allocated here: {}", i.allocations.len());
    for p in &i.pending {
        let _ = writeln!(s, "Waiting: {}", clean_long(p));
    }
    for w in &i.wants {
        let _ = writeln!(s, "Asked by {}: {}", w.peer, clean_long(&w.what));
    }
    if i.quarantined > 0 {
        let _ = writeln!(
            s,
            "Taken over (rmpeer), awaiting every peer's acknowledgement: {} addresses",
            i.quarantined
        );
    }
    for f in &i.refused {
        let _ = writeln!(
            s,
            "Refused IPAM gossip from {}: {}",
            f.peer,
            clean_long(&f.reason)
        );
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
            clean(&r.router.bridge),
            clean_each(&r.exposed)
        );
    }
    for a in &r.attached {
        let _ = writeln!(
            s,
            "{} {} {}",
            clean_long(&a.target),
            clean(&a.mac),
            clean_each(&a.addrs)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report whose peer-supplied fields carry terminal escapes, a fake
    /// line and a huge reason.
    fn hostile() -> Report {
        let huge = "x".repeat(1 << 20);
        let json = serde_json::json!({
            "version": "0.1.0", "protocol": "1..1",
            "router": { "name": "02:00:00:00:00:01", "nickname": "me\u{1b}[2J",
                        "uid": 1, "pid": 1, "port": 6783, "mtu": 1376,
                        "bridge": "weave", "discovery": true, "conn_limit": 200,
                        "encryption": false, "uptime_secs": 1 },
            "connections": [{ "addr": "10.0.0.2:6783", "peer": "02:00:00:00:00:02",
                              "nickname": "evil\u{1b}]0;pwned\u{7}", "outbound": true,
                              "state": "retrying",
                              "last_error": format!("peer closed: \u{9b}31m{huge}"),
                              "encrypted": false }],
            "peers": [{ "name": "02:00:00:00:00:02", "nickname": "evil\nweave-rs: ok",
                        "uid": 2, "version": 1,
                        "connections": [{ "peer": "02:00:00:00:00:01",
                                          "addr": "10.0.0.1:6783", "outbound": false,
                                          "established": true }] }],
            "targets": [],
            "refused": [{ "addr": "10.0.0.3:40000",
                          "reason": "bad hello: \u{1b}[1;31mFAKE\u{202e}", "secs_ago": 3 }],
            "attached": [], "exposed": [], "mac_table_entries": 0, "stats": {},
            "ipam": { "range": "10.32.0.0/12", "default_subnet": "10.32.0.0/12",
                      "init": "consensus (quorum 2)", "ready": false, "cluster": "",
                      "consensus": { "quorum": 2, "heard": ["02:00:00:00:00:01"],
                                     "waiting_secs": 3 },
                      "owners": [{ "peer": "02:00:00:00:00:02", "nickname": "evil\u{1b}[2J",
                                   "reachable": false, "ranges": 1, "addresses": 10,
                                   "free": 5 }],
                      "allocations": [], "pending": [format!("claim \u{9b}{huge}")],
                      "wants": [{ "peer": "02:00:00:00:00:02", "what": "x\ny" }],
                      "quarantined": 0,
                      "refused": [{ "peer": "02:00:00:00:00:03", "reason": huge.clone() }] },
            "dns": { "address": "169.254.53.53", "domain": "weave.local.", "ttl": 1,
                     "upstream": ["10.0.0.53:53\u{1b}[2J"], "error": null,
                     "records": [{ "name": "db.weave.local.", "address": "10.32.0.1",
                                   "origin": "02:00:00:00:00:02",
                                   "nickname": "evil\nweave-rs: ok\u{1b}[2J",
                                   "container": "abc", "answered": false }],
                     "queries": { "udp": 1, "tcp": 0, "local": 1, "forwarded": 0,
                                  "upstream_failed": 0, "dropped_busy": 0,
                                  "dropped_malformed": 0, "truncated": 0 } }
        });
        serde_json::from_value(json).expect("sample report")
    }

    fn assert_printable(what: &str, text: &str) {
        for line in text.lines() {
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{what}: control character in {line:?}"
            );
            assert!(line.chars().count() < 500, "{what}: line not truncated");
        }
    }

    #[test]
    fn peer_supplied_text_is_sanitised() {
        let r = hostile();
        let conns = connections(&r);
        assert_printable("status connections", &conns);
        assert_eq!(conns.lines().count(), 2, "{conns}");
        assert!(conns.contains("evil\u{FFFD}]0;pwned\u{FFFD}"), "{conns}");
        assert!(conns.contains("FAKE\u{FFFD}"), "{conns}");
        assert!(conns.contains('…'), "long reason not cut: {conns}");
        let ipam_text = ipam(&r);
        assert_printable("status ipam", &ipam_text);
        assert!(ipam_text.contains("UNREACHABLE"), "{ipam_text}");
        assert!(
            ipam_text.contains("rmpeer 02:00:00:00:00:02"),
            "{ipam_text}"
        );
        let peers = peers(&r);
        assert_printable("status peers", &peers);
        assert_eq!(
            peers.lines().count(),
            2,
            "a nickname forged a line: {peers}"
        );
        assert_printable("status", &summary(&r));
        let dns = super::super::dns::status(&r);
        assert_printable("status dns", &dns);
        assert_eq!(dns.lines().count(), 4, "a nickname forged a line: {dns}");
        assert!(dns.contains("(peer unreachable)"), "{dns}");
        assert!(summary(&r).contains("weave.local. on 169.254.53.53:53, 0 names"));
    }

    #[test]
    fn each_connection_shows_its_data_path() {
        let mut r = hostile();
        r.router.fast_path = "weave-vxlan, vni 7, udp 6784".into();
        r.connections[0].state = "established".into();
        r.connections[0].last_error = None;
        r.connections[0].encryption = "none".into();
        r.connections[0].fast_path = true;
        r.connections[0].data_path = Some("fast path (mtu 1376) since 3s".into());
        let conns = connections(&r);
        assert!(
            conns
                .lines()
                .next()
                .is_some_and(|l| l.ends_with("unencrypted; fast path (mtu 1376) since 3s")),
            "{conns}"
        );
        let s = summary(&r);
        assert!(
            s.contains("FastPath: weave-vxlan, vni 7, udp 6784 (1 connections on it)"),
            "{s}"
        );
        r.peers[0].data_path = Some("sleeve: reached through a relay via 02:00:00:00:00:09".into());
        let p = peers(&r);
        assert!(
            p.contains("data: sleeve: reached through a relay via 02:00:00:00:00:09"),
            "{p}"
        );
        r.connections[0].data_path = Some("sleeve: \u{1b}[2Jfake".into());
        assert_printable("status connections", &connections(&r));
    }
}
