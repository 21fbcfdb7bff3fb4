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

criterion_group!(benches, certificates, swim_codec, items, reconciliation);
criterion_main!(benches);
