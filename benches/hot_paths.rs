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

criterion_group!(benches, certificates, swim_codec);
criterion_main!(benches);
