//! Micro-benchmarks of DNS's pure core: answering a query from a zone of
//! 1,000 names (the server's work per query, without the sockets), and
//! merging a peer's 1,000 records.
//!
//!     cargo bench --bench dns              (full run)
//!     cargo bench --bench dns -- --quick   (a few seconds)

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use weave_rs::core::dns::answer::{answer, Transport};
use weave_rs::core::dns::records::{Key, Records};
use weave_rs::core::dns::zone::Zone;
use weave_rs::core::wire::dns as wire;
use weave_rs::core::PeerName;

fn zone() -> Zone {
    let names: Vec<(String, IpAddr)> = (0..1000u32)
        .map(|i| {
            (
                format!("c{i}.weave.local."),
                IpAddr::from((0x0a20_0000 + i).to_be_bytes()),
            )
        })
        .collect();
    Zone::build(
        "weave.local.",
        1,
        1,
        names.iter().map(|(n, a)| (n.as_str(), *a)),
    )
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn answering(c: &mut Criterion) {
    let z = zone();
    let hit = query("c500.weave.local.", RecordType::A);
    let miss = query("nope.weave.local.", RecordType::A);
    let other = query("example.com.", RecordType::A);
    c.bench_function("answer A from 1,000 names", |b| {
        b.iter(|| answer(black_box(&hit), &z, 0, Transport::Udp))
    });
    c.bench_function("answer NXDOMAIN with SOA", |b| {
        b.iter(|| answer(black_box(&miss), &z, 0, Transport::Udp))
    });
    c.bench_function("decide to forward", |b| {
        b.iter(|| answer(black_box(&other), &z, 0, Transport::Udp))
    });
}

fn merging(c: &mut Criterion) {
    let mut origin = Records::new(PeerName([2, 0, 0, 0, 0, 1]), 1);
    for i in 0..1000u32 {
        let key = Key {
            name: format!("c{i}.weave.local."),
            addr: IpAddr::from((0x0a20_0000 + i).to_be_bytes()),
        };
        origin.add(key, "", 0).unwrap();
    }
    let all = origin.all();
    c.bench_function("merge 1,000 new records", |b| {
        b.iter_batched(
            || Records::new(PeerName([2, 0, 0, 0, 0, 2]), 2),
            |mut r| r.merge(all.clone(), |_| None, 0),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("gossip 1,000 records: emit + parse", |b| {
        b.iter(|| {
            for m in wire::emit(black_box(&all)) {
                black_box(wire::parse(&m).unwrap());
            }
        })
    });
}

criterion_group!(benches, answering, merging);
criterion_main!(benches);
