//! When a schedule runs: a cron expression in a time zone.
//!
//! Five fields (`min hour dom month dow`), an optional leading seconds field, or a shortcut
//! (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). Pure: takes the time as an
//! argument, so the planner can be tested without a clock.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};

use super::zone::NamedZone;

/// Why an expression or a zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason}")]
    Expression {
        /// The expression.
        expr: String,
        /// croner's reason.
        reason: String,
    },
    /// Not a known IANA zone.
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Berlin\" or \"UTC\", or \"local\")")]
    Zone(String),
}

/// A time zone: the machine's local one, or a named IANA zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    /// `/etc/localtime` (or `TZ`), as cron does.
    Local,
    /// A named zone from the machine's time zone database.
    Named(NamedZone),
}

impl FromStr for Zone {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Zone, CronError> {
        if s.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        NamedZone::lookup(s)
            .map(Zone::Named)
            .ok_or_else(|| CronError::Zone(s.to_string()))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Local => f.write_str("local"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

/// A parsed schedule time.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cron: croner::Cron,
    zone: Zone,
}

impl CronSchedule {
    /// Parses `expr` in `zone`.
    pub fn parse(expr: &str, zone: Zone) -> Result<CronSchedule, CronError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let bad = |reason: String| CronError::Expression {
            expr: expr.to_string(),
            reason,
        };
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(bad(format!(
                "{fields} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
            )));
        }
        if expr.trim().eq_ignore_ascii_case("@reboot") {
            return Err(bad("@reboot is not supported".into()));
        }
        let cron = parser.parse(expr).map_err(|e| bad(e.to_string()))?;
        let schedule = CronSchedule {
            expr: expr.to_string(),
            cron,
            zone,
        };
        // An expression that never matches (e.g. 30 February) is a mistake, not a schedule.
        if schedule.next_after(crate::time::unix_ms()).is_none() {
            return Err(bad("never matches".into()));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone it is evaluated in.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The first matching time strictly after `after_ms` (Unix ms), if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        // Whole seconds: croner keeps the sub-second part of its start in what it returns.
        let secs = i64::try_from(after_ms / 1000).ok()?;
        let utc = Utc.timestamp_opt(secs, 0).single()?;
        let next = match &self.zone {
            Zone::Local => self.next_in(&utc.with_timezone(&chrono::Local)),
            Zone::Named(tz) => self.next_in(&utc.with_timezone(tz)),
        }?;
        u64::try_from(next).ok()
    }

    fn next_in<Z: TimeZone>(&self, at: &DateTime<Z>) -> Option<i64> {
        self.cron
            .find_next_occurrence(at, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    // 2026-01-01T00:00:00Z
    const T0: u64 = 1_767_225_600_000;

    fn utc(expr: &str) -> CronSchedule {
        CronSchedule::parse(expr, "UTC".parse().unwrap()).unwrap()
    }

    #[test]
    fn five_and_six_fields_and_shortcuts() {
        assert_eq!(utc("*/15 * * * *").next_after(T0), Some(T0 + 15 * MIN));
        assert_eq!(utc("30 2 * * *").next_after(T0), Some(T0 + (2 * 60 + 30) * MIN));
        assert_eq!(
            utc("*/5 * * * * *").next_after(T0),
            Some(T0 + 5_000),
            "seconds field first"
        );
        assert_eq!(utc("@daily").next_after(T0 + 1), Some(T0 + 24 * 60 * MIN));
        assert_eq!(utc("@hourly").next_after(T0), Some(T0 + 60 * MIN));
        // Strictly after: a run at the exact time is not found again.
        assert_eq!(utc("0 * * * *").next_after(T0 + 60 * MIN), Some(T0 + 120 * MIN));
    }

    #[test]
    fn zones_shift_the_wall_clock() {
        let berlin = CronSchedule::parse("0 2 * * *", "Europe/Berlin".parse().unwrap()).unwrap();
        // 02:00 in Berlin in January is 01:00 UTC.
        assert_eq!(berlin.next_after(T0), Some(T0 + 60 * MIN));
        assert!(CronSchedule::parse("0 2 * * *", Zone::Local).is_ok());
    }

    #[test]
    fn refuses_bad_input_with_reasons() {
        let zone = Zone::Named(NamedZone::utc());
        for bad in [
            "",
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "* * 32 * *",
            "bogus",
            "@reboot",
            "0 0 30 2 *",
        ] {
            assert!(
                CronSchedule::parse(bad, zone.clone()).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(matches!("Mars/Olympus".parse::<Zone>(), Err(CronError::Zone(_))));
        assert_eq!("local".parse::<Zone>(), Ok(Zone::Local));
    }
}
