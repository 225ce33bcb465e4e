//! Micro-benchmarks of the per-frame forwarding path: classification of
//! frames from the TAP, handling of received datagrams, the MAC table, and
//! sleeve encapsulation.
//!
//!     cargo bench --bench dataplane              (full run)
//!     cargo bench --bench dataplane -- --quick   (a few seconds)

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use weave_rs::core::mac_table::{MacLocation, MacTable};
use weave_rs::core::router::{DatagramDecision, Relay, Router, TapDecision};
use weave_rs::core::routes::Routes;
use weave_rs::core::test_fixtures::{entry, name, NOW_MS};
use weave_rs::core::topology::Topology;
use weave_rs::core::wire::sleeve::{self, Header, Kind};
use weave_rs::core::PeerName;

/// The frame size of the encapsulation and datagram benchmarks: a full
/// frame under a 1500-byte underlay MTU.
const FRAME_LEN: usize = 1400;

/// A container's MAC (unicast, locally administered).
fn host(i: u8) -> [u8; 6] {
    [0x0a, 0x58, 0, 0, 0, i]
}

/// Router `me` of the chain 1 - 2 - 3.
fn chain_router(me: u8) -> Router {
    let (peers, edges): (&[u8], &[(u8, u8)]) = (&[1, 2, 3], &[(1, 2), (2, 3)]);
    let mut t = Topology::new(entry(me, edges));
    let others = peers.iter().filter(|&&p| p != me).map(|&p| entry(p, edges));
    t.merge(others.collect(), NOW_MS);
    Router::new(name(me), Routes::compute(&t))
}

/// An IPv4 Ethernet frame of `len` bytes.
fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0xab);
    f
}

fn datagram(src: PeerName, dst: PeerName, frames: &[&[u8]]) -> Vec<u8> {
    let mut d = Vec::new();
    Header {
        kind: Kind::Frames,
        hops: 0,
        src,
        dst,
    }
    .emit(&mut d);
    for f in frames {
        sleeve::push_frame(&mut d, f);
    }
    d
}

fn router(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("router");

    // Router 1 knows host(3) lives behind peer 3 (learned from a datagram),
    // and host(1) is one of its own containers.
    let mut r1 = chain_router(1);
    let mut learn = datagram(name(3), name(1), &[&frame(host(1), host(3), 64)]);
    assert!(matches!(
        r1.datagram(&mut learn, now),
        DatagramDecision::Frames { inject: true, .. }
    ));

    let unicast = frame(host(3), host(1), FRAME_LEN);
    assert_eq!(
        r1.frame_from_tap(&unicast, now),
        TapDecision::Unicast {
            dst: name(3),
            next_hop: name(2)
        }
    );
    g.bench_function("frame_from_tap/unicast_known_mac", |b| {
        b.iter(|| {
            black_box(r1.frame_from_tap(black_box(&unicast), now));
        })
    });

    let broadcast = frame([0xff; 6], host(1), FRAME_LEN);
    assert!(matches!(
        r1.frame_from_tap(&broadcast, now),
        TapDecision::Broadcast { next_hops } if next_hops == [name(2)]
    ));
    g.bench_function("frame_from_tap/broadcast", |b| {
        b.iter(|| {
            black_box(r1.frame_from_tap(black_box(&broadcast), now));
        })
    });

    // A datagram for us carrying one full frame: validated, its source MAC
    // learned, injected. Nothing is relayed, so it is not changed in place.
    let mut inject = datagram(name(3), name(1), &[&frame(host(1), host(3), FRAME_LEN)]);
    assert_eq!(
        r1.datagram(&mut inject, now),
        DatagramDecision::Frames {
            origin: name(3),
            inject: true,
            relay: Relay::None
        }
    );
    g.throughput(Throughput::Bytes(inject.len() as u64));
    g.bench_function("datagram/inject_1400", |b| {
        b.iter(|| {
            black_box(r1.datagram(black_box(&mut inject), now));
        })
    });

    // Router 2 relays a datagram from 1 to 3: hop count raised in place
    // (reset each time so it never reaches MAX_HOPS).
    let mut r2 = chain_router(2);
    let mut relay = datagram(name(1), name(3), &[&frame(host(3), host(1), FRAME_LEN)]);
    assert_eq!(
        r2.datagram(&mut relay, now),
        DatagramDecision::Frames {
            origin: name(1),
            inject: false,
            relay: Relay::To(name(3))
        }
    );
    g.bench_function("datagram/relay_1400", |b| {
        b.iter(|| {
            relay[2] = 0;
            black_box(r2.datagram(black_box(&mut relay), now));
        })
    });
    g.finish();
}

