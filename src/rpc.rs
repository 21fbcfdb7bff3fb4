//! Requests peers make on QUIC streams, and the dispatcher that serves them.
//!
//! A stream opens with one [`Request`] frame (see [`crate::replication::protocol`] for the
//! framing); what follows depends on the request: reconciliation turns, a body, or a one-frame
//! [`ConfirmReply`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::identity::PublicKey;
use crate::replication::item::RecordKind;
use crate::replication::protocol::{ProtocolError, Turn, read_frame, read_frame_sized, write_frame};
use crate::replication::sync::Syncer;
use crate::schedules::jobs::{Job, JobLog, JobStore};
use crate::transport::{HandlerFuture, PeerInfo, StreamHandler, Target, Transport, TransportError};

/// First frame of every stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start a reconciliation with this opening turn.
    Reconcile(Turn),
    /// Send the body with this hash.
    GetBody {
        /// blake3 of the body.
        hash: [u8; 32],
    },
    /// Does your view agree with this claim? (Alerts are only sent when two nodes agree.)
    Confirm(Claim),
    /// Send your job `seq` (and its log, if asked). Answered with one [`JobReply`].
    Job {
        /// The job's seq on the responder.
        seq: u64,
        /// Whether to include the output.
        log: bool,
    },
}

/// Answer to [`Request::Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReply {
    /// The job, if the responder has it.
    pub job: Option<Job>,
    /// Its output, if asked for and kept.
    pub log: Option<JobLog>,
}

/// Something a node believes about another, that a peer can check against its own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// `node`'s identity `identity` (`generation << 16 | renewals`) is down.
    MemberDown {
        /// The node.
        node: PublicKey,
        /// Its identity.
        identity: u64,
    },
    /// `node` is alive with identity `identity` or newer.
    MemberUp {
        /// The node.
        node: PublicKey,
        /// Its identity.
        identity: u64,
    },
    /// `node`'s record of `kind` (health report, schedules) of version `version` or newer is
    /// here.
    Record {
        /// The node.
        node: PublicKey,
        /// Which record.
        kind: RecordKind,
        /// The record's version.
        version: u64,
    },
}

/// Answer to [`Request::Confirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmReply {
    /// Whether the responder's state agrees.
    pub agree: bool,
}

/// Checks claims against this node's state.
pub trait Confirmer: Send + Sync + 'static {
    /// Whether this node agrees with `claim`.
    fn confirm(&self, claim: &Claim) -> bool;
}

/// Serves every stream a peer opens.
#[derive(Clone)]
pub struct Dispatcher {
    sync: Syncer,
    confirmer: Arc<dyn Confirmer>,
    jobs: JobStore,
    counters: Arc<crate::metrics::Counters>,
}

impl Dispatcher {
    /// A dispatcher over replication's `sync`, a `confirmer` and the job history.
    pub fn new(
        sync: Syncer,
        confirmer: Arc<dyn Confirmer>,
        jobs: JobStore,
        counters: Arc<crate::metrics::Counters>,
    ) -> Dispatcher {
        Dispatcher {
            sync,
            confirmer,
            jobs,
            counters,
        }
    }

    async fn serve(self, peer: PeerInfo, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let request = read_frame_sized::<Request>(&mut recv).await;
        if let Ok(Some((r, _))) = &request {
            self.counters.stream(match r {
                Request::Reconcile(_) => 0,
                Request::GetBody { .. } => 1,
                Request::Confirm(_) => 2,
                Request::Job { .. } => 3,
            });
        }
        let result = match request {
            Ok(Some((Request::Reconcile(turn), size))) => {
                self.sync
                    .serve_reconcile(peer.key, &mut send, &mut recv, turn, size)
                    .await
            }
            Ok(Some((Request::GetBody { hash }, _))) => self.sync.serve_body(&mut send, hash).await,
            Ok(Some((Request::Confirm(claim), _))) => {
                let agree = self.confirmer.confirm(&claim);
                async {
                    write_frame(&mut send, &ConfirmReply { agree }).await?;
                    send.finish()?;
                    Ok(())
                }
                .await
            }
            Ok(Some((Request::Job { seq, log }, _))) => {
                let reply = JobReply {
                    job: self.jobs.get(seq),
                    log: if log { self.jobs.log(seq) } else { None },
                };
                async {
                    write_frame(&mut send, &reply).await?;
                    send.finish()?;
                    Ok(())
                }
                .await
            }
            Ok(None) => Err(ProtocolError::Violation("empty stream")),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            debug!(peer = %peer.key.short(), error = %e, "stream failed");
            let _ = send.reset(2u32.into());
        }
    }
}

impl StreamHandler for Dispatcher {
    fn handle(&self, peer: PeerInfo, send: quinn::SendStream, recv: quinn::RecvStream) -> HandlerFuture {
        Box::pin(self.clone().serve(peer, send, recv))
    }
}

/// Why asking a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No stream to the peer.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The exchange failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Asks `peer` whether it agrees with `claim`.
pub async fn ask(
    transport: &Transport,
    peer: PublicKey,
    target: Option<Target>,
    claim: Claim,
) -> Result<bool, AskError> {
    let (mut send, mut recv) = transport.open_bi(peer, target).await?;
    write_frame(&mut send, &Request::Confirm(claim)).await?;
    send.finish().map_err(ProtocolError::from)?;
    let reply: ConfirmReply = read_frame(&mut recv)
        .await?
        .ok_or(ProtocolError::Violation("no reply"))?;
    Ok(reply.agree)
}

/// Asks `peer` for its job `seq`, with the log if `log`.
pub async fn fetch_job(
    transport: &Transport,
    peer: PublicKey,
    target: Option<Target>,
    seq: u64,
    log: bool,
) -> Result<JobReply, AskError> {
    let (mut send, mut recv) = transport.open_bi(peer, target).await?;
    write_frame(&mut send, &Request::Job { seq, log }).await?;
    send.finish().map_err(ProtocolError::from)?;
    Ok(read_frame(&mut recv)
        .await?
        .ok_or(ProtocolError::Violation("no reply"))?)
}
