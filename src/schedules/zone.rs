//! Named IANA time zones for schedules, read from the machine's time zone database.
//!
//! Zones come from the system's tzdata (`TZDIR`, `/usr/share/zoneinfo`, `/etc/zoneinfo`) as
//! cron reads them, so an operating-system update of the rules reaches schedules without a new
//! shoal; a machine without tzdata falls back to a copy bundled into the binary as one
//! compressed blob. The alternative, a zone table compiled into Rust statics (`chrono-tz`),
//! holds a pointer per transition: about 28,000 relocations that every agent process applies
//! at start, some 1.7 MiB of its resident memory whether or not it has a schedule.
//!
//! [`NamedZone`] adapts such a zone to `chrono::TimeZone`, which `croner` computes in.

use std::fmt;

use chrono::{FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};
use jiff::tz::{AmbiguousOffset, TimeZoneDatabase};

/// The longest zone name accepted (the longest IANA name is 32 bytes).
pub const MAX_ZONE_NAME: usize = 64;

/// A named IANA zone, e.g. `Europe/Berlin` or `UTC`.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedZone {
    tz: jiff::tz::TimeZone,
}

impl NamedZone {
    /// Looks `name` up in the machine's time zone database (or the bundled copy where the
    /// machine has none). `None` for a name that is not a zone there.
    pub fn lookup(name: &str) -> Option<NamedZone> {
        Self::lookup_in(jiff::tz::db(), name)
    }

    /// Looks `name` up in `db`.
    pub fn lookup_in(db: &TimeZoneDatabase, name: &str) -> Option<NamedZone> {
        // Names are plain relative paths below the database root (no empty part, so neither
        // empty nor absolute); refuse anything else before it reaches the lookup.
        let plain = name.len() <= MAX_ZONE_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
            && name.split('/').all(|part| !part.is_empty());
        if !plain {
            return None;
        }
        if name.eq_ignore_ascii_case("UTC") {
            return Some(NamedZone::utc());
        }
        let tz = db.get(name).ok()?;
        // A zone always has its name here; a nameless one would not display.
        tz.iana_name()?;
        Some(NamedZone { tz })
    }

    /// UTC, which needs no database.
    pub fn utc() -> NamedZone {
        NamedZone {
            tz: jiff::tz::TimeZone::UTC,
        }
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }

    fn offset(&self, seconds: i32) -> ZoneOffset {
        ZoneOffset {
            zone: self.clone(),
            // tzdata offsets stay within ±15 h; chrono's range is ±24 h.
            fixed: FixedOffset::east_opt(seconds).unwrap_or_else(|| chrono::Utc.fix()),
        }
    }
}

impl fmt::Debug for NamedZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for NamedZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The offset from UTC in a [`NamedZone`] at some instant (chrono keeps the zone in it).
#[derive(Clone, Debug)]
pub struct ZoneOffset {
    zone: NamedZone,
    fixed: FixedOffset,
}

impl Offset for ZoneOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fixed, f)
    }
}

impl TimeZone for NamedZone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> NamedZone {
        offset.zone.clone()
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<ZoneOffset> {
        self.offset_from_local_datetime(&local.and_time(NaiveTime::MIN))
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<ZoneOffset> {
        let Some(civil) = to_civil(local) else {
            return LocalResult::None;
        };
        match self.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => LocalResult::Single(self.offset(offset.seconds())),
            // Skipped by a forward jump (spring): no such wall-clock time.
            AmbiguousOffset::Gap { .. } => LocalResult::None,
            // Repeated by a backward jump (autumn): chrono wants the earlier instant first,
            // which is the one with the larger offset.
            AmbiguousOffset::Fold { before, after } => {
                let (a, b) = (before.seconds(), after.seconds());
                LocalResult::Ambiguous(self.offset(a.max(b)), self.offset(a.min(b)))
            }
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        let secs = utc.and_utc().timestamp();
        // jiff's range is years -9999..=9999; beyond it the nearest end's rules apply.
        let at = jiff::Timestamp::from_second(secs).unwrap_or(if secs < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        });
        self.offset(self.tz.to_offset(at).seconds())
    }
}

