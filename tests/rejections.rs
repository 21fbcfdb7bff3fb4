//! Everything a node must refuse, from uploads and from peers: each refusal is named, counted,
//! and leaves nothing behind.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal::identity::{Admission, NodeCertificate, SecretKey, unix_now};
use shoal::replication::item::{ItemKey, ItemMeta, SignedItem, WireItem};
use shoal::replication::policy::Reject;
use shoal::replication::protocol::{Turn, write_frame};
use shoal::rpc::Request;
use shoal::transport::{Claims, Transport, TransportConfig};

const MAX: u64 = 4096;

/// Starts the agent under test; returns it with its chunk count once its own records are in.
async fn agent(net: &TestNetwork) -> (shoal::agent::AgentHandle, usize) {
    let mut c = net.config("target");
    c.replication.max_file_size = bytesize::ByteSize::b(MAX);
    let a = start(c).await;
    eventually(
        Duration::from_secs(5),
        "own node, health and schedules records stored",
        || a.replication().summary().0 >= 3,
    )
    .await;
    let chunks = a.replication().store().chunk_count();
    (a, chunks)
}

/// Nothing about `name` is stored: no item, no new body chunk, no file.
fn nothing_stored(a: &shoal::agent::AgentHandle, baseline: usize, name: &str) {
    assert!(
        a.replication().get(&ItemKey::File { name: name.to_string() }).is_none(),
        "{name} stored"
    );
    assert_eq!(
        a.replication().store().chunk_count(),
        baseline,
        "body chunks left behind"
    );
    assert!(!a.files_dir().join(name).exists());
}

fn envelope(item: &SignedItem, body: &[u8]) -> Vec<u8> {
    shoal::files::envelope::encode(item, body)
}

