//! Hot paths of the agent core: what every handshake and every SWIM packet costs.
//! Run: cargo bench --bench hot_paths

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use foca::Codec;
use shoal::identity::{Admission, NodeCertificate, SecretKey, unix_now};
use shoal::membership::NodeId;

fn node_id(seed: u8) -> NodeId {
    NodeId {
        key: SecretKey::from_seed([seed; 32]).public(),
        addr: SocketAddr::from(([10, 0, 0, seed], 7946)),
        generation: 1_795_366_553,
        bump: 0,
    }
}

fn certificates(c: &mut Criterion) {
    let net = SecretKey::generate();
    let node = SecretKey::generate();
    let cert = NodeCertificate::issue(&net, node.public(), "web-1", 0, u64::MAX).unwrap();
    let bytes = cert.to_bytes();
    let admission = Admission::new(Some(net.public()), []);
    c.bench_function("node certificate parse+verify", |b| {
        b.iter(|| NodeCertificate::from_bytes(black_box(&bytes)).unwrap())
    });
    c.bench_function("admission check (certificate)", |b| {
        b.iter(|| {
            admission
                .check(black_box(&node.public()), Some(&cert), unix_now())
                .unwrap()
        })
    });
    let claims = shoal::transport::Claims {
        name: "web-1".into(),
        generation: 1,
        network_cert: Some(bytes.clone()),
    };
    let der = shoal::transport::tls::LocalCert::new(&node, &claims)
        .unwrap()
        .der()
        .to_vec();
    c.bench_function("TLS peer certificate inspect (x509 + claims + admission)", |b| {
        b.iter(|| shoal::transport::tls::inspect_peer(black_box(&der), &admission, unix_now()).unwrap())
    });
}

fn swim_codec(c: &mut Criterion) {
    let header = foca::Header {
        src: node_id(1),
        src_incarnation: 3,
        dst: node_id(2),
        message: foca::Message::Ping(7),
    };
    let mut buf = Vec::with_capacity(256);
    shoal::membership::FocaCodec.encode_header(&header, &mut buf).unwrap();
    c.bench_function("SWIM header encode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(256);
            shoal::membership::FocaCodec
                .encode_header(black_box(&header), &mut out)
                .unwrap();
            out
        })
    });
    c.bench_function("SWIM header decode", |b| {
        b.iter(|| shoal::membership::FocaCodec.decode_header(black_box(&buf[..])).unwrap())
    });
    // What the agent sends is the compact form (keys dropped, put back by the receiver).
    let (a, d) = (node_id(1).key, node_id(2).key);
    let small = shoal::membership::compact::compact(&buf, &a, &d).unwrap();
    c.bench_function(
        &format!("SWIM ping to compact form ({} -> {} B)", buf.len(), small.len()),
        |b| b.iter(|| shoal::membership::compact::compact(black_box(&buf), &a, &d).unwrap()),
    );
    c.bench_function("SWIM ping from compact form", |b| {
        b.iter(|| shoal::membership::compact::expand(black_box(&small), &a, &d).unwrap())
    });
}

fn items(c: &mut Criterion) {
    use shoal::replication::item::{ItemKey, ItemMeta, SignedItem, WireItem};
    use shoal::replication::policy::Policy;
    let signer = SecretKey::generate();
    let body = vec![7u8; 200];
    let meta = ItemMeta {
        network: [1; 32],
        key: ItemKey::File {
            name: "config:app".into(),
        },
        version: 1_795_366_553_000 << 16,
        signer: signer.public(),
        hash: *blake3::hash(&body).as_bytes(),
        size: body.len() as u64,
        deleted: false,
    };
    c.bench_function("item sign", |b| {
        b.iter(|| SignedItem::sign(black_box(meta.clone()), &signer))
    });
    let item = SignedItem::sign(meta, &signer);
    c.bench_function("item signature verify", |b| {
        b.iter(|| black_box(&item).verify_signature())
    });
    let wire = WireItem::new(&item, Some(body.clone()));
    let policy = Policy {
        network_id: [1; 32],
        files: [("config:app".to_string(), [signer.public()].into_iter().collect())].into(),
        max_file_size: 1 << 26,
        max_skew: std::time::Duration::from_secs(300),
    };
    c.bench_function("item full acceptance check (parse, authorize, verify, hash)", |b| {
        b.iter(|| policy.verify(black_box(&wire), 1_795_366_553_000).unwrap())
    });
    let encoded = shoal::codec::encode(&wire).unwrap();
    c.bench_function("wire item encode", |b| {
        b.iter(|| shoal::codec::encode(black_box(&wire)).unwrap())
    });
    c.bench_function("wire item decode", |b| {
        b.iter(|| shoal::codec::decode_exact::<WireItem>(black_box(&encoded), 1 << 20).unwrap())
    });
}

