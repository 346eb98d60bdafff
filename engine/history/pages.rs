//! Paging a run's detail: the cursor of the page before a page, and a record loop's
//! progress summed up as a range with its exceptions (the run page and `ferry runs show`).

use serde::Serialize;
use sqlx::Row as _;

use super::journal::{EventFilter, LoopProgress};
use super::{HistoryError, RunSummary, Store};

/// Record numbers of exceptions listed with a loop's range at most (the rest are counted).
pub const LOOP_NUMBERS: u32 = 10;

/// A record loop summed up: its range and, in one line, how its records ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoopSummary {
    /// The loop's progress.
    #[serde(flatten)]
    pub progress: LoopProgress,
    /// `records 1–100000: 99,998 accepted; 2 tolerated (#17, #4711)`.
    pub line: String,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn numbers(list: &[i64], total: i64) -> String {
    let mut shown: Vec<String> = list.iter().map(|n| format!("#{n}")).collect();
    if total > list.len() as i64 {
        shown.push("…".to_string());
    }
    shown.join(", ")
}

impl Store {
    /// The `after` cursor of the page of at most `limit` events passing `filter` that
    /// comes before the page starting after `after` (0: the first page), or `None` when
    /// that page is the first.
    pub async fn events_before(
        &self,
        run_id: &str,
        filter: EventFilter,
        after: i64,
        limit: u32,
    ) -> Result<Option<i64>, HistoryError> {
        if after <= 0 {
            return Ok(None);
        }
        let limit = limit.clamp(1, super::MAX_PAGE);
        let kinds = filter.kinds();
        // the event `limit` places back ends the page before; none: that page is the first.
        // One query per kind on the (run_id, kind, seq) index, each reading at most
        // `limit + 1` rows, merged by seq (as `events_page` does): `kind IN (…) ORDER BY seq
        // DESC OFFSET` would read every row of those kinds up to `after`.
        if kinds.is_empty() {
            let sql = format!(
                "SELECT seq FROM run_events WHERE run_id = $1 AND seq <= $2 \
                 ORDER BY seq DESC LIMIT 1 OFFSET {limit}"
            );
            let row = sqlx::query(&sql)
                .bind(run_id.to_string())
                .bind(after)
                .fetch_optional(&self.pool)
                .await?;
            return Ok(Some(match row {
                Some(r) => r.try_get::<i64, _>("seq")?,
                None => 0,
            }));
        }
        let mut seqs: Vec<i64> = Vec::new();
        let sql = format!(
            "SELECT seq FROM run_events WHERE run_id = $1 AND kind = $3 AND seq <= $2 \
             ORDER BY seq DESC LIMIT {}",
            limit + 1
        );
        for k in kinds {
            for r in sqlx::query(&sql)
                .bind(run_id.to_string())
                .bind(after)
                .bind(*k)
                .fetch_all(&self.pool)
                .await?
            {
                seqs.push(r.try_get::<i64, _>("seq")?);
            }
        }
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Some(seqs.get(limit as usize).copied().unwrap_or(0)))
    }

    /// The record numbers of the first [`LOOP_NUMBERS`] events passing `filter`.
    async fn record_numbers(
        &self,
        run_id: &str,
        filter: EventFilter,
    ) -> Result<Vec<i64>, HistoryError> {
        Ok(self
            .events_page(run_id, filter, 0, LOOP_NUMBERS)
            .await?
            .events
            .iter()
            .filter_map(|e| e.event.get("record").and_then(serde_json::Value::as_i64))
            .collect())
    }

    /// The run's record loops, each as a range with how its records ended. With one loop
    /// the run's counters are the loop's; with several, each line gives the records done
    /// and the run's totals follow in the summary.
    pub async fn loop_summaries(
        &self,
        summary: &RunSummary,
        loops: &[LoopProgress],
    ) -> Result<Vec<LoopSummary>, HistoryError> {
        if loops.is_empty() {
            return Ok(Vec::new());
        }
        let (tolerated, failed) = if loops.len() == 1 {
            (
                self.record_numbers(&summary.id, EventFilter::Tolerated)
                    .await?,
                self.record_numbers(&summary.id, EventFilter::Failed)
                    .await?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(loops
            .iter()
            .map(|l| {
                let range = if l.through >= l.first {
                    format!("records {}–{}", l.first, l.through)
                } else {
                    "no record confirmed".to_string()
                };
                let mut parts = Vec::new();
                if loops.len() == 1 {
                    parts.push(format!("{} accepted", thousands(summary.records_ok)));
                    if summary.records_tolerated > 0 {
                        parts.push(format!(
                            "{} tolerated ({})",
                            thousands(summary.records_tolerated),
                            numbers(&tolerated, summary.records_tolerated)
                        ));
                    }
                    if summary.records_failed > 0 {
                        parts.push(format!(
                            "{} failed ({})",
                            thousands(summary.records_failed),
                            numbers(&failed, summary.records_failed)
                        ));
                    }
                } else {
                    parts.push(format!("{} done", thousands(l.done)));
                }
                LoopSummary {
                    line: format!("{range}: {}", parts.join("; ")),
                    progress: l.clone(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(99_998), "99,998");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(-1234), "-1,234");
    }

    #[test]
    fn numbers_mark_more_than_listed() {
        assert_eq!(numbers(&[17, 4711], 2), "#17, #4711");
        assert_eq!(numbers(&[1, 2], 5), "#1, #2, …");
    }
}
