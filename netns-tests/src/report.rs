//! Reading `weave-rs report` (JSON). Every assumption about its shape lives
//! in this file, so a change of the report means a change here only.
//!
//! Assumed shape (unknown fields ignored):
//! ```json
//! { "router": { "name": "aa:bb:cc:dd:ee:ff", ... },
//!   "connections": [ { "peer": "aa:..", "addr": "10.77.0.2:6783",
//!                      "state": "established", "outbound": true,
//!                      "last_error": null } ],
//!   "peers": [ { "name": "aa:..", ... } ] }
//! ```
//! `peer` may also be an object with a `name`; `addr` may be `ip:port` or a
//! bare ip.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::host::{host_has_ip, Host};

/// One entry of `connections`.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Peer name of the other end ("" when not known yet).
    pub peer: String,
    /// Remote address as reported.
    pub addr: String,
    pub state: String,
    pub outbound: Option<bool>,
    pub last_error: Option<String>,
    pub raw: Value,
}

impl Conn {
    pub fn is_established(&self) -> bool {
        self.state.eq_ignore_ascii_case("established")
    }

    /// The IP of `addr`, if it parses.
    pub fn ip(&self) -> Option<IpAddr> {
        let a = self.addr.trim();
        if let Ok(sa) = a.parse::<SocketAddr>() {
            return Some(sa.ip());
        }
        if let Ok(ip) = a.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
            return Some(ip);
        }
        // "10.77.0.2:6783 (h2)" or similar
        a.split_whitespace()
            .next()?
            .parse::<SocketAddr>()
            .ok()
            .map(|s| s.ip())
    }

    /// Which carrier takes the data, and why ("fast path (mtu 1376) since
    /// 3s", "sleeve: ..."); "" when not reported.
    pub fn data_path(&self) -> &str {
        self.raw
            .get("data_path")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The kernel's fast path carries this connection's data.
    pub fn on_fast_path(&self) -> bool {
        self.raw
            .get("fast_path")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// `encrypted`: data and control both encrypted (None when absent).
    pub fn encrypted(&self) -> Option<bool> {
        self.raw.get("encrypted").and_then(Value::as_bool)
    }

    /// `encryption`: "none", "full" or "control-only" (None when absent).
    pub fn encryption(&self) -> Option<&str> {
        self.raw.get("encryption").and_then(Value::as_str)
    }

    /// Is this a connection with `host` (by peer name, or by address)?
    pub fn is_with(&self, host: &Host) -> bool {
        if let Some(name) = host.peer_name() {
            if !self.peer.is_empty() && self.peer.to_ascii_lowercase().contains(&name) {
                return true;
            }
        }
        self.ip().is_some_and(|ip| host_has_ip(host, ip))
    }
}

/// A parsed `weave-rs report`.
#[derive(Clone, Debug)]
pub struct Report {
    /// This router's peer name (`router.name`).
    pub name: String,
    pub connections: Vec<Conn>,
    /// `peers`, as given.
    pub peers: Vec<Value>,
    /// The whole document, for anything else.
    pub raw: Value,
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => text(o.get("name")),
        Some(other) => other.to_string(),
    }
}