fn reconciliation(c: &mut Criterion) {
    use shoal::replication::index::{Entry, Index};
    use shoal::replication::item::Rank;
    use shoal::replication::reconcile;
    let entry = |n: u64, v: u64| Entry {
        rank: Rank {
            version: v,
            signer: [0; 32],
            hash: [0; 32],
            deleted: false,
        },
        digest: *blake3::hash(&[n.to_be_bytes(), v.to_be_bytes()].concat()).as_bytes(),
    };
    let key = |n: u64| blake3::hash(&n.to_be_bytes()).as_bytes()[..16].to_vec();
    let mut a = Index::default();
    for n in 0..10_000 {
        a.insert(key(n), entry(n, 1));
    }
    let mut b = a.clone();
    c.bench_function("reconcile 10k items, in sync (open + answer)", |bench| {
        bench.iter(|| reconcile::step(black_box(&b), &reconcile::open(black_box(&a))))
    });
    for n in 0..10 {
        b.insert(key(n * 997), entry(n * 997, 2));
    }
    c.bench_function("reconcile 10k items, 10 differences (full exchange)", |bench| {
        bench.iter(|| {
            let mut msg = reconcile::open(&a);
            let mut turn = 0;
            loop {
                let s = if turn % 2 == 0 {
                    reconcile::step(&b, &msg)
                } else {
                    reconcile::step(&a, &msg)
                };
                if s.ranges.is_empty() {
                    break s.send.len() + s.want.len();
                }
                msg = s.ranges;
                turn += 1;
            }
        })
    });
    let chunk = vec![3u8; shoal::store::CHUNK_SIZE];
    c.bench_function("blake3 of one 256 KiB chunk", |bench| {
        bench.iter(|| blake3::hash(black_box(&chunk)))
    });
}

/// Receiving a large body as a QUIC stream hands it over: in packet-sized pieces, each hashed
/// and written to the body file (the store buffers them into larger pieces), then checked and
/// renamed into place. The body is removed again after each run (included in the time).
fn bodies(c: &mut Criterion) {
    const SIZE: usize = 1 << 20;
    const PACKET: usize = 1_400;
    let dir = tempfile::tempdir().unwrap();
    let store = shoal::store::Store::open(dir.path()).unwrap();
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let hash = *blake3::hash(&body).as_bytes();
    c.bench_function(
        "body receive, 1 MiB in 1400 B pieces (hash, write, rename, remove)",
        |b| {
            b.iter(|| {
                let mut w = store.body_writer(hash, SIZE as u64).unwrap();
                for piece in body.chunks(PACKET) {
                    w.write(black_box(piece)).unwrap();
                }
                w.finish().unwrap();
                store.remove_body(&hash).unwrap();
            })
        },
    );
}

/// Signing and verifying a batch of 64 items (one reconciliation turn's worth): one by one, as
/// the agent does (strict verification), and with ed25519-dalek's batch verification, to know
/// what switching would gain.
fn batches(c: &mut Criterion) {
    use shoal::replication::item::{ItemKey, ItemMeta, SignedItem};
    const BATCH: usize = 64;
    let signer = SecretKey::generate();
    let metas: Vec<ItemMeta> = (0..BATCH)
        .map(|i| {
            let body = format!("record {i}").into_bytes();
            ItemMeta {
                network: [1; 32],
                key: ItemKey::File { name: format!("r{i}") },
                version: (1_795_366_553_000 + i as u64) << 16,
                signer: signer.public(),
                hash: *blake3::hash(&body).as_bytes(),
                size: body.len() as u64,
                deleted: false,
            }
        })
        .collect();
    c.bench_function("item sign, batch of 64", |b| {
        b.iter(|| {
            metas
                .iter()
                .map(|m| SignedItem::sign(black_box(m.clone()), &signer))
                .collect::<Vec<_>>()
        })
    });
    let items: Vec<SignedItem> = metas.iter().map(|m| SignedItem::sign(m.clone(), &signer)).collect();
    c.bench_function(
        "item verify, batch of 64, one by one (strict, as the agent does)",
        |b| b.iter(|| black_box(&items).iter().all(|i| i.verify_signature())),
    );
    // The exact messages the agent signs: domain prefix + meta bytes.
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|i| [shoal::replication::item::DOMAIN, &i.meta_bytes].concat())
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|i| ed25519_dalek::Signature::from_bytes(&i.signature))
        .collect();
    let keys = vec![ed25519_dalek::VerifyingKey::from_bytes(signer.public().as_bytes()).unwrap(); BATCH];
    c.bench_function("item verify, batch of 64, ed25519-dalek verify_batch", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &keys).is_ok())
    });
}

