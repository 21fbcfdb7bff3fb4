//! Property tests: every decoder round-trips what its encoder writes, and no input, however
//! arbitrary, makes a decoder panic.

use foca::Codec;
use proptest::prelude::*;
use shoal::identity::{NodeCertificate, PublicKey, SecretKey};
use shoal::membership::{FocaCodec, NodeId};
use shoal::replication::index::{Entry, Index, KeyRange};
use shoal::replication::item::{ItemKey, ItemMeta, Rank, RecordKind, SignedItem, WireItem};
use shoal::replication::protocol::{MAX_FRAME, Turn};
use shoal::replication::reconcile::{self, Range, RangeBody};
use shoal::rpc::Request;

fn key_from(seed: u8) -> PublicKey {
    SecretKey::from_seed([seed; 32]).public()
}

fn item_key() -> impl Strategy<Value = ItemKey> {
    prop_oneof![
        any::<u8>().prop_map(|s| ItemKey::Node {
            node: key_from(s),
            kind: RecordKind::NodeInfo
        }),
        "[A-Za-z0-9_:@+][A-Za-z0-9_:@+-]{0,40}".prop_map(|name| ItemKey::File { name }),
    ]
}

fn meta() -> impl Strategy<Value = ItemMeta> {
    (
        any::<[u8; 32]>(),
        item_key(),
        any::<u64>(),
        any::<u8>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(network, key, version, signer, hash, size, deleted)| ItemMeta {
            network,
            key,
            version,
            signer: key_from(signer),
            hash: if deleted {
                shoal::replication::item::empty_hash()
            } else {
                hash
            },
            size: if deleted { 0 } else { size },
            deleted,
        })
}

fn range() -> impl Strategy<Value = Range> {
    (
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        prop_oneof![
            (any::<[u8; 32]>(), any::<u32>()).prop_map(|(fp, count)| RangeBody::Fingerprint { fp, count }),
            proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8), any::<[u8; 32]>()), 0..4)
                .prop_map(RangeBody::Keys),
        ],
    )
        .prop_map(|(lower, upper, body)| Range {
            range: KeyRange { lower, upper },
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn item_meta_roundtrips(m in meta()) {
        let bytes = m.encode();
        prop_assert_eq!(ItemMeta::decode(&bytes).unwrap(), m.clone());
        prop_assert_eq!(ItemKey::from_bytes(&m.key.to_bytes()).unwrap(), m.key);
    }

    #[test]
    fn wire_items_and_requests_roundtrip(m in meta(), content in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)), ranges in proptest::collection::vec(range(), 0..4), want in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4)) {
        let item = SignedItem::sign(m, &SecretKey::from_seed([1; 32]));
        let wire = WireItem::new(&item, content);
        let req = Request::Reconcile(Turn { ranges, items: vec![wire.clone()], want });
        let bytes = shoal::codec::encode(&req).unwrap();
        prop_assert_eq!(shoal::codec::decode_exact::<Request>(&bytes, MAX_FRAME).unwrap(), req);
        let back = shoal::codec::decode_exact::<WireItem>(&shoal::codec::encode(&wire).unwrap(), MAX_FRAME).unwrap();
        prop_assert_eq!(SignedItem::parse(&back.meta, &back.signature).unwrap(), item);
    }

    #[test]
    fn swim_headers_roundtrip(a in any::<u8>(), b in any::<u8>(), generation in any::<u64>(), bump in any::<u16>(), inc in any::<u16>(), probe in any::<u8>()) {
        let id = |s: u8| NodeId { key: key_from(s), addr: ([10, 0, 0, s], 7946).into(), generation, bump };
        let h = foca::Header { src: id(a), src_incarnation: inc, dst: id(b), message: foca::Message::Ping(probe) };
        let mut buf = Vec::new();
        FocaCodec.encode_header(&h, &mut buf).unwrap();
        prop_assert_eq!(FocaCodec.decode_header(&buf[..]).unwrap(), h);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ItemMeta::decode(&bytes);
        let _ = ItemKey::from_bytes(&bytes);
        let _ = SignedItem::parse(&bytes, &bytes);
        let _ = shoal::codec::decode_exact::<WireItem>(&bytes, MAX_FRAME);
        let _ = shoal::codec::decode_exact::<Request>(&bytes, MAX_FRAME);
        let _ = shoal::codec::decode_exact::<Turn>(&bytes, MAX_FRAME);
        let _ = shoal::files::envelope::decode(&bytes);
        let _ = NodeCertificate::from_bytes(&bytes);
        let _ = FocaCodec.decode_header(&bytes[..]);
        let _ = FocaCodec.decode_member(&bytes[..]);
        let _ = shoal::transport::tls::parse_peer_cert(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_input(m in meta(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let item = SignedItem::sign(m, &SecretKey::from_seed([2; 32]));
        let mut bytes = shoal::codec::encode(&Request::Reconcile(Turn { ranges: vec![], items: vec![WireItem::new(&item, Some(vec![1, 2, 3]))], want: vec![] })).unwrap();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        if let Ok(Request::Reconcile(turn)) = shoal::codec::decode_exact::<Request>(&bytes, MAX_FRAME) {
            for w in turn.items {
                let _ = SignedItem::parse(&w.meta, &w.signature).map(|i| i.verify_signature());
            }
        }
        let _ = ItemMeta::decode(&item.meta_bytes[..item.meta_bytes.len() / 2]);
    }

    #[test]
    fn reconciliation_converges_for_any_two_sets(a in proptest::collection::btree_map(any::<u16>(), 0u64..3, 0..200), b in proptest::collection::btree_map(any::<u16>(), 0u64..3, 0..200)) {
        let entry = |k: u16, v: u64| Entry {
            rank: Rank { version: v, signer: [0; 32], hash: [0; 32], deleted: false },
            digest: *blake3::hash(&[k.to_be_bytes().as_slice(), &v.to_be_bytes()].concat()).as_bytes(),
        };
        let mut x = Index::default();
        let mut y = Index::default();
        for (k, v) in &a { x.insert(k.to_be_bytes().to_vec(), entry(*k, *v)); }
        for (k, v) in &b { y.insert(k.to_be_bytes().to_vec(), entry(*k, *v)); }
        // Alternate turns, delivering sends and wants at once; newer version wins.
        let mut msg = reconcile::open(&x);
        let mut sides = (x, y);
        for round in 0..64 {
            let (me, other) = if round % 2 == 0 { (&mut sides.1, &mut sides.0) } else { (&mut sides.0, &mut sides.1) };
            let step = reconcile::step(me, &msg);
            for k in &step.send {
                let e = *me.get(k).unwrap();
                if other.get(k).is_none_or(|o| o.rank < e.rank) { other.insert(k.clone(), e); }
            }
            for k in &step.want {
                if let Some(e) = other.get(k).copied() && me.get(k).is_none_or(|m| m.rank < e.rank) { me.insert(k.clone(), e); }
            }
            if step.ranges.is_empty() { break; }
            msg = step.ranges;
        }
        prop_assert_eq!(sides.0.fingerprint(), sides.1.fingerprint());
        prop_assert_eq!(sides.0.len(), sides.1.len());
    }
}
