//! Deterministic simulation of the membership state machine: no sockets, no wall clock.
//! Nodes exchange packets through an in-memory network with latency and seeded loss, and
//! time is virtual, so every run of a test is the same run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal::identity::SecretKey;
use shoal::membership::{Core, CoreConfig, MemberState, NoBroadcasts, NodeId, Now};

const LATENCY: Duration = Duration::from_millis(2);

fn config() -> CoreConfig {
    // Production defaults.
    CoreConfig {
        probe_period: Duration::from_secs(1),
        probe_timeout: Duration::from_millis(500),
        suspect_timeout: Duration::from_secs(3),
        forget_down_after: Duration::from_secs(3600),
        reconnect_interval: Duration::from_secs(20),
    }
}

/// A packet in flight: (deliver at, sequence, to, from, data), earliest first.
type InFlight = Reverse<(Duration, u64, usize, usize, Bytes)>;

struct Sim {
    nodes: Vec<Option<Core>>,
    ids: Vec<NodeId>,
    now: Duration,
    wire: BinaryHeap<InFlight>,
    seq: u64,
    rng: SmallRng,
    loss: f64,
    /// Nodes on different sides of a partition cannot talk: side of each node.
    side: Vec<u8>,
    /// Datagrams a node addressed to itself.
    sent_to_self: u64,
}

impl Sim {
    fn new(n: usize, seed: u64) -> Sim {
        let ids: Vec<NodeId> = (0..n)
            .map(|i| NodeId {
                key: SecretKey::from_seed([i as u8 + 1; 32]).public(),
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 7946)),
                generation: 1,
                bump: 0,
            })
            .collect();
        let mut sim = Sim {
            nodes: Vec::new(),
            ids: ids.clone(),
            now: Duration::ZERO,
            wire: BinaryHeap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            loss: 0.0,
            side: vec![0; n],
            sent_to_self: 0,
        };
        for (i, id) in ids.into_iter().enumerate() {
            let core = Core::new(
                id,
                format!("n{i}"),
                &config(),
                seed + i as u64,
                sim.time(),
                Box::new(NoBroadcasts),
            );
            sim.nodes.push(Some(core));
        }
        sim
    }

    fn time(&self) -> Now {
        Now {
            mono: self.now,
            wall_ms: self.now.as_millis() as u64,
        }
    }

    fn flush(&mut self, from: usize) {
        let Some(core) = self.nodes[from].as_mut() else { return };
        for (to, data) in core.take_sends() {
            let to = self.ids.iter().position(|x| x.key == to.key).expect("known node");
            self.sent_to_self += u64::from(to == from);
            if self.rng.random::<f64>() < self.loss || self.side[from] != self.side[to] {
                continue;
            }
            self.seq += 1;
            self.wire.push(Reverse((self.now + LATENCY, self.seq, to, from, data)));
        }
    }

    fn announce_all_to(&mut self, seed: usize) {
        for i in 0..self.nodes.len() {
            if i != seed {
                let dst = self.ids[seed].clone();
                let now = self.time();
                self.nodes[i].as_mut().unwrap().announce(dst, now).unwrap();
                self.flush(i);
            }
        }
    }

    /// Runs until virtual time `until`.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.as_ref().map(|c| (c.next_timer(), i)))
                .min();
            let next_packet = self.wire.peek().map(|Reverse((t, ..))| *t);
            let next = match (next_timer.map(|(t, _)| t), next_packet) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(until),
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_packet == Some(next) {
                let Reverse((_, _, to, from, data)) = self.wire.pop().unwrap();
                let now = self.time();
                let from_key = self.ids[from].key;
                if let Some(core) = self.nodes[to].as_mut() {
                    let _ = core.handle_data(from_key, &format!("n{from}"), &data, now);
                    self.flush(to);
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.time();
                self.nodes[i].as_mut().unwrap().handle_timers(now);
                self.flush(i);
            }
        }
    }

    fn view(&self, observer: usize, subject: usize) -> Option<(MemberState, u64)> {
        let key = self.ids[subject].key;
        self.nodes[observer]
            .as_ref()?
            .members()
            .into_iter()
            .find(|m| m.id.key == key)
            .map(|m| (m.state, m.id.generation))
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some())
    }

    fn all_alive(&self) -> bool {
        self.live().all(|o| {
            self.live()
                .all(|s| matches!(self.view(o, s), Some((MemberState::Alive, _))))
        })
    }
}

#[test]
fn twenty_nodes_converge_through_one_seed() {
    let mut sim = Sim::new(20, 1);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(10));
    assert!(
        sim.all_alive(),
        "all 20 nodes see all 20 alive after 10 virtual seconds"
    );
}

