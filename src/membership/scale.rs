//! How SWIM's dissemination and suspicion follow the size of the mesh.
//!
//! An update (a join, a suspicion, its refutation) needs about log N rounds of gossip to reach
//! every member. Two settings must grow with that, or a larger mesh misbehaves:
//!
//! - **Transmissions.** Each member passes an update on a fixed number of times; a given
//!   member misses it with probability about e^-T, so *some* member of n misses it with about
//!   n·e^-T. Keeping that constant needs T to grow by ln(n / n₀).
//! - **Suspicion.** A suspected member must hear of the suspicion and its refutation must
//!   reach every member before their timers run out. With a fixed 2.5 s the whole-mesh
//!   simulator, with 5 % of nodes handling input 1–2 s late and 5 % loss, saw 88 down verdicts
//!   against running nodes at 200 nodes and 11,471 at 500 (none at 50). memberlist and
//!   Lifeguard scale the suspicion timeout by log10 N for the same reason.
//!
//! Both are recomputed whenever the number of members foca holds active changes, and given to
//! foca with `set_config` (which allows changing exactly these).

use std::time::Duration;

/// Transmissions of every update in a mesh of up to [`BASE_MESH`] members.
pub const BASE_TRANSMISSIONS: u8 = 12;
/// The mesh size [`BASE_TRANSMISSIONS`] is chosen for: some member misses an update with
/// probability about 64·e^-12 = 0.04 % (foca's default for 64, 7, gave 5.8 %, which the mesh
/// bench saw as one small record in 20 reaching its last member only through anti-entropy).
pub const BASE_MESH: usize = 64;
/// Upper bound of transmissions (a mesh of about 10⁸ members), so a bogus member count cannot
/// make every packet carry one update forever.
pub const MAX_TRANSMISSIONS: u8 = 32;
/// Members up to which the configured suspicion timeout is used as it is (log10 of it is 1).
pub const SUSPICION_BASE_MESH: usize = 10;

/// Transmissions of each update for a mesh of `members` (this node included).
pub fn transmissions(members: usize) -> u8 {
    if members <= BASE_MESH {
        return BASE_TRANSMISSIONS;
    }
    let extra = (members as f64 / BASE_MESH as f64).ln().ceil();
    (f64::from(BASE_TRANSMISSIONS) + extra).min(f64::from(MAX_TRANSMISSIONS)) as u8
}

/// The suspicion timeout for a mesh of `members` (this node included), from the configured
/// one (`[cluster] suspect_timeout`, for meshes of up to [`SUSPICION_BASE_MESH`]).
pub fn suspect_timeout(configured: Duration, members: usize) -> Duration {
    let factor = (members.max(SUSPICION_BASE_MESH) as f64).log10();
    configured.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_meshes_keep_the_configured_settings() {
        let base = Duration::from_millis(2500);
        for n in [1, 2, 5, 10] {
            assert_eq!(suspect_timeout(base, n), base);
        }
        assert_eq!(transmissions(3), BASE_TRANSMISSIONS);
        assert_eq!(transmissions(BASE_MESH), BASE_TRANSMISSIONS);
    }

    #[test]
    fn larger_meshes_wait_and_repeat_longer_by_log_n() {
        let base = Duration::from_millis(2500);
        assert_eq!(suspect_timeout(base, 100), Duration::from_secs(5));
        assert_eq!(suspect_timeout(base, 1000), Duration::from_millis(7500));
        assert_eq!(suspect_timeout(base, 10_000), Duration::from_secs(10));
        assert_eq!(transmissions(1000), 15);
        assert_eq!(transmissions(10_000), 18);
        // From 1,000 to 10,000 each update costs 18/15 = 1.2× the packets.
        assert_eq!(transmissions(usize::MAX), MAX_TRANSMISSIONS);
    }
}
