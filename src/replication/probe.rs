//! In-sync probes: an anti-entropy round that finds both sides equal costs one datagram each
//! way instead of a stream.
//!
//! Almost every periodic round finds the two sides in sync, and a stream needs a connection:
//! with membership on sealed datagrams (`transport::sealed`), a round to a peer nobody else
//! talks to would cost a whole handshake (about 7 KB) to learn "nothing to do". So the
//! initiator first sends its opening summary (`reconcile::open`) as a datagram; the peer
//! answers whether its own view matches. Only a difference, a lost datagram, or an opening too
//! large for a datagram leads to the stream session, which repairs as before. The answer comes
//! over the same authenticated channels as membership, from the peer asked, with the nonce
//! asked; anything else is ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::Shared;
use super::reconcile::{self, Range};
use crate::identity::PublicKey;
use crate::membership::MembershipHandle;
use crate::transport::{Channel, Inbound, Target, Transport};

/// Largest probe sent as a datagram; a larger opening goes straight to a stream.
pub const MAX_PROBE_BYTES: usize = 1024;
/// How long the initiator waits for the answer before opening a stream anyway.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes (asked and answered) waiting for the serving task; beyond this they are dropped.
pub const PROBE_INBOX_CAPACITY: usize = 256;
/// Probes this node may have waiting for an answer at once (sessions are fewer still).
const MAX_PENDING_PROBES: usize = 64;

/// A probe datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// "Here is my opening summary; are we equal?"
    Ask {
        /// Matches the answer to the question.
        nonce: u64,
        /// The asker's opening ranges, as the stream session would send them.
        ranges: Vec<Range>,
    },
    /// The answer.
    Answer {
        /// The nonce asked with.
        nonce: u64,
        /// Whether the two views are equal.
        in_sync: bool,
    },
}

/// Probes waiting for their answer, by nonce.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<u64, (PublicKey, oneshot::Sender<bool>)>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (PublicKey, oneshot::Sender<bool>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks `peer` whether it is in sync with us. `Some(answer)`, or `None` when the opening
/// does not fit a datagram or no answer came within [`PROBE_TIMEOUT`].
pub(crate) async fn ask(shared: &Shared, transport: &Transport, peer: PublicKey, target: Target) -> Option<bool> {
    let overlay = shared.refusals().overlay(&peer);
    let ranges = reconcile::open(&reconcile::Overlay::new(&shared.index(), &overlay));
    let nonce = rand::random::<u64>();
    let bytes = crate::codec::encode(&Probe::Ask { nonce, ranges }).ok()?;
    if bytes.len() > MAX_PROBE_BYTES {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    {
        let mut waiting = shared.probes.lock();
        if waiting.len() >= MAX_PENDING_PROBES {
            return None;
        }
        waiting.insert(nonce, (peer, tx));
    }
    transport.send(target, Channel::SyncProbe, &bytes);
    let answer = tokio::time::timeout(PROBE_TIMEOUT, rx).await.ok().and_then(Result::ok);
    shared.probes.lock().remove(&nonce);
    answer
}

/// Serves the probes peers send and completes the ones this node asked.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    transport: Transport,
    membership: MembershipHandle,
    mut inbox: mpsc::Receiver<Inbound>,
) {
    while let Some(msg) = inbox.recv().await {
        let Ok(probe) = crate::codec::decode_exact::<Probe>(&msg.data, MAX_PROBE_BYTES) else {
            debug!(peer = %msg.from.short(), "malformed sync probe");
            continue;
        };
        match probe {
            Probe::Ask { nonce, ranges } => {
                let in_sync = in_sync_with(&shared, &msg.from, &ranges);
                let Some(target) = target_of(&membership, &msg.from) else {
                    continue;
                };
                if let Ok(bytes) = crate::codec::encode(&Probe::Answer { nonce, in_sync }) {
                    transport.send(target, Channel::SyncProbe, &bytes);
                }
            }
            Probe::Answer { nonce, in_sync } => {
                let mut waiting = shared.probes.lock();
                // Only the peer asked can answer.
                if waiting.get(&nonce).is_some_and(|(peer, _)| *peer == msg.from)
                    && let Some((_, tx)) = waiting.remove(&nonce)
                {
                    let _ = tx.send(in_sync);
                }
            }
        }
    }
}

/// Whether `ranges` (the opening of `peer`) match our view as `peer` is shown it.
fn in_sync_with(shared: &Shared, peer: &PublicKey, ranges: &[Range]) -> bool {
    let overlay = shared.refusals().overlay(peer);
    let index = shared.index();
    let view = reconcile::Overlay::new(&index, &overlay);
    let step = reconcile::step(&view, ranges);
    step.is_empty() && step.unheld.is_empty()
}

/// Where to answer `key`: the run membership lists.
fn target_of(membership: &MembershipHandle, key: &PublicKey) -> Option<Target> {
    membership
        .snapshot()
        .members
        .iter()
        .find(|m| m.id.key == *key && !m.local)
        .map(|m| m.id.target())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_roundtrip_and_an_empty_view_fits_a_datagram() {
        for p in [
            Probe::Ask {
                nonce: 7,
                ranges: reconcile::open(&reconcile::Overlay::new(
                    &super::super::index::Index::default(),
                    &Default::default(),
                )),
            },
            Probe::Answer {
                nonce: 7,
                in_sync: true,
            },
        ] {
            let bytes = crate::codec::encode(&p).unwrap();
            assert!(bytes.len() <= MAX_PROBE_BYTES);
            assert_eq!(crate::codec::decode_exact::<Probe>(&bytes, MAX_PROBE_BYTES).unwrap(), p);
        }
        assert!(crate::codec::decode_exact::<Probe>(b"\xff\xff\xff", MAX_PROBE_BYTES).is_err());
    }
}