#[test]
fn a_crashed_node_is_declared_down_by_all_within_the_bound() {
    let mut sim = Sim::new(20, 2);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(10));
    assert!(sim.all_alive());
    sim.nodes[7] = None;
    let crashed_at = sim.now;
    let mut detected = None;
    while sim.now < crashed_at + Duration::from_secs(20) {
        let t = sim.now + Duration::from_millis(100);
        sim.run_until(t);
        if sim
            .live()
            .all(|o| matches!(sim.view(o, 7), Some((MemberState::Down, _))))
        {
            detected = Some(sim.now - crashed_at);
            break;
        }
    }
    let detected = detected.expect("crash detected by everyone");
    println!("crash detected by all 19 survivors after {detected:?} (virtual)");
    // probe period + suspicion + dissemination; well inside 10 virtual seconds.
    assert!(detected < Duration::from_secs(10), "took {detected:?}");
}

#[test]
fn ten_percent_loss_causes_no_false_down() {
    let mut sim = Sim::new(20, 3);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(10));
    assert!(sim.all_alive());
    sim.loss = 0.10;
    let end = sim.now + Duration::from_secs(120);
    while sim.now < end {
        let t = sim.now + Duration::from_millis(250);
        sim.run_until(t);
        for o in 0..20 {
            for s in 0..20 {
                assert_ne!(
                    sim.view(o, s).map(|v| v.0),
                    Some(MemberState::Down),
                    "node {o} declared healthy node {s} down at {:?}",
                    sim.now
                );
            }
        }
    }
}

#[test]
fn a_restarted_node_returns_under_a_newer_generation() {
    let mut sim = Sim::new(8, 4);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(8));
    assert!(sim.all_alive());
    sim.nodes[5] = None;
    sim.run_until(sim.now + Duration::from_secs(10));
    assert!(
        (0..8)
            .filter(|i| *i != 5)
            .all(|o| sim.view(o, 5).map(|v| v.0) == Some(MemberState::Down))
    );

    let mut id = sim.ids[5].clone();
    id.generation = 2;
    let now = sim.time();
    sim.nodes[5] = Some(Core::new(id, "n5".into(), &config(), 99, now, Box::new(NoBroadcasts)));
    let dst = sim.ids[0].clone();
    sim.nodes[5].as_mut().unwrap().announce(dst, now).unwrap();
    sim.flush(5);
    sim.run_until(sim.now + Duration::from_secs(8));
    for o in 0..8 {
        assert_eq!(sim.view(o, 5), Some((MemberState::Alive, 2)), "as seen by node {o}");
    }
}

/// Splits an 8-node mesh in two for 20 s, heals it, and returns how long (virtual) until
/// every node sees every other alive again; then checks it stays that way.
fn heal_time(seed: u64) -> Duration {
    let mut sim = Sim::new(8, seed);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(8));
    assert!(sim.all_alive());
    sim.side = vec![0, 0, 0, 0, 1, 1, 1, 1];
    sim.run_until(sim.now + Duration::from_secs(20));
    for o in 0..8 {
        for s in 0..8 {
            let expected = if sim.side[o] == sim.side[s] {
                MemberState::Alive
            } else {
                MemberState::Down
            };
            assert_eq!(
                sim.view(o, s).map(|v| v.0),
                Some(expected),
                "seed {seed}: {o} sees {s} during the partition"
            );
        }
    }
    sim.side = vec![0; 8];
    let healed_at = sim.now;
    while !sim.all_alive() {
        assert!(
            sim.now < healed_at + Duration::from_secs(60),
            "seed {seed}: mesh did not heal"
        );
        let t = sim.now + Duration::from_millis(100);
        sim.run_until(t);
    }
    let took = sim.now - healed_at;
    // And it stays healed: no suspicion left dangling.
    sim.run_until(sim.now + Duration::from_secs(30));
    assert!(sim.all_alive(), "seed {seed}: not alive 30 s after healing");
    // Each side declared the other down, so nodes renewed their identities; foca keeps a
    // node's earlier identity as a down member, which the view must not list (the node would
    // appear twice) nor announce to (datagrams to its own address).
    for i in 0..8 {
        let own = sim.ids[i].key;
        let listed = sim.nodes[i]
            .as_ref()
            .unwrap()
            .members()
            .iter()
            .filter(|m| m.id.key == own)
            .count();
        assert_eq!(listed, 1, "seed {seed}: node {i} lists itself {listed} times");
    }
    assert_eq!(sim.sent_to_self, 0, "seed {seed}: datagrams to a node's own address");
    took
}

#[test]
fn a_healed_partition_becomes_one_mesh_again() {
    let took = heal_time(5);
    println!("healed in {took:?} (virtual)");
}

/// Nodes started together reach out to members they believe down at different moments of the
/// reconnect interval (20 s here), so some node reaches across soon after a heal. When every
/// node did it in the same instant, these meshes took 12 s or more to heal.
#[test]
fn nodes_started_together_reach_across_a_healed_partition_early() {
    for seed in [5, 6, 7, 8] {
        let took = heal_time(seed);
        assert!(
            took < Duration::from_secs(10),
            "seed {seed}: healed only after {took:?}"
        );
    }
}

