//! This node's own network certificate: its end of validity as a metric, an event a week and
//! a day before it, and an error (and event) once it has passed.
//!
//! One task follows the certificate the node presents (a `watch` the reload task updates on
//! renewal). It sleeps until the next threshold, waking at least every [`MAX_SLEEP`] to follow
//! the wall clock. Each stage is raised once per certificate: a stage already in the event log
//! for this certificate (an earlier run) is not raised again, and a node that starts inside
//! the last day raises only the tighter stage. A renewed certificate starts over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, warn};

use crate::events::{Event, EventKind, EventLog, MAX_EVENTS, event_id};
use crate::identity::{NodeCertificate, PublicKey, unix_now};

/// Seconds before the end of validity of the first warning.
pub const WEEK_BEFORE: u64 = 7 * 24 * 3600;
/// Seconds before the end of validity of the second warning.
pub const DAY_BEFORE: u64 = 24 * 3600;
/// Longest sleep before looking at the wall clock again (the sleep runs on the monotonic
/// clock, which stops during a suspend).
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// How near its end a certificate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// It ends within 7 days.
    Week,
    /// It ends within a day.
    Day,
    /// It has ended: peers refuse this node.
    Expired,
}

impl Stage {
    const ALL: [Stage; 3] = [Stage::Week, Stage::Day, Stage::Expired];

    /// First Unix second of this stage for a certificate valid through `not_after`.
    fn starts(self, not_after: u64) -> u64 {
        match self {
            Stage::Week => not_after.saturating_sub(WEEK_BEFORE),
            Stage::Day => not_after.saturating_sub(DAY_BEFORE),
            Stage::Expired => not_after.saturating_add(1),
        }
    }

    /// Stable label, part of the event id and detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Week => "expires within 7 days",
            Stage::Day => "expires within 1 day",
            Stage::Expired => "expired",
        }
    }
}

/// What the task does for a certificate valid through `not_after` at Unix second `now`, when
/// `raised` is the tightest stage already raised for it: the stage to raise now (the tightest
/// one reached, if tighter than `raised`), and the Unix second of the next stage (`None` once
/// expired).
pub fn due(not_after: u64, now: u64, raised: Option<Stage>) -> (Option<Stage>, Option<u64>) {
    let reached = Stage::ALL.into_iter().rev().find(|s| now >= s.starts(not_after));
    let raise = reached.filter(|r| raised.is_none_or(|done| *r > done));
    let next = Stage::ALL
        .into_iter()
        .find(|s| now < s.starts(not_after))
        .map(|s| s.starts(not_after));
    (raise, next)
}

/// Starts the task. `cert` is the certificate this node presents (`None` in an allowlist
/// mesh); `expiry` is the gauge it keeps (0 without a certificate).
pub fn spawn(
    mut cert: watch::Receiver<Option<NodeCertificate>>,
    events: Arc<EventLog>,
    key: PublicKey,
    expiry: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut raised: Option<Stage> = None;
        let mut current: Option<NodeCertificate> = None;
        loop {
            let latest = cert.borrow_and_update().clone();
            if latest != current {
                raised = None;
                current = latest;
            }
            expiry.store(current.as_ref().map_or(0, |c| c.not_after), Ordering::Relaxed);
            let mut sleep = MAX_SLEEP;
            if let Some(c) = &current {
                let now = unix_now();
                let (raise, next) = due(c.not_after, now, raised);
                if let Some(stage) = raise {
                    raise_stage(&events, key, c, stage);
                    raised = Some(stage);
                }
                if let Some(next) = next {
                    sleep = sleep.min(Duration::from_secs(next.saturating_sub(now)));
                }
            }
            tokio::select! {
                changed = cert.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(sleep) => {}
            }
        }
    })
}

