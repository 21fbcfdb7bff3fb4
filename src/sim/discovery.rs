//! Node records and discovery in the simulation.
//!
//! As the agent does at start, every run publishes its node record (`RecordKind::NodeInfo`:
//! address and generation) and broadcasts it. Each node record another node commits, by
//! broadcast or anti-entropy, is handed to that node's [`Discovery`] (the decision the agent's
//! discovery task drives, shared as it is), and when a member's grace ends while membership
//! still does not know it, the node announces itself to it through its membership core. The
//! agent's task looks every [`DISCOVERY_TICK`]; the simulator looks only when some grace
//! ends, at most once a tick, which announces at the same ticks' worth of times without an
//! event per node per second.

use crate::discover::DISCOVERY_TICK;
use crate::membership::NodeId;
use crate::replication::item::RecordKind;
use crate::replication::records::NodeInfo;

use super::engine::{Event, Sim};
use super::node::now_at;
use super::records;

impl Sim {
    /// Publishes node `i`'s node record for its current run and broadcasts it.
    pub(super) fn publish_node_info(&mut self, i: usize) {
        let now = self.now();
        let node = &self.nodes[i];
        let info = NodeInfo {
            name: node.name.clone(),
            version: crate::VERSION.to_string(),
            addr: node.id.addr,
            generation: node.id.generation,
            started_at_ms: records::wall_ms(now),
            webhooks: Vec::new(),
            network_cert: None,
        };
        let content = crate::codec::encode(&info).expect("sim: node record encodes");
        let wire = records::node_record(&node.secret, RecordKind::NodeInfo, &content, now);
        self.publish_wire(i, wire);
    }

    /// Hands the node records node `i` committed since the last call to its discovery, and
    /// queues a look for when the first grace ends.
    pub(super) fn note_node_records(&mut self, i: usize) {
        let now = self.now();
        let node = &mut self.nodes[i];
        let own = node.id.key;
        let Some(run) = node.run.as_mut() else { return };
        let committed = std::mem::take(&mut run.replica.store().node_infos);
        for key in committed.into_iter().filter(|k| *k != own) {
            run.discovery.record_committed(key, now);
        }
        if !run.discover_queued {
            self.queue_discovery(i, now);
        }
    }

    /// Queues node `i`'s next look at its discovery, when the first grace ends but not before
    /// `earliest`, if any member is waiting.
    fn queue_discovery(&mut self, i: usize, earliest: std::time::Duration) {
        let epoch = self.nodes[i].epoch;
        if let Some(run) = self.nodes[i].run.as_mut()
            && let Some(at) = run.discovery.next_due()
        {
            run.discover_queued = true;
            self.push(at.max(earliest), Event::Discover { node: i as u32, epoch });
        }
    }

    /// Node `i`'s discovery looks at the members whose grace has ended: each that membership
    /// does not know is announced to at the address of its record.
    pub(super) fn discover(&mut self, i: usize) {
        let now = self.now();
        let Some(run) = self.nodes[i].run.as_mut() else { return };
        run.discover_queued = false;
        let core = &run.core;
        let due = run.discovery.due(now, |k| core.member(k).is_some());
        for key in due {
            let Some(info) = run.replica.store().node_info(key) else {
                continue;
            };
            let id = NodeId {
                key,
                addr: info.addr,
                generation: info.generation,
                bump: 0,
            };
            // Refused only for this node's own address; nothing to retry.
            let _ = run.core.announce(id, now_at(now));
        }
        self.queue_discovery(i, now + DISCOVERY_TICK);
        self.after_step(i, false);
    }
}