/// Partitions about as long as the suspicion timeout used to leave a suspicion dangling
/// forever: an observer renewed its own identity (foca then drops its pending timers) while
/// it suspected someone. These seeds and durations reproduced it before the watchdog in
/// `Core::expire_suspicions` existed.
#[test]
fn short_partitions_leave_no_dangling_suspicion() {
    for (seed, partition_ms) in [(11, 2500), (14, 3500), (22, 4000), (32, 4000), (32, 5500), (39, 2500)] {
        let mut sim = Sim::new(6, seed);
        sim.announce_all_to(0);
        sim.run_until(Duration::from_secs(8));
        assert!(sim.all_alive());
        sim.side = vec![0, 0, 0, 1, 1, 1];
        sim.run_until(sim.now + Duration::from_millis(partition_ms));
        sim.side = vec![0; 6];
        sim.run_until(sim.now + Duration::from_secs(60));
        assert!(sim.all_alive(), "seed {seed}, partition {partition_ms} ms: not healed");
    }
}

/// A member whose certificate expired is cut by the nodes connected to it, which declare it
/// down at once (`Core::declare_expired`); the verdict reaches everyone by gossip, well before
/// probes alone would have found it out (probe timeout plus 3 s of suspicion).
#[test]
fn an_expired_member_declared_down_by_a_few_is_down_everywhere_by_gossip() {
    let mut sim = Sim::new(20, 9);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(10));
    assert!(sim.all_alive());
    // Every handshake refuses it from now on: it can reach no one.
    sim.side[7] = 1;
    let cut_at = sim.now;
    let key = sim.ids[7].key;
    for observer in [1, 2, 3] {
        let now = sim.time();
        let core = sim.nodes[observer].as_mut().unwrap();
        assert!(
            !core.declare_expired(key, 0, now),
            "a later run (a restart with a new certificate) is left alone"
        );
        assert!(core.declare_expired(key, 1, now));
        assert!(!core.declare_expired(key, 1, now), "once");
        sim.flush(observer);
    }
    let everyone_down = |sim: &Sim| {
        (0..20)
            .filter(|o| *o != 7)
            .all(|o| matches!(sim.view(o, 7), Some((MemberState::Down, _))))
    };
    while !everyone_down(&sim) {
        assert!(
            sim.now < cut_at + Duration::from_secs(1),
            "the verdict did not spread within 1 virtual second"
        );
        let t = sim.now + Duration::from_millis(10);
        sim.run_until(t);
    }
    println!("expired member down at all 19 after {:?} (virtual)", sim.now - cut_at);
    // And it stays down; the rest stays whole.
    sim.run_until(sim.now + Duration::from_secs(30));
    assert!(everyone_down(&sim));
    assert!((0..20).filter(|o| *o != 7).all(|o| {
        (0..20)
            .filter(|s| *s != 7)
            .all(|s| matches!(sim.view(o, s), Some((MemberState::Alive, _))))
    }));
}

/// foca keeps an earlier identity of this node as a down member when updates about it arrive
/// after a renewal (the mesh was still gossiping its verdict). The view listed the node twice
/// then, and the reconnect tick announced to it: datagrams to the node's own address (the
/// whole-mesh simulator saw 37 at 500 nodes).
#[test]
fn an_earlier_identity_of_this_node_is_neither_listed_nor_announced_to() {
    use foca::{Codec, Header, Member, Message};
    use shoal::membership::FocaCodec;

    let mut sim = Sim::new(2, 3);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(5));
    assert!(sim.all_alive());
    let (a0, b) = (sim.ids[1].clone(), sim.ids[0].clone());
    // B gossips that A's current identity is down, twice: A renews on the first and keeps the
    // second, about the identity it left, as a down member.
    let gossip = |dst: &NodeId, about: &NodeId| {
        let mut buf = Vec::new();
        let header = Header {
            src: b.clone(),
            src_incarnation: 0,
            dst: dst.clone(),
            message: Message::Gossip,
        };
        FocaCodec.encode_header(&header, &mut buf).unwrap();
        buf.extend_from_slice(&1u16.to_be_bytes());
        FocaCodec.encode_member(&Member::down(about.clone()), &mut buf).unwrap();
        buf
    };
    let now = sim.time();
    let a = sim.nodes[1].as_mut().unwrap();
    a.handle_full_data(b.key, "n0", &gossip(&a0, &a0), now).unwrap();
    let a1 = a.identity().clone();
    assert_eq!(a1.bump, a0.bump + 1, "renewed");
    a.handle_full_data(b.key, "n0", &gossip(&a1, &a0), now).unwrap();
    sim.flush(1);
    // Past two reconnect ticks, which announce to members believed down.
    sim.run_until(sim.now + Duration::from_secs(45));
    let listed = (sim.nodes[1].as_ref().unwrap().members().iter())
        .filter(|m| m.id.key == a0.key)
        .count();
    assert_eq!(listed, 1, "the node lists itself once");
    assert_eq!(sim.sent_to_self, 0, "no datagram to its own address");
    assert!(sim.all_alive());
}