impl Report {
    pub fn parse(json: &str) -> Result<Report, String> {
        let raw: Value =
            serde_json::from_str(json.trim()).map_err(|e| format!("report is not JSON: {e}"))?;
        let name = text(raw.pointer("/router/name").or_else(|| raw.get("name")));
        let connections = raw
            .get("connections")
            .and_then(Value::as_array)
            .ok_or("report has no `connections` array")?
            .iter()
            .map(|c| Conn {
                peer: text(c.get("peer").or_else(|| c.get("name"))),
                addr: text(c.get("addr").or_else(|| c.get("address"))),
                state: text(c.get("state")),
                outbound: c.get("outbound").and_then(Value::as_bool),
                last_error: c
                    .get("last_error")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                raw: c.clone(),
            })
            .collect();
        let peers = raw
            .get("peers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(Report {
            name,
            connections,
            peers,
            raw,
        })
    }

    /// Connections with `host` (there may be more than one entry).
    pub fn connections_with<'a>(&'a self, host: &'a Host) -> impl Iterator<Item = &'a Conn> + 'a {
        self.connections.iter().filter(move |c| c.is_with(host))
    }

    /// How this router's data reaches peer `name` (its `data_path` in
    /// `peers`); "" when not reported.
    pub fn peer_data_path(&self, name: &str) -> String {
        self.peers
            .iter()
            .find(|p| text(p.get("name")) == name)
            .and_then(|p| p.get("data_path"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Is there an established connection with `host`?
    pub fn established_to(&self, host: &Host) -> bool {
        self.connections_with(host).any(Conn::is_established)
    }

    pub fn established_count(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.is_established())
            .count()
    }

    /// A counter of `stats` (0 when absent, so "increased" checks fail
    /// loudly rather than panic here; see [`Report::has_stat`]).
    pub fn stat(&self, key: &str) -> u64 {
        self.raw
            .get("stats")
            .and_then(|s| s.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// Does `stats` have the counter `key`?
    pub fn has_stat(&self, key: &str) -> bool {
        self.raw
            .get("stats")
            .and_then(|s| s.get(key))
            .is_some_and(Value::is_u64)
    }

    /// `router.pid`: the router process (None when absent).
    pub fn router_pid(&self) -> Option<u32> {
        self.raw
            .pointer("/router/pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
    }

    /// `mac_table_entries`: MAC addresses the router holds (None when
    /// absent).
    pub fn mac_table_entries(&self) -> Option<u64> {
        self.raw.get("mac_table_entries").and_then(Value::as_u64)
    }

    /// `router.encryption`: does this router require encryption?
    pub fn router_encryption(&self) -> Option<bool> {
        self.raw
            .pointer("/router/encryption")
            .and_then(Value::as_bool)
    }

    /// `refused`: recent inbound connections refused (empty when absent).
    pub fn refused(&self) -> Vec<&Value> {
        self.raw
            .get("refused")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// Does any part of the report mention `needle` (case-insensitive)?
    pub fn mentions(&self, needle: &str) -> bool {
        self.raw
            .to_string()
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
    }

    /// Elements of any top-level array of the report (`connections`,
    /// `peers`, or whatever else the router lists) whose JSON text contains
    /// every one of `needles` (case-insensitive).
    pub fn entries_mentioning(&self, needles: &[&str]) -> Vec<&Value> {
        let Some(obj) = self.raw.as_object() else {
            return Vec::new();
        };
        obj.values()
            .filter_map(Value::as_array)
            .flatten()
            .filter(|e| {
                let t = e.to_string().to_ascii_lowercase();
                needles.iter().all(|n| t.contains(&n.to_ascii_lowercase()))
            })
            .collect()
    }

    /// A compact one-line-per-connection summary for messages.
    pub fn summary(&self) -> String {
        let mut s = format!("router {}:", self.name);
        for c in &self.connections {
            s.push_str(&format!(
                "\n  {} {} {} outbound={:?} encryption={:?} last_error={:?}",
                c.peer,
                c.addr,
                c.state,
                c.outbound,
                c.encryption(),
                c.last_error
            ));
        }
        for r in self.refused() {
            s.push_str(&format!("\n  refused: {r}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_assumed_shape() {
        let r = Report::parse(
            r#"{"router":{"name":"aa:bb:cc:dd:ee:01","pid":4242},
                "connections":[
                  {"peer":"aa:bb:cc:dd:ee:02","addr":"10.77.0.2:6783","state":"established","outbound":true,"last_error":null},
                  {"peer":{"name":"aa:bb:cc:dd:ee:03"},"addr":"10.77.0.3","state":"retrying","outbound":false,"last_error":"connection refused"}],
                "peers":[{"name":"aa:bb:cc:dd:ee:01"}]}"#,
        )
        .unwrap();
        assert_eq!(r.name, "aa:bb:cc:dd:ee:01");
        assert_eq!(r.router_pid(), Some(4242));
        assert_eq!(r.connections.len(), 2);
        assert!(r.connections[0].is_established());
        assert_eq!(r.connections[0].ip(), Some("10.77.0.2".parse().unwrap()));
        assert_eq!(r.connections[1].peer, "aa:bb:cc:dd:ee:03");
        assert_eq!(r.connections[1].ip(), Some("10.77.0.3".parse().unwrap()));
        assert_eq!(
            r.connections[1].last_error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(r.established_count(), 1);
        assert!(r.mentions("Connection Refused"));
        assert_eq!(r.entries_mentioning(&["10.77.0.3", "refused"]).len(), 1);
        assert!(r.entries_mentioning(&["10.77.0.2", "refused"]).is_empty());
        assert_eq!(r.peers.len(), 1);
    }

    #[test]
    fn rejects_non_json() {
        assert!(Report::parse("router up").is_err());
        assert!(Report::parse("{}").is_err());
    }
}
