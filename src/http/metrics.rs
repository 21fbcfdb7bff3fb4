//! `GET /metrics`: Prometheus text format, read from every layer's counters.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiState;
use crate::metrics::{Exposition, JOB_STATUSES, STREAM_KINDS};
use crate::replication::policy::Reject;

#[utoipa::path(get, path = "/metrics", tag = "node", responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let mut e = Exposition::default();
    e.family("shoal_build_info", "gauge", "Version of this agent (always 1).")
        .sample("shoal_build_info", &[("version", crate::VERSION)], 1);
    let started = state
        .facts
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    e.single(
        "shoal_start_time_seconds",
        "gauge",
        "When this agent started, Unix seconds.",
        started,
    );

    let snapshot = state.membership.snapshot();
    let (alive, suspect, down) = snapshot.counts();
    e.family(
        "shoal_members",
        "gauge",
        "Members in this node's view, by state (itself included).",
    );
    for (s, n) in [("alive", alive), ("suspect", suspect), ("down", down)] {
        e.sample("shoal_members", &[("state", s)], n);
    }
    let ms = state.membership.stats();
    e.single(
        "shoal_swim_packets_handled_total",
        "counter",
        "SWIM packets handled.",
        ms.packets_handled.load(Relaxed),
    );
    e.single(
        "shoal_swim_packets_rejected_total",
        "counter",
        "SWIM packets refused (malformed or from the wrong sender).",
        ms.packets_rejected.load(Relaxed),
    );
    e.single(
        "shoal_broadcast_relays_skipped_total",
        "counter",
        "Received items not passed on because the broadcast backlog was full (anti-entropy carries them).",
        ms.relays_skipped.load(Relaxed),
    );

    let r = &state.replication;
    let (items, _) = r.summary();
    let files = r.files();
    e.single(
        "shoal_items",
        "gauge",
        "Replicated items held (records and files, deletes included).",
        items,
    );
    e.single(
        "shoal_files",
        "gauge",
        "Files held (current versions, deletes excluded).",
        files.iter().filter(|f| !f.meta.deleted).count(),
    );
    e.single(
        "shoal_file_bytes",
        "gauge",
        "Bytes of the files held.",
        files
            .iter()
            .filter(|f| !f.meta.deleted)
            .map(|f| f.meta.size)
            .sum::<u64>(),
    );
    let s = r.stats();
    e.family(
        "shoal_items_committed_total",
        "counter",
        "Items committed, by where they came from.",
    );
    for (origin, v) in [
        ("broadcast", &s.items_from_broadcast),
        ("sync", &s.items_from_sync),
        ("upload", &s.items_uploaded),
        ("local", &s.items_local),
    ] {
        e.sample("shoal_items_committed_total", &[("origin", origin)], v.load(Relaxed));
    }
    e.single(
        "shoal_anti_entropy_rounds_total",
        "counter",
        "Anti-entropy exchanges this node started.",
        s.syncs_started.load(Relaxed),
    );
    e.single(
        "shoal_anti_entropy_sessions_total",
        "counter",
        "Anti-entropy sessions finished, started by either side (their bytes: shoal_bytes_total with kind anti_entropy).",
        s.sync_sessions.load(Relaxed),
    );
    e.single(
        "shoal_anti_entropy_in_sync_total",
        "counter",
        "Anti-entropy exchanges that found both sides in sync.",
        s.syncs_in_sync.load(Relaxed),
    );
    e.single(
        "shoal_anti_entropy_declined_total",
        "counter",
        "Anti-entropy sessions peers opened that this node declined (serving its limit already).",
        s.syncs_declined.load(Relaxed),
    );
    e.single(
        "shoal_anti_entropy_repaired_items_total",
        "counter",
        "Items this node received through anti-entropy (missed by the push).",
        s.items_from_sync.load(Relaxed),
    );
    e.single(
        "shoal_anti_entropy_items_sent_total",
        "counter",
        "Items this node sent to peers through anti-entropy.",
        s.items_sent_by_sync.load(Relaxed),
    );
    e.family("shoal_rejected_total", "counter", "Items refused, by reason.");
    for reason in Reject::ALL {
        e.sample(
            "shoal_rejected_total",
            &[("reason", reason.label())],
            s.rejected(reason),
        );
    }
    e.family(
        "shoal_peer_refused_items",
        "gauge",
        "Items a peer offered that this node refuses (their [files] or policy differ), remembered so they are not exchanged again every round; by peer (key prefix), its node name and reason.",
    );
    for (peer, reason, n) in r.refused_items() {
        let node = r
            .record::<crate::replication::records::NodeInfo>(&peer, crate::replication::item::RecordKind::NodeInfo)
            .map(|i| i.name)
            .unwrap_or_default();
        e.sample(
            "shoal_peer_refused_items",
            &[("peer", &peer.short()), ("node", &node), ("reason", reason.label())],
            n,
        );
    }
    e.single(
        "shoal_items_dropped_busy_total",
        "counter",
        "Broadcast items dropped because replication was busy (anti-entropy repairs them).",
        s.items_dropped_busy.load(Relaxed),
    );
    e.single(
        "shoal_bodies_fetched_total",
        "counter",
        "Bodies fetched from peers.",
        s.bodies_fetched.load(Relaxed),
    );
    e.single(
        "shoal_body_fetch_failures_total",
        "counter",
        "Body fetches that failed (retried from other holders).",
        s.fetch_failures.load(Relaxed),
    );
    e.family(
        "shoal_transfer_bytes_total",
        "counter",
        "Body (file and record) bytes moved over streams.",
    );
    e.sample(
        "shoal_transfer_bytes_total",
        &[("direction", "received")],
        s.body_bytes_fetched.load(Relaxed),
    );
    e.sample(
        "shoal_transfer_bytes_total",
        &[("direction", "sent")],
        s.body_bytes_served.load(Relaxed),
    );

    let t = state.transport.stats();
    e.family(
        "shoal_messages_total",
        "counter",
        "Messages by kind and direction: SWIM datagrams, and streams peers opened by request.",
    );
    e.sample(
        "shoal_messages_total",
        &[("kind", "swim"), ("direction", "sent")],
        t.datagrams_sent.load(Relaxed),
    );
    e.sample(
        "shoal_messages_total",
        &[("kind", "swim"), ("direction", "received")],
        t.datagrams_received.load(Relaxed),
    );
    for (i, kind) in STREAM_KINDS.iter().enumerate() {
        e.sample(
            "shoal_messages_total",
            &[("kind", kind), ("direction", "received")],
            state.counters.streams_served[i].load(Relaxed),
        );
    }
    e.family("shoal_bytes_total", "counter", "Bytes by kind and direction.");
    e.sample(
        "shoal_bytes_total",
        &[("kind", "swim"), ("direction", "sent")],
        t.datagram_bytes_sent.load(Relaxed),
    );
    e.sample(
        "shoal_bytes_total",
        &[("kind", "swim"), ("direction", "received")],
        t.datagram_bytes_received.load(Relaxed),
    );
    e.sample(
        "shoal_bytes_total",
        &[("kind", "anti_entropy"), ("direction", "sent")],
        s.sync_bytes_sent.load(Relaxed),
    );
    e.sample(
        "shoal_bytes_total",
        &[("kind", "anti_entropy"), ("direction", "received")],
        s.sync_bytes_received.load(Relaxed),
    );
    let (udp_sent, udp_received) = state.transport.udp_bytes();
    e.sample(
        "shoal_bytes_total",
        &[("kind", "quic_udp"), ("direction", "sent")],
        udp_sent,
    );
    e.sample(
        "shoal_bytes_total",
        &[("kind", "quic_udp"), ("direction", "received")],
        udp_received,
    );
    e.single(
        "shoal_datagrams_dropped_total",
        "counter",
        "Datagrams dropped because the membership inbox was full.",
        t.datagrams_dropped.load(Relaxed),
    );
    e.single(
        "shoal_datagrams_malformed_total",
        "counter",
        "Datagrams refused as malformed.",
        t.datagrams_malformed.load(Relaxed),
    );
    e.single(
        "shoal_datagrams_sealed_total",
        "counter",
        "Datagrams sent sealed under a session key, without a connection.",
        t.datagrams_sealed.load(Relaxed),
    );
    e.single(
        "shoal_sealed_refused_total",
        "counter",
        "Sealed datagrams refused: unknown key, replayed, forged, malformed, or from a peer whose certificate expired.",
        t.sealed_refused.load(Relaxed),
    );
    e.single(
        "shoal_connections_opened_total",
        "counter",
        "QUIC connections established.",
        t.connections_opened.load(Relaxed),
    );
    // A gauge next to the counter: the counter says how often connections were made, this says
    // what the node holds now, which is what memory and keep-alive traffic follow.
    e.single(
        "shoal_connections_open",
        "gauge",
        "QUIC connections currently in the transport's pool (both directions; both of a pair dialled at once count until one closes).",
        state.transport.connection_count(),
    );
    e.single(
        "shoal_dial_failures_total",
        "counter",
        "Dials that failed.",
        t.dial_failures.load(Relaxed),
    );
    e.single(
        "shoal_handshake_refusals_total",
        "counter",
        "TLS handshakes refused by admission.",
        t.refusals.load(Relaxed),
    );

    let c = &state.counters;
    let not_after = c.certificate_not_after.load(Relaxed);
    if not_after > 0 {
        e.single(
            "shoal_certificate_expiry_timestamp_seconds",
            "gauge",
            "End of validity of this node's network certificate, Unix seconds (peers refuse it after).",
            not_after,
        );
    }
    e.family(
        "shoal_job_runs_total",
        "counter",
        "Finished job runs on this node, by status.",
    );
    for (i, status) in JOB_STATUSES.iter().enumerate() {
        e.sample(
            "shoal_job_runs_total",
            &[("status", status.as_str())],
            c.job_runs[i].load(Relaxed),
        );
    }
    e.family(
        "shoal_webhook_deliveries_total",
        "counter",
        "Webhook deliveries by this node, by result.",
    );
    e.sample(
        "shoal_webhook_deliveries_total",
        &[("result", "delivered")],
        c.webhook_delivered.load(Relaxed),
    );
    e.sample(
        "shoal_webhook_deliveries_total",
        &[("result", "failed")],
        c.webhook_failed.load(Relaxed),
    );
    e.family(
        "shoal_config_reloads_total",
        "counter",
        "Configuration reloads, by result.",
    );
    e.sample(
        "shoal_config_reloads_total",
        &[("result", "applied")],
        c.reloads_applied.load(Relaxed),
    );
    e.sample(
        "shoal_config_reloads_total",
        &[("result", "refused")],
        c.reloads_refused.load(Relaxed),
    );
    e.family(
        "shoal_http_refused_total",
        "counter",
        "HTTP requests refused before a handler ran, by reason (host_not_allowed, unauthorized, unsupported_media_type).",
    );
    for reason in super::guard::Refusal::ALL {
        e.sample(
            "shoal_http_refused_total",
            &[("reason", reason.label())],
            state.refusals.count(reason),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        e.finish(),
    )
}