/// Logs `stage` and appends its event, unless an earlier run already did for this certificate.
fn raise_stage(events: &EventLog, key: PublicKey, cert: &NodeCertificate, stage: Stage) {
    let at = crate::time::rfc3339_ms(cert.not_after.saturating_mul(1000));
    match stage {
        Stage::Expired => error!(
            not_after = %at,
            "this node's certificate has expired: peers refuse it. Issue a new one with `shoal cert sign` and reload"
        ),
        _ => {
            warn!(not_after = %at, "this node's certificate {}; renew it with `shoal cert sign` and reload", stage.as_str())
        }
    }
    let kind = EventKind::CertificateExpiring;
    let id = event_id(kind, &key, &[&cert.to_bytes(), stage.as_str().as_bytes()]);
    if events.recent(0, MAX_EVENTS).iter().any(|e| e.id == id) {
        return;
    }
    events.append(Event {
        seq: 0,
        id,
        at_ms: crate::time::unix_ms(),
        kind,
        node: key,
        node_name: Some(cert.name.clone()),
        check: None,
        detail: Some(format!("certificate {} (valid until {at})", stage.as_str())),
        version: cert.not_after,
        schedule: None,
        job: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: u64 = 1_000_000_000;

    #[test]
    fn stages_are_raised_in_order_and_once() {
        // Far from the end: nothing; next look at the week mark.
        assert_eq!(due(END, END - WEEK_BEFORE - 1, None), (None, Some(END - WEEK_BEFORE)));
        // At the week mark: the week warning, next the day mark.
        assert_eq!(
            due(END, END - WEEK_BEFORE, None),
            (Some(Stage::Week), Some(END - DAY_BEFORE))
        );
        // Raised already: not again.
        assert_eq!(
            due(END, END - WEEK_BEFORE + 5, Some(Stage::Week)),
            (None, Some(END - DAY_BEFORE))
        );
        assert_eq!(
            due(END, END - DAY_BEFORE, Some(Stage::Week)),
            (Some(Stage::Day), Some(END + 1))
        );
        // Valid through END (inclusive): expired from END + 1.
        assert_eq!(due(END, END, Some(Stage::Day)), (None, Some(END + 1)));
        assert_eq!(due(END, END + 1, Some(Stage::Day)), (Some(Stage::Expired), None));
        assert_eq!(due(END, END + 100, Some(Stage::Expired)), (None, None));
    }

    #[test]
    fn a_late_start_raises_only_the_tightest_stage() {
        assert_eq!(due(END, END - 60, None), (Some(Stage::Day), Some(END + 1)));
        assert_eq!(due(END, END + 60, None), (Some(Stage::Expired), None));
        // A certificate shorter than a week is inside the week stage from its start.
        assert_eq!(due(100, 0, None), (Some(Stage::Day), Some(101)));
    }

    #[tokio::test]
    async fn events_follow_the_certificate_and_renewal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let log = EventLog::open(&store).unwrap();
        let net = crate::identity::SecretKey::generate();
        let node = crate::identity::SecretKey::generate().public();
        let now = unix_now();
        let issue = |not_after| NodeCertificate::issue(&net, node, "n", now - 10, not_after).unwrap();
        let (tx, rx) = watch::channel(Some(issue(now + 3600)));
        let gauge = Arc::new(AtomicU64::new(0));
        let task = spawn(rx, log.clone(), node, gauge.clone());
        let stages =
            |log: &EventLog| -> Vec<String> { log.recent(0, 100).into_iter().filter_map(|e| e.detail).collect() };
        let wait = |want: usize| {
            let log = log.clone();
            async move {
                for _ in 0..200 {
                    if log.recent(0, 100).len() >= want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait(1).await;
        assert_eq!(gauge.load(Ordering::Relaxed), now + 3600);
        assert_eq!(stages(&log).len(), 1);
        assert!(stages(&log)[0].contains("within 1 day"));

        // Renewed for only 3 days: a new certificate, so its (looser) stage is raised too.
        let renewed = issue(now + 3 * DAY_BEFORE);
        tx.send_replace(Some(renewed.clone()));
        wait(2).await;
        assert_eq!(gauge.load(Ordering::Relaxed), now + 3 * DAY_BEFORE);
        let seen = stages(&log);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[1].contains("within 7 days"));

        // The same certificate again (a restart): nothing new.
        task.abort();
        let (_tx2, rx2) = watch::channel(Some(renewed));
        let again = spawn(rx2, log.clone(), node, gauge.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(stages(&log).len(), 2, "raised once per certificate");
        again.abort();
    }
}