/// chrono's wall-clock time as jiff's; `None` outside jiff's years -9999..=9999.
fn to_civil(t: &NaiveDateTime) -> Option<jiff::civil::DateTime> {
    use chrono::{Datelike, Timelike};
    let year = i16::try_from(t.year()).ok()?;
    // chrono carries a leap second as nanoseconds past 1e9; jiff has none.
    let nanos = t.nanosecond().min(999_999_999);
    jiff::civil::DateTime::new(
        year,
        t.month() as i8,
        t.day() as i8,
        t.hour() as i8,
        t.minute() as i8,
        t.second() as i8,
        nanos as i32,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn bundled(name: &str) -> NamedZone {
        NamedZone::lookup_in(&TimeZoneDatabase::bundled(), name).expect("bundled zone")
    }

    fn wall(zone: &NamedZone, unix: i64) -> String {
        let t: DateTime<NamedZone> = Utc.timestamp_opt(unix, 0).unwrap().with_timezone(zone);
        t.to_rfc3339()
    }

    #[test]
    fn offsets_follow_the_rules_of_the_zone() {
        let berlin = bundled("Europe/Berlin");
        assert_eq!(berlin.to_string(), "Europe/Berlin");
        // 2026-01-01T00:00Z is winter (+01:00); 2026-07-01T00:00Z summer (+02:00).
        assert_eq!(wall(&berlin, 1_767_225_600), "2026-01-01T01:00:00+01:00");
        assert_eq!(wall(&berlin, 1_782_864_000), "2026-07-01T02:00:00+02:00");
        let kolkata = bundled("Asia/Kolkata");
        assert_eq!(wall(&kolkata, 1_767_225_600), "2026-01-01T05:30:00+05:30");
    }

    #[test]
    fn skipped_and_repeated_wall_clock_times() {
        let berlin = bundled("Europe/Berlin");
        let local = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        // 2026-03-29 02:30 does not happen in Berlin; 2026-10-25 02:30 happens twice.
        assert!(matches!(
            berlin.from_local_datetime(&local("2026-03-29 02:30")),
            LocalResult::None
        ));
        match berlin.from_local_datetime(&local("2026-10-25 02:30")) {
            LocalResult::Ambiguous(first, second) => {
                assert_eq!(first.to_rfc3339(), "2026-10-25T02:30:00+02:00");
                assert_eq!(second.to_rfc3339(), "2026-10-25T02:30:00+01:00");
                assert!(first < second);
            }
            other => panic!("expected two instants, got {other:?}"),
        }
        let single = berlin.from_local_datetime(&local("2026-06-01 12:00")).single().unwrap();
        assert_eq!(single.to_rfc3339(), "2026-06-01T12:00:00+02:00");
    }

    #[test]
    fn names_that_are_not_zones_are_refused() {
        let db = TimeZoneDatabase::bundled();
        for bad in [
            "",
            "Mars/Olympus",
            "../../etc/passwd",
            "/etc/localtime",
            "Europe//Berlin",
            "Europe/Berlin/",
            "Europe/Berlin\0",
            &"A".repeat(MAX_ZONE_NAME + 1),
        ] {
            assert!(NamedZone::lookup_in(&db, bad).is_none(), "{bad:?} must be refused");
        }
        assert_eq!(NamedZone::lookup_in(&db, "utc").unwrap(), NamedZone::utc());
        assert_eq!(NamedZone::utc().name(), "UTC");
    }

    #[test]
    fn instants_far_outside_the_database_do_not_panic() {
        let berlin = bundled("Europe/Berlin");
        let far = NaiveDate::from_ymd_opt(200_000, 1, 1).unwrap().and_time(NaiveTime::MIN);
        assert_eq!(berlin.offset_from_utc_datetime(&far).fix().local_minus_utc(), 3600);
        assert!(matches!(berlin.offset_from_local_datetime(&far), LocalResult::None));
    }
}