fn now_version() -> u64 {
    shoal::replication::hlc::from_ms(shoal::time::unix_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_refused_with_a_reason_and_store_nothing() {
    let net = TestNetwork::new();
    let (a, baseline) = agent(&net).await;
    let http = a.http_addr;
    let id = net.network_id();
    let v = now_version();
    let stranger = SecretKey::generate();

    let mut bad_sig = signed_file(id, "app.conf", b"x", &net.signer, v);
    bad_sig.signature[10] ^= 1;
    let mut dotted = ItemMeta {
        network: id,
        key: ItemKey::File { name: "../evil".into() },
        version: v,
        signer: net.signer.public(),
        hash: *blake3::hash(b"x").as_bytes(),
        size: 1,
        deleted: false,
    };
    let dotted_item = SignedItem::sign(dotted.clone(), &net.signer);
    dotted.key = ItemKey::File { name: "a/b".into() };
    let slashed_item = SignedItem::sign(dotted, &net.signer);
    let big = vec![7u8; MAX as usize + 1];

    let cases: Vec<(&str, &str, Vec<u8>, u16, Reject)> = vec![
        (
            "unknown name",
            "nope",
            envelope(&signed_file(id, "nope", b"x", &net.signer, v), b"x"),
            404,
            Reject::UnknownFile,
        ),
        (
            "unauthorized signer",
            "app.conf",
            envelope(&signed_file(id, "app.conf", b"x", &stranger, v), b"x"),
            403,
            Reject::UnauthorizedSigner,
        ),
        (
            "bad signature",
            "app.conf",
            envelope(&bad_sig, b"x"),
            403,
            Reject::BadSignature,
        ),
        (
            "other network",
            "app.conf",
            envelope(&signed_file([9; 32], "app.conf", b"x", &net.signer, v), b"x"),
            400,
            Reject::OtherNetwork,
        ),
        (
            "oversized",
            "app.conf",
            envelope(&signed_file(id, "app.conf", &big, &net.signer, v), &big),
            413,
            Reject::TooLarge,
        ),
        (
            "hash mismatch",
            "app.conf",
            envelope(&signed_file(id, "app.conf", b"signed", &net.signer, v), b"sent!!"),
            400,
            Reject::HashMismatch,
        ),
        (
            "future version",
            "app.conf",
            envelope(
                &signed_file(id, "app.conf", b"x", &net.signer, v + (3_600_000 << 16)),
                b"x",
            ),
            400,
            Reject::FutureVersion,
        ),
        (
            "dot-dot name",
            "evil",
            envelope(&dotted_item, b"x"),
            400,
            Reject::BadName,
        ),
        ("slash name", "b", envelope(&slashed_item, b"x"), 400, Reject::BadName),
    ];
    for (what, name, env, status, reason) in cases {
        let before = a.replication().stats().rejected(reason);
        let (got, body) = send_envelope(http, reqwest::Method::PUT, name, env).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["reason"], reason.label(), "{what}: {body}");
        assert_eq!(a.replication().stats().rejected(reason), before + 1, "{what}: counted");
        nothing_stored(&a, baseline, name);
        nothing_stored(&a, baseline, "app.conf");
    }
    // Nothing was written next to the state directory either.
    assert!(!a.files_dir().parent().unwrap().join("evil").exists());

    // Malformed envelopes, and a URL that is not the signed name.
    for (what, name, bytes) in [
        ("garbage", "app.conf", b"definitely not an envelope".to_vec()),
        (
            "truncated",
            "app.conf",
            envelope(&signed_file(id, "app.conf", b"x", &net.signer, v), b"x")[..40].to_vec(),
        ),
        (
            "name differs",
            "shared",
            envelope(&signed_file(id, "app.conf", b"x", &net.signer, v), b"x"),
        ),
    ] {
        let (got, body) = send_envelope(http, reqwest::Method::PUT, name, bytes).await;
        assert_eq!(got, 400, "{what}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
        nothing_stored(&a, baseline, "app.conf");
        nothing_stored(&a, baseline, "shared");
    }

    // Replays: the same upload twice, then an older version, are refused as stale and the
    // stored version stays.
    let good = envelope(&signed_file(id, "app.conf", b"v1", &net.signer, v), b"v1");
    assert_eq!(
        send_envelope(http, reqwest::Method::PUT, "app.conf", good.clone())
            .await
            .0,
        200
    );
    let before = a.replication().stats().rejected(Reject::Stale);
    let (got, body) = send_envelope(http, reqwest::Method::PUT, "app.conf", good).await;
    assert_eq!((got, body["reason"].as_str()), (409, Some("stale_version")));
    let older = envelope(&signed_file(id, "app.conf", b"v0", &net.signer, v - 1), b"v0");
    assert_eq!(
        send_envelope(http, reqwest::Method::PUT, "app.conf", older).await.0,
        409
    );
    assert_eq!(a.replication().stats().rejected(Reject::Stale), before + 2);
    assert_eq!(content(http, "app.conf").await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        a.replication().store().chunk_count(),
        baseline + 1,
        "only v1's body is stored"
    );

    // Operators see the refusals by reason.
    let report: shoal::http::api::Replication = get_json(http, "/api/replication").await.unwrap();
    for reason in [
        Reject::UnknownFile,
        Reject::BadSignature,
        Reject::OtherNetwork,
        Reject::TooLarge,
        Reject::BadName,
    ] {
        assert!(
            report.rejected[reason.label()] >= 1,
            "{reason:?}: {:?}",
            report.rejected
        );
    }
    assert_eq!(report.rejected["stale_version"], 2);
    assert_eq!(report.committed.uploaded, 1);
    a.shutdown().await;
}

/// A raw transport admitted to `net`, speaking the replication protocol directly.
fn raw_peer(net: &TestNetwork) -> Transport {
    let key = SecretKey::generate();
    let cert = NodeCertificate::issue(&net.key, key.public(), "raw", unix_now() - 60, unix_now() + 3600).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::mem::forget(rx);
    Transport::bind(
        &TransportConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4,
        },
        &key,
        &Claims {
            name: "raw".into(),
            generation: 1,
            network_cert: Some(cert.to_bytes()),
        },
        Arc::new(Admission::new(Some(net.key.public()), [])),
        tx,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_and_frames_from_a_peer_are_refused_and_store_nothing() {
    captured_logs();
    let net = TestNetwork::new();
    let (a, baseline) = agent(&net).await;
    let raw = raw_peer(&net);
    raw.connect(a.cluster_addr, Some(a.key)).await.unwrap();
    let id = net.network_id();
    let v = now_version();
    let wire = |item: &SignedItem, body: &[u8]| WireItem::new(item, Some(body.to_vec()));
    let mut bad_sig = signed_file(id, "app.conf", b"x", &net.signer, v);
    bad_sig.signature[0] ^= 1;
    let big = vec![1u8; MAX as usize + 1];
    let mut mismatched = wire(&signed_file(id, "app.conf", b"x", &net.signer, v), b"x");
    mismatched.content = Some(b"y".to_vec());
    let forged_record = {
        // A node record for the agent, signed by someone else.
        let meta = ItemMeta {
            network: id,
            key: ItemKey::Node {
                node: a.key,
                kind: shoal::replication::item::RecordKind::NodeInfo,
            },
            version: v + 10,
            signer: net.signer.public(),
            hash: *blake3::hash(b"lies").as_bytes(),
            size: 4,
            deleted: false,
        };
        WireItem::new(&SignedItem::sign(meta, &net.signer), Some(b"lies".to_vec()))
    };
    let forged_health = {
        // A health report for the agent, signed by another key.
        let meta = ItemMeta {
            network: id,
            key: ItemKey::Node {
                node: a.key,
                kind: shoal::replication::item::RecordKind::Health,
            },
            version: v + 10,
            signer: net.signer.public(),
            hash: *blake3::hash(b"all is well").as_bytes(),
            size: 11,
            deleted: false,
        };
        WireItem::new(&SignedItem::sign(meta, &net.signer), Some(b"all is well".to_vec()))
    };
    let items = [
        (forged_health, Reject::UnauthorizedSigner),
        (
            wire(&signed_file(id, "nope", b"x", &net.signer, v), b"x"),
            Reject::UnknownFile,
        ),
        (
            wire(&signed_file(id, "app.conf", b"x", &SecretKey::generate(), v), b"x"),
            Reject::UnauthorizedSigner,
        ),
        (wire(&bad_sig, b"x"), Reject::BadSignature),
        (
            wire(&signed_file([3; 32], "app.conf", b"x", &net.signer, v), b"x"),
            Reject::OtherNetwork,
        ),
        (
            wire(&signed_file(id, "app.conf", &big, &net.signer, v), &big),
            Reject::TooLarge,
        ),
        (mismatched, Reject::HashMismatch),
        (forged_record, Reject::UnauthorizedSigner),
        (
            WireItem {
                meta: vec![1, 2, 3],
                signature: vec![0; 64],
                content: None,
            },
            Reject::Malformed,
        ),
    ];
    let before: Vec<u64> = items
        .iter()
        .map(|(_, r)| a.replication().stats().rejected(*r))
        .collect();
    let (mut send, mut recv) = raw.open_bi(a.key, None).await.unwrap();
    let turn = Turn {
        ranges: vec![],
        items: items.iter().map(|(w, _)| w.clone()).collect(),
        want: vec![],
    };
    write_frame(&mut send, &Request::Reconcile(turn)).await.unwrap();
    // The agent answers (an empty turn) once it has judged the items.
    let _ = shoal::replication::protocol::read_frame::<Turn>(&mut recv).await;
    for ((_, reason), before) in items.iter().zip(before) {
        eventually(Duration::from_secs(5), reason.label(), || {
            a.replication().stats().rejected(*reason) > before
        })
        .await;
    }
    nothing_stored(&a, baseline, "app.conf");
    nothing_stored(&a, baseline, "nope");
    // Each kind of refusal is logged (once per reason and interval), naming the reason.
    let logs = logs_text();
    for reason in [
        "bad signature",
        "item belongs to another network",
        "file name is not configured",
    ] {
        assert!(
            logs.lines()
                .any(|l| l.contains("refused items from peers") && l.contains(reason)),
            "{reason} not logged:\n{logs}"
        );
    }
    let (_, own_record) = a
        .replication()
        .get(&ItemKey::Node {
            node: a.key,
            kind: shoal::replication::item::RecordKind::NodeInfo,
        })
        .expect("own record");
    assert_ne!(own_record.as_deref(), Some(&b"lies"[..]));

    // Malformed frames: garbage, and a length prefix of 4 GiB. The agent drops the stream and
    // carries on.
    for bytes in [
        b"\x00\x00\x00\x05garbage-after-length".to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
    ] {
        let (mut send, mut recv) = raw.open_bi(a.key, None).await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let _ = send.finish();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf))
            .await
            .expect("agent answers");
        assert!(r.is_err() || matches!(r, Ok(None)), "stream refused: {r:?}");
    }
    nothing_stored(&a, baseline, "app.conf");
    let health: shoal::http::api::Health = get_json(a.http_addr, "/api/health").await.unwrap();
    assert_eq!(health.name, "target");
    raw.abort();
    a.shutdown().await;
}

/// A node serves at most `MAX_SERVED_SYNCS` reconciliations at once: a further one is closed
/// at once (and counted), and once a session ends a new one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliations_beyond_the_limit_are_declined() {
    use shoal::replication::protocol::read_frame;
    use shoal::replication::sync::MAX_SERVED_SYNCS;
    let net = TestNetwork::new();
    let (a, _) = agent(&net).await;
    let raw = raw_peer(&net);
    raw.connect(a.cluster_addr, Some(a.key)).await.unwrap();
    // An empty side's opening: the agent holds records, so it answers and waits for our turn.
    let opening = || Turn {
        ranges: shoal::replication::reconcile::open(&shoal::replication::index::Index::default()),
        ..Turn::default()
    };
    let open = || async {
        let (mut send, mut recv) = raw.open_bi(a.key, None).await.unwrap();
        write_frame(&mut send, &Request::Reconcile(opening())).await.unwrap();
        let reply = read_frame::<Turn>(&mut recv).await.unwrap();
        (send, recv, reply)
    };
    let mut held = Vec::new();
    for _ in 0..MAX_SERVED_SYNCS {
        let (send, recv, reply) = open().await;
        assert!(reply.is_some(), "a session within the limit is served");
        held.push((send, recv));
    }
    let declined = a
        .replication()
        .stats()
        .syncs_declined
        .load(std::sync::atomic::Ordering::Relaxed);
    let (_, _, reply) = open().await;
    assert!(
        reply.is_none(),
        "a session beyond the limit is closed without an answer"
    );
    assert_eq!(
        a.replication()
            .stats()
            .syncs_declined
            .load(std::sync::atomic::Ordering::Relaxed),
        declined + 1
    );
    // Ending one session frees its place.
    let (mut send, _recv) = held.pop().unwrap();
    send.finish().unwrap();
    let mut served = false;
    for _ in 0..50 {
        if open().await.2.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a place freed by a finished session is used again");
    a.shutdown().await;
}
