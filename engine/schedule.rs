//! Cron schedules of flows: a cron expression (seconds optional) read in an IANA time zone.
//!
//! Parsing is [`croner`]'s (Vixie-cron syntax plus `L`, `#`, `W`, aliases such as
//! `@hourly`); time zones are [`chrono_tz`]'s. [`crate::compile`] parses every schedule, so
//! a flow that validates has a schedule that fires.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// Why a schedule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression.
    #[error("invalid cron expression '{expr}': {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// The parser's reason.
        reason: String,
    },
    /// The time zone.
    #[error("unknown time zone '{0}' (an IANA name such as Europe/Amsterdam or UTC)")]
    TimeZone(String),
}

impl CronSchedule {
    /// Parses `expr` (5 or 6 fields, or an alias) in time zone `tz` (UTC when absent).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<CronSchedule, ScheduleError> {
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.into()))?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_string(),
                reason: e.to_string(),
            })?;
        Ok(CronSchedule { cron, tz })
    }

    /// The first tick strictly after `after`, or `None` when the expression never fires
    /// again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// [`CronSchedule::parse`], one parsed schedule shared by every flow that names the same
/// expression in the same time zone (a parsed one holds some kilobytes of bit sets; flows
/// that run every five minutes share one). Schedules no flow holds any more are let go
/// when the table has doubled since it was last swept, so it holds at most twice the
/// schedules of the flows loaded, and a sweep costs a constant per schedule parsed.
pub fn shared(expr: &str, tz: Option<&str>) -> Result<Arc<CronSchedule>, ScheduleError> {
    type Table = HashMap<(String, Option<String>), Weak<CronSchedule>>;
    /// The table, and the size at which it is swept next.
    static TABLE: Mutex<Option<(Table, usize)>> = Mutex::new(None);
    let key = (expr.to_string(), tz.map(str::to_string));
    let mut guard = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    let (table, sweep_at) = guard.get_or_insert_with(|| (HashMap::new(), 64));
    if let Some(s) = table.get(&key).and_then(Weak::upgrade) {
        return Ok(s);
    }
    let s = Arc::new(CronSchedule::parse(expr, tz)?);
    if table.len() >= *sweep_at {
        table.retain(|_, w| w.strong_count() > 0);
        *sweep_at = (table.len() * 2).max(64);
    }
    table.insert(key, Arc::downgrade(&s));
    Ok(s)
}

/// Names of all known time zones (for "did you mean" hints).
pub fn timezone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn flows_with_the_same_schedule_share_it_while_one_holds_it() {
        let a = shared("0 */5 * * * *", Some("Europe/Amsterdam")).unwrap();
        let b = shared("0 */5 * * * *", Some("Europe/Amsterdam")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other_zone = shared("0 */5 * * * *", None).unwrap();
        assert!(!Arc::ptr_eq(&a, &other_zone));
        assert!(shared("0 */5 * * *  * * *", None).is_err());
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(
            weak.upgrade().is_none(),
            "the table does not keep a schedule alive"
        );
    }

    #[test]
    fn six_fields_fire_on_seconds() {
        let s = CronSchedule::parse("*/15 * * * * *", None).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 7).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 15).unwrap())
        );
    }

    #[test]
    fn five_fields_mean_second_zero() {
        let s = CronSchedule::parse("30 2 * * *", None).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 2, 30, 0).unwrap())
        );
    }

    #[test]
    fn time_zone_shifts_the_tick() {
        // 02:30 in Amsterdam in winter is 01:30 UTC.
        let s = CronSchedule::parse("0 30 2 * * *", Some("Europe/Amsterdam")).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 1, 30, 0).unwrap())
        );
    }

    #[test]
    fn strictly_after() {
        let s = CronSchedule::parse("0 * * * * *", None).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 2, 0).unwrap())
        );
    }

    #[test]
    fn errors_name_the_input() {
        let e = CronSchedule::parse("61 * * * *", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid cron expression '61 * * * *'"),
            "{e}"
        );
        let e = CronSchedule::parse("* * * * *", Some("Europe/Amsterdm")).unwrap_err();
        assert_eq!(e, ScheduleError::TimeZone("Europe/Amsterdm".into()));
    }
}