fn mac_table(c: &mut Criterion) {
    let now = Instant::now();
    let ttl = Duration::from_secs(300);
    let mut g = c.benchmark_group("mac_table");

    // A table holding 1024 MACs, half local, half behind peer 2.
    let mut t = MacTable::new(65_536, ttl);
    let mac = |i: u16| -> [u8; 6] {
        let [hi, lo] = i.to_be_bytes();
        [0x0a, 0x58, 0, 1, hi, lo]
    };
    let loc = |i: u16| {
        if i % 2 == 0 {
            MacLocation::Local
        } else {
            MacLocation::Peer(name(2))
        }
    };
    for i in 0..1024 {
        t.learn(mac(i), loc(i), now);
    }

    let known = mac(513);
    g.bench_function("lookup/hit", |b| {
        b.iter(|| black_box(t.lookup(black_box(&known), now)))
    });
    let unknown = mac(4000);
    g.bench_function("lookup/miss", |b| {
        b.iter(|| black_box(t.lookup(black_box(&unknown), now)))
    });
    g.bench_function("learn/refresh", |b| {
        b.iter(|| black_box(t.learn(black_box(known), loc(513), now)))
    });
    // Known MACs in turn: each refresh moves an entry to the back of its
    // origin's list (refreshing the most recent one again does not).
    let mut turn = 0u16;
    g.bench_function("learn/refresh_rotating", |b| {
        b.iter(|| {
            turn = (turn + 1) % 1024;
            black_box(t.learn(black_box(mac(turn)), loc(turn), now))
        })
    });
    // Alternates between two locations: every call is a move.
    let mut flip = false;
    g.bench_function("learn/move", |b| {
        b.iter(|| {
            flip = !flip;
            let l = if flip {
                MacLocation::Local
            } else {
                MacLocation::Peer(name(2))
            };
            black_box(t.learn(black_box(known), l, now))
        })
    });
    // A full table, all of it a local flood: each new MAC evicts the
    // flood's least recently seen entry.
    let flood = |i: u32| -> [u8; 6] {
        let b = i.to_be_bytes();
        [0x0a, 0x66, b[0], b[1], b[2], b[3]]
    };
    let mut full = MacTable::new(65_536, ttl);
    for i in 0..65_536 {
        full.learn(flood(i), MacLocation::Local, now);
    }
    let mut next = 65_536u32;
    g.bench_function("learn/evict", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            black_box(full.learn(black_box(flood(next)), MacLocation::Local, now))
        })
    });
    // MACs the table has not seen: each round fills a fresh table (made
    // untimed) with 4096 new MACs, as far as it preallocates.
    const ROUND: u64 = 4096;
    g.bench_function("learn/new", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(ROUND);
                let mut t = MacTable::new(65_536, ttl);
                let start = Instant::now();
                for i in 0..n {
                    black_box(t.learn(mac(i as u16), MacLocation::Local, now));
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        })
    });
    g.finish();
}

fn sleeve_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("sleeve");
    let f = frame(host(3), host(1), FRAME_LEN);
    let header = Header {
        kind: Kind::Frames,
        hops: 0,
        src: name(1),
        dst: name(3),
    };
    g.throughput(Throughput::Bytes(FRAME_LEN as u64));

    let mut buf = Vec::with_capacity(2048);
    g.bench_function("encapsulate_1400", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&header).emit(&mut buf);
            sleeve::push_frame(&mut buf, black_box(&f));
            black_box(&buf);
        })
    });

    let d = datagram(name(1), name(3), &[&f]);
    g.bench_function("parse_1400", |b| {
        b.iter(|| {
            let (h, payload) = Header::parse(black_box(&d)).expect("valid datagram");
            let mut n = 0usize;
            for frame in sleeve::frames(payload) {
                n += frame.expect("valid frame").len();
            }
            black_box((h, n))
        })
    });
    g.finish();
}

/// An offloaded 64 KiB TCP segment cut into fragments (the sending side of
/// the fast path), and put back together (the receiving side).
fn fragments(c: &mut Criterion) {
    use weave_rs::core::reassembly::Reassembler;
    let mut g = c.benchmark_group("fragments");
    let whole = vec![0x5au8; 10 + 65_000];
    let header = Header {
        kind: Kind::Fragment,
        hops: 0,
        src: name(1),
        dst: name(3),
    };
    g.throughput(Throughput::Bytes(whole.len() as u64));
    let mut out = Vec::with_capacity(80_000);
    g.bench_function("cut_64k", |b| {
        b.iter(|| {
            out.clear();
            black_box(sleeve::push_fragments(
                &mut out,
                header,
                1,
                black_box(&whole),
                1472,
                (0, 0),
            ))
        })
    });
    let stride = sleeve::push_fragments(&mut out, header, 1, &whole, 1472, (0, 0)).expect("fits");
    let datagrams: Vec<Vec<u8>> = out.chunks(stride).map(<[u8]>::to_vec).collect();
    let mut r = Reassembler::new();
    let now = std::time::Instant::now();
    let mut id = 0u32;
    g.bench_function("reassemble_64k", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            let mut done = 0;
            for d in &datagrams {
                let (_, payload) = Header::parse(d).expect("valid datagram");
                let (mut f, bytes) = sleeve::parse_fragment(payload).expect("valid fragment");
                f.id = id;
                done += r.push(name(1), f, bytes, now).map_or(0, <[u8]>::len);
            }
            black_box(done)
        })
    });
    g.finish();
}

criterion_group!(benches, router, mac_table, sleeve_codec, fragments);
criterion_main!(benches);
