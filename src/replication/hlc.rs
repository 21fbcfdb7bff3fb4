//! Hybrid logical clock versions: `unix_ms << 16 | counter`.
//!
//! Versions issued by one clock strictly increase, stay close to wall-clock time, and move
//! past every version the clock has observed, so a write made after seeing another write
//! always outranks it even when clocks disagree a little.

/// Bits of the logical counter.
const COUNTER_BITS: u32 = 16;

/// The wall-clock milliseconds a version was issued at.
pub fn physical_ms(version: u64) -> u64 {
    version >> COUNTER_BITS
}

/// The smallest version at or after `ms`.
pub fn from_ms(ms: u64) -> u64 {
    ms << COUNTER_BITS
}

/// The version to use for a new write at `now_ms` when the current one is `current`.
pub fn next(now_ms: u64, current: u64) -> u64 {
    from_ms(now_ms).max(current.saturating_add(1))
}

/// A clock that issues versions.
#[derive(Debug, Clone, Default)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A clock that will issue versions above `floor`.
    pub fn new(floor: u64) -> Hlc {
        Hlc { last: floor }
    }

    /// A new version, above everything issued or observed so far.
    pub fn issue(&mut self, now_ms: u64) -> u64 {
        self.last = next(now_ms, self.last);
        self.last
    }

    /// Moves the clock past a version seen elsewhere.
    pub fn observe(&mut self, version: u64) {
        self.last = self.last.max(version);
    }

    /// The highest version issued or observed.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_time_stands_still_or_goes_back() {
        let mut c = Hlc::default();
        let a = c.issue(1000);
        let b = c.issue(1000);
        let d = c.issue(900);
        assert!(a < b && b < d);
        assert_eq!(physical_ms(a), 1000);
        c.observe(from_ms(5000));
        assert!(c.issue(1000) > from_ms(5000));
    }
}
