//! Micro-benchmarks of IPAM's pure core: allocating and freeing in a peer's
//! space, and merging rings (issue 11 asks for a merge of two 1,000-range
//! rings under 1 ms).
//!
//!     cargo bench --bench ipam              (full run)
//!     cargo bench --bench ipam -- --quick   (a few seconds)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use ipnetwork::IpNetwork;
use weave_rs::core::ipam::allocator::{Ipam, Start};
use weave_rs::core::ipam::ring::Ring;
use weave_rs::core::ipam::space::{Space, Span};
use weave_rs::core::wire::ipam as wire;
use weave_rs::core::PeerName;

const RANGES: u8 = 250;

fn peer(i: u32) -> PeerName {
    let b = i.to_be_bytes();
    PeerName([2, 0, b[0], b[1], b[2], b[3]])
}

/// 1,000 ranges over a /12: 250 seeded peers, each of which has given a
/// slice of its share to three others.
fn ring_of_1000(version_bump: bool) -> Ring {
    let peers: Vec<PeerName> = (0..u32::from(RANGES)).map(peer).collect();
    let mut r = Ring::seeded(1, 1 << 20, &peers);
    let shares: Vec<(Span, PeerName)> = r.ranges().map(|(s, e)| (s, e.owner)).collect();
    for (s, owner) in shares {
        let quarter = s.size() / 4;
        for k in 1..4u128 {
            let start = s.start() + k * quarter;
            if let Some(slice) = Span::new(start, start + quarter / 2) {
                let _ = r.give(owner, slice, peer(1000 + k as u32));
            }
        }
        if version_bump {
            let _ = r.report_free(owner, s.start(), 1);
        }
    }
    r
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipam_ring");
    let a = ring_of_1000(false);
    let b = ring_of_1000(true);
    assert!(a.tokens() >= 1000, "{} tokens", a.tokens());
    g.bench_function("merge_1000_ranges", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut x| black_box(x.merge(&b)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("owner_lookup", |bench| {
        let mut at = 0u128;
        bench.iter(|| {
            at = (at + 7919) % (1 << 20);
            black_box(b.owner(at))
        })
    });
    g.finish();
}

fn space(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipam_space");
    // 1,000 owned ranges, every other address allocated.
    let mut sp = Space::new();
    for i in 0..1000u128 {
        if let Some(s) = Span::new(i * 1024, i * 1024 + 512) {
            sp.add(s);
        }
    }
    for i in 0..1000u128 {
        for a in (0..512).step_by(2) {
            let _ = sp.claim(i * 1024 + a);
        }
    }
    let all = Span::new(0, 1 << 20).expect("a span");
    g.bench_function("allocate_and_release_1000_ranges", |bench| {
        bench.iter(|| {
            let a = sp.allocate(all);
            if let Some(a) = a {
                let _ = sp.release(a);
            }
            black_box(a)
        })
    });
    g.finish();
}

/// A peer's whole allocator in a ring of 1,000+ ranges: allocate for an id
/// and release it (what `attach` and `detach` cost the router), and the
/// gossip of that ring on the wire, both ways.
fn allocator(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipam_allocator");
    let range: IpNetwork = "10.32.0.0/12".parse().expect("a range");
    let me = peer(1001);
    let mut ipam = Ipam::new(me, range, range, Start::Observer);
    ipam.restore_ring(ring_of_1000(false)).expect("the ring");
    assert!(
        matches!(ipam.allocate("probe", None), Ok(Ok(_))),
        "no space here"
    );
    ipam.release("probe");
    g.bench_function("allocate_and_release_in_1000_ranges", |bench| {
        bench.iter(|| {
            let a = ipam.allocate("bench", None);
            black_box(&a);
            ipam.release("bench")
        })
    });
    let gossip = ipam.gossip().clone();
    g.bench_function("gossip_emit_and_parse_1000_ranges", |bench| {
        bench.iter(|| black_box(wire::parse(&wire::emit(&gossip))))
    });
    g.finish();
}

criterion_group!(benches, ring, space, allocator);
criterion_main!(benches);
