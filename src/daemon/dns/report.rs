//! The report's `dns` section: where the server answers, the names this
//! host knows and whose they are, and the query counters.

use std::collections::BTreeMap;

use crate::api::protocol::{DnsRecordReport, DnsReport};
use crate::daemon::Shared;

pub fn report(shared: &Shared) -> Option<DnsReport> {
    let cfg = shared.config.dns.as_ref()?;
    let nicknames: BTreeMap<_, _> = shared
        .state()
        .topology
        .entries()
        .map(|e| (e.name, e.nickname.clone()))
        .collect();
    let mut records: Vec<DnsRecordReport> = shared
        .dns()
        .records
        .live(|_, _| true)
        .map(|(origin, key, container)| DnsRecordReport {
            name: key.name.clone(),
            address: key.addr.to_string(),
            origin: origin.to_string(),
            nickname: nicknames.get(&origin).cloned().unwrap_or_default(),
            container: container.to_string(),
            answered: false,
        })
        .collect();
    // Answered: what the zone holds (the visible incarnations' records).
    let zone = shared.dns_served.zone();
    for r in &mut records {
        r.answered = zone
            .lookup(&r.name)
            .is_some_and(|a| a.iter().any(|a| a.to_string() == r.address));
    }
    records.sort_by(|a, b| (&a.name, &a.address, &a.origin).cmp(&(&b.name, &b.address, &b.origin)));
    let (upstream, error) = match shared.dns_served.status() {
        Some(Ok(servers)) => (servers.iter().map(ToString::to_string).collect(), None),
        Some(Err(e)) => (Vec::new(), Some(e)),
        None => (Vec::new(), Some("starting".to_string())),
    };
    Some(DnsReport {
        address: cfg.address.to_string(),
        domain: cfg.domain.clone(),
        ttl: cfg.ttl,
        upstream,
        error,
        records,
        queries: shared.dns_served.stats.counts(),
    })
}
