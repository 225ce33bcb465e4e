//! The DNS commands: `dns-add`, `dns-remove`, `dns-lookup`, `dns-args`,
//! and `status dns`.

use std::fmt::Write;

use anyhow::{bail, Context};

use super::status::{clean, clean_long};
use crate::api::client;
use crate::api::protocol::{Report, Request};

/// `dns-add ADDR... NAME|CONTAINER` and `dns-remove`: the addresses (each
/// checked here, so a typo is named before anything is asked) and the
/// owner, last.
pub fn addrs_and_owner(args: &[String]) -> anyhow::Result<(Vec<String>, String)> {
    let Some((owner, addrs)) = args.split_last() else {
        bail!("missing NAME or CONTAINER");
    };
    for a in addrs {
        if a.parse::<std::net::IpAddr>().is_err() {
            bail!("{a:?} is not an IP address (e.g. 10.32.0.5); NAME or CONTAINER comes last");
        }
    }
    Ok((addrs.to_vec(), owner.clone()))
}

pub fn add(args: &[String]) -> anyhow::Result<()> {
    let (addrs, owner) = addrs_and_owner(args)?;
    let m = super::call(Request::DnsAdd {
        addrs,
        owner: owner.clone(),
    })
    .with_context(|| format!("dns-add {owner}"))?;
    println!("{m}");
    Ok(())
}

pub fn remove(args: &[String]) -> anyhow::Result<()> {
    let (addrs, owner) = addrs_and_owner(args)?;
    super::call(Request::DnsRemove {
        addrs,
        owner: owner.clone(),
    })
    .with_context(|| format!("dns-remove {owner}"))
    .map(drop)
}

/// Prints the addresses, one per line; fails when there is none.
pub fn lookup(name: &str) -> anyhow::Result<()> {
    let m = super::call(Request::DnsLookup {
        name: name.to_string(),
    })
    .with_context(|| format!("dns-lookup {name}"))?;
    if m.is_empty() {
        bail!("dns-lookup {name}: no such name");
    }
    for a in m.split(' ') {
        println!("{a}");
    }
    Ok(())
}

/// The `docker run` flags that make a container use the router's DNS.
pub fn args(r: &Report) -> anyhow::Result<Vec<String>> {
    let Some(d) = &r.dns else {
        bail!("DNS is off on this router (launched with --no-dns)");
    };
    Ok(vec![
        format!("--dns={}", d.address),
        format!("--dns-search={}", d.domain.trim_end_matches('.')),
    ])
}

/// `status dns`: where it answers, then every name and whose it is.
pub fn status(r: &Report) -> String {
    let Some(d) = &r.dns else {
        return "DNS is off on this router (launched with --no-dns)\n".to_string();
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Domain {} on {}:53 (UDP, TCP), TTL {}s",
        clean(&d.domain),
        clean(&d.address),
        d.ttl
    );
    match &d.error {
        Some(e) => {
            let _ = writeln!(s, "NOT ANSWERING: {}", clean_long(e));
        }
        None => {
            let up: Vec<String> = d.upstream.iter().map(|u| clean(u)).collect();
            let _ = writeln!(
                s,
                "Upstream: {}",
                if up.is_empty() {
                    "none".to_string()
                } else {
                    up.join(" ")
                }
            );
        }
    }
    let q = &d.queries;
    let _ = writeln!(
        s,
        "Queries: {} UDP, {} TCP; {} answered here, {} forwarded ({} failed), {} malformed, {} dropped busy",
        q.udp, q.tcp, q.local, q.forwarded, q.upstream_failed, q.dropped_malformed, q.dropped_busy
    );
    if d.records.is_empty() {
        let _ = writeln!(s, "No names.");
        return s;
    }
    let width = d
        .records
        .iter()
        .map(|r| r.name.len().min(60))
        .max()
        .unwrap_or(0);
    for rec in &d.records {
        let owner = format!("{}({})", clean(&rec.origin), clean(&rec.nickname));
        let container = match rec.container.get(..12) {
            Some(short) => short.to_string(),
            None if rec.container.is_empty() => "-".to_string(),
            None => clean(&rec.container),
        };
        let state = if rec.answered {
            ""
        } else {
            "  (peer unreachable)"
        };
        let _ = writeln!(
            s,
            "{:<width$}  {:<39}  {owner:<32}  {container}{state}",
            clean_long(&rec.name),
            clean(&rec.address),
        );
    }
    s
}

pub fn print_args() -> anyhow::Result<()> {
    let r = client::report()?;
    println!("{}", args(&r)?.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_comes_last_after_checked_addresses() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            addrs_and_owner(&v(&["10.0.0.1", "fd00::1", "api.weave.local"])).unwrap(),
            (v(&["10.0.0.1", "fd00::1"]), "api.weave.local".to_string())
        );
        assert_eq!(
            addrs_and_owner(&v(&["web"])).unwrap(),
            (vec![], "web".into())
        );
        let e = addrs_and_owner(&v(&["10.0.0.300", "web"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"10.0.0.300\" is not an IP address"), "{e}");
        assert!(addrs_and_owner(&[]).is_err());
    }
}
