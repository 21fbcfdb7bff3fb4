//! Facts about this machine for the health report. Linux reads `/proc`; elsewhere the fields
//! are absent rather than wrong.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Memory of the machine and of this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Memory {
    /// Total physical memory, bytes.
    pub total: u64,
    /// Memory available to new work (MemAvailable), bytes.
    pub available: u64,
    /// Resident memory of this agent, bytes.
    pub agent_rss: u64,
}

/// Space of the filesystem holding the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disk {
    /// Size, bytes.
    pub total: u64,
    /// Free for unprivileged use, bytes.
    pub free: u64,
}

/// 1, 5 and 15 minute load averages.
pub fn load() -> Option<[f32; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<f32>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Machine and agent memory.
pub fn memory() -> Option<Memory> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(Memory {
        total: field("MemTotal:")?,
        available: field("MemAvailable:")?,
        agent_rss: pages * 4096,
    })
}

/// Space on the filesystem of `dir`.
pub fn disk(dir: &Path) -> Option<Disk> {
    Some(Disk {
        total: fs2::total_space(dir).ok()?,
        free: fs2::available_space(dir).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let l = load().expect("loadavg on Linux");
        assert!(l.iter().all(|v| *v >= 0.0));
        let m = memory().expect("meminfo on Linux");
        assert!(m.total > 0 && m.available <= m.total && m.agent_rss > 0);
        let d = disk(Path::new("/")).expect("statvfs");
        assert!(d.total > 0 && d.free <= d.total);
    }
}