/// Encode and decode of every message that crosses the wire (the SWIM header and the wire
/// item, also a broadcast datagram's payload, are in `swim_codec` and `items`).
fn wire_messages(c: &mut Criterion) {
    use shoal::codec::{decode_exact, encode};
    use shoal::replication::index::{Entry, Index};
    use shoal::replication::item::{ItemKey, ItemMeta, Rank, RecordKind, SignedItem, WireItem};
    use shoal::replication::protocol::{BodyHeader, Turn};
    use shoal::replication::reconcile;
    use shoal::rpc::{Claim, ConfirmReply, Request};

    fn pair<T>(c: &mut Criterion, name: &str, msg: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let bytes = encode(msg).unwrap();
        c.bench_function(&format!("{name} encode ({} B)", bytes.len()), |b| {
            b.iter(|| encode(black_box(msg)).unwrap())
        });
        c.bench_function(&format!("{name} decode ({} B)", bytes.len()), |b| {
            b.iter(|| decode_exact::<T>(black_box(&bytes), 1 << 24).unwrap())
        });
    }

    let member = foca::Member::new(node_id(3), 2, foca::State::Alive);
    let mut buf = Vec::with_capacity(128);
    shoal::membership::FocaCodec.encode_member(&member, &mut buf).unwrap();
    c.bench_function(&format!("SWIM member update encode ({} B)", buf.len()), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(128);
            shoal::membership::FocaCodec
                .encode_member(black_box(&member), &mut out)
                .unwrap();
            out
        })
    });
    c.bench_function(&format!("SWIM member update decode ({} B)", buf.len()), |b| {
        b.iter(|| shoal::membership::FocaCodec.decode_member(black_box(&buf[..])).unwrap())
    });

    let node = SecretKey::from_seed([9; 32]).public();
    pair(c, "rpc GetBody", &Request::GetBody { hash: [7; 32] });
    pair(c, "rpc Job", &Request::Job { seq: 12_345, log: true });
    pair(
        c,
        "rpc Confirm(Record)",
        &Request::Confirm(Claim::Record {
            node,
            kind: RecordKind::Health,
            version: 1_795_366_553_000 << 16,
        }),
    );
    pair(c, "ConfirmReply", &ConfirmReply { agree: true });
    pair(c, "BodyHeader", &BodyHeader { size: Some(10 << 20) });

    // The opening turn of a reconciliation over 10,000 items.
    let mut index = Index::default();
    for n in 0..10_000u64 {
        let key = blake3::hash(&n.to_be_bytes()).as_bytes()[..16].to_vec();
        let rank = Rank {
            version: n,
            signer: [0; 32],
            hash: [0; 32],
            deleted: false,
        };
        index.insert(
            key,
            Entry {
                rank,
                digest: *blake3::hash(&n.to_le_bytes()).as_bytes(),
            },
        );
    }
    let opening = Request::Reconcile(Turn {
        ranges: reconcile::open(&index),
        ..Turn::default()
    });
    pair(c, "rpc Reconcile opening turn, 10k items", &opening);

    // A turn carrying 64 small records (what a newcomer receives per round).
    let signer = SecretKey::generate();
    let items: Vec<WireItem> = (0..64)
        .map(|i| {
            let body = format!("record {i}: {}", "x".repeat(64)).into_bytes();
            let meta = ItemMeta {
                network: [1; 32],
                key: ItemKey::File { name: format!("r{i}") },
                version: (1_795_366_553_000 + i) << 16,
                signer: signer.public(),
                hash: *blake3::hash(&body).as_bytes(),
                size: body.len() as u64,
                deleted: false,
            };
            WireItem::new(&SignedItem::sign(meta, &signer), Some(body))
        })
        .collect();
    pair(
        c,
        "reconciliation turn with 64 records",
        &Turn {
            items,
            ..Turn::default()
        },
    );
}

criterion_group!(
    benches,
    certificates,
    swim_codec,
    items,
    batches,
    wire_messages,
    reconciliation,
    bodies
);
criterion_main!(benches);
