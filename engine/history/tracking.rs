//! Operating flows as OIC's operators do: paused flows (OIC's "deactivate"), and runs found
//! by the files they handled and the business keys their flows declare (OIC's tracking
//! fields).
//!
//! **Pauses** are rows of `flow_pauses`, one per paused flow, with who paused it, when and
//! why. They live in the run history, so every instance sharing a PostgreSQL history, and
//! every restart, honours them: a paused flow starts no run (its schedule's ticks are
//! recorded `paused`, its REST trigger answers `503`, run-now and resubmit are refused), and
//! a flow that calls a paused child fails at the call.
//!
//! **Run keys** are rows of `run_keys`, one per distinct value a run is found by:
//!
//! | kind | value | searched |
//! | --- | --- | --- |
//! | `f` | a file name the run listed, fetched, put, renamed (the old name) or skipped, or a trigger file part's delivered name | by substring, case-insensitive (ASCII) |
//! | `t` | a value the flow declares in `track:` (`name`: the declaration's name) | exactly |
//! | `r` | the number of a record whose request failed or was tolerated | exactly (`4711` or `#4711`) |
//! | `k` | that record's key, as its loop declares in `track:` | exactly |
//!
//! They are written with the run's events ([`Store::write_batch`]) and its trigger input, so
//! a run is found while it runs. [`Store::list`] with [`RunFilter::search`] combines a
//! search with the other filters in two steps: the keys give up to [`NARROW_SEARCH`] matching
//! runs (file names are scanned, values found by the partial index `run_keys_values`, which
//! file names do not pay for), which are then read by id; a search matching more walks the
//! runs newest first and stops at a page (each run's keys are a prefix of the primary key).

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::Row as _;

use super::store::{Backend, Param, insert_rows_ignoring, now};
use super::{HistoryError, Store};
use crate::run::{Event, RunKey};

/// The longest value a run key keeps (longer file names and keys are cut, on a character
/// boundary: a search for their beginning still finds them).
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest search text (longer searches are refused).
pub const MAX_SEARCH_CHARS: usize = 256;

/// The most runs a search reads by id; a search matching more walks the runs instead.
pub const NARROW_SEARCH: usize = 500;

/// The longest reason a pause keeps.
pub const MAX_REASON_CHARS: usize = 500;

/// A paused flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// The flow id.
    pub flow: String,
    /// When it was paused (RFC 3339, UTC).
    pub paused_at: String,
    /// Who paused it (an API user, or `cli:` and the login of whoever ran `ferry pause`).
    pub paused_by: String,
    /// Why, as they said.
    pub reason: Option<String>,
}

impl std::fmt::Display for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flow '{}' is paused (by {} at {}",
            self.flow, self.paused_by, self.paused_at
        )?;
        if let Some(r) = &self.reason {
            write!(f, ": {r}")?;
        }
        write!(f, "); `ferry resume {}` starts it again", self.flow)
    }
}

/// A value a run is found by, as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TrackedValue {
    /// The declaration's name (`track:` of the flow), or `record` / `key` for a record.
    pub name: String,
    /// The value.
    pub value: String,
}

/// A stored key: kind, value, name.
type KeyRow = (&'static str, String, Option<String>);

/// Cuts `s` to [`MAX_KEY_BYTES`] on a character boundary.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_KEY_BYTES {
        return s.to_string();
    }
    let mut end = MAX_KEY_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The keys an event gives its run.
fn event_keys(e: &Event, out: &mut Vec<KeyRow>) {
    match e {
        Event::Fetched { name, .. } | Event::Put { name, .. } | Event::Skipped { name, .. } => {
            out.push(("f", bounded(name), None));
        }
        Event::Renamed { from, .. } => out.push(("f", bounded(from), None)),
        Event::Request {
            record: Some(n),
            key,
            status,
            suppressed,
            rejected,
            ..
        } if *suppressed || *rejected || status.is_some_and(|s| !(200..300).contains(&s)) => {
            out.push(("r", n.to_string(), None));
            if let Some(k) = key {
                out.push(("k", bounded(k), None));
            }
        }
        _ => {}
    }
}

/// The rows of `keys` and of the keys `events` give, without repeats.
fn key_rows<'a>(keys: &[RunKey], events: impl Iterator<Item = &'a Event>) -> Vec<KeyRow> {
    let mut rows = Vec::new();
    for k in keys {
        match k {
            RunKey::File(name) => rows.push(("f", bounded(name), None)),
            RunKey::Tracked { name, value } => {
                rows.push(("t", bounded(value), Some(name.clone())));
            }
        }
    }
    for e in events {
        event_keys(e, &mut rows);
    }
    let mut seen = BTreeSet::new();
    rows.retain(|(kind, value, _)| seen.insert((*kind, value.clone())));
    rows
}

/// Writes run `run_id`'s keys (repeats of keys already stored are ignored).
pub(super) async fn write_keys<'a>(
    conn: &mut sqlx::AnyConnection,
    run_id: &str,
    keys: &[RunKey],
    events: impl Iterator<Item = &'a Event>,
) -> Result<(), HistoryError> {
    insert_keys(conn, key_params(run_id, keys, events)).await
}

/// The `run_keys` rows [`write_keys`] writes, to write them later ([`insert_keys`]).
pub(super) fn key_params<'a>(
    run_id: &str,
    keys: &[RunKey],
    events: impl Iterator<Item = &'a Event>,
) -> Vec<Vec<Param>> {
    key_rows(keys, events)
        .into_iter()
        .map(|(kind, value, name)| {
            vec![
                Param::Text(run_id.to_string()),
                Param::Text(kind.to_string()),
                Param::Text(value),
                Param::OptText(name),
            ]
        })
        .collect()
}

/// The columns of a `run_keys` row, in [`key_params`]'s order.
pub(super) const KEY_COLUMNS: &[&str] = &["run_id", "kind", "value", "name"];
/// A key already recorded for a run is not recorded again.
pub(super) const KEY_CONFLICT: &str = "(run_id, kind, value)";

/// Inserts rows of [`key_params`] (repeats of keys already stored are ignored).
pub(super) async fn insert_keys(
    conn: &mut sqlx::AnyConnection,
    rows: Vec<Vec<Param>>,
) -> Result<(), HistoryError> {
    insert_rows_ignoring(conn, "run_keys", KEY_COLUMNS, KEY_CONFLICT, rows).await
}

/// A search text, checked: trimmed, not empty, at most [`MAX_SEARCH_CHARS`], no control
/// character.
pub fn check_search(text: &str) -> Result<String, HistoryError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(HistoryError::Invalid("the search text is empty".into()));
    }
    if t.chars().count() > MAX_SEARCH_CHARS {
        return Err(HistoryError::Invalid(format!(
            "the search text is longer than {MAX_SEARCH_CHARS} characters"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(HistoryError::Invalid(
            "the search text holds a control character".into(),
        ));
    }
    Ok(t.to_string())
}

/// `text` as a LIKE pattern matching it anywhere (`\` escapes `%`, `_` and itself).
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A search of the run keys: the match, as SQL over `run_keys` aliased `k`, and its
/// parameters from `$first` on. A run matches when it has a file name containing `text`
/// (case-insensitive), or a declared value, record key or (for a number, with or without
/// `#`) record number equal to it.
pub(super) struct KeySearch {
    /// The condition on a row `k` of `run_keys`.
    pub condition: String,
    /// The ids of the runs matching, as a query (`UNION ALL` of one index range each: the
    /// file names scanned, the exact values by the partial index `run_keys_values`).
    pub runs: String,
    /// The parameters of both.
    pub params: Vec<String>,
}

impl KeySearch {
    pub(super) fn new(backend: Backend, text: &str, first: usize) -> KeySearch {
        // SQLite's LIKE ignores the case of ASCII letters; PostgreSQL's ILIKE does
        let like = match backend {
            Backend::Sqlite => "LIKE",
            Backend::Postgres => "ILIKE",
        };
        let mut params = vec![contains_pattern(text), text.to_string()];
        let mut exact = vec![format!("${}", first + 1)];
        let number = text.strip_prefix('#').unwrap_or(text);
        if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
            let n = number.trim_start_matches('0');
            let n = if n.is_empty() { "0" } else { n };
            if n != text {
                params.push(n.to_string());
                exact.push(format!("${}", first + 2));
            }
        }
        let file = format!("k.kind = 'f' AND k.value {like} ${first} ESCAPE '\\'");
        let mut condition = format!("({file})");
        let mut runs = format!("SELECT k.run_id FROM run_keys k WHERE {file}");
        for e in &exact {
            condition.push_str(&format!(" OR (k.kind <> 'f' AND k.value = {e})"));
            runs.push_str(&format!(
                " UNION ALL SELECT k.run_id FROM run_keys k WHERE k.kind <> 'f' AND k.value = {e}"
            ));
        }
        KeySearch {
            condition,
            runs,
            params,
        }
    }
}

impl Store {
    /// The values run `run_id` is tracked by (its flow's `track:` declarations), in name
    /// order.
    pub async fn tracked(&self, run_id: &str) -> Result<Vec<TrackedValue>, HistoryError> {
        let rows = sqlx::query(
            "SELECT name, value FROM run_keys WHERE run_id = $1 AND kind = 't' ORDER BY name",
        )
        .bind(run_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TrackedValue {
                    name: r.try_get::<Option<String>, _>("name")?.unwrap_or_default(),
                    value: r.try_get("value")?,
                })
            })
            .collect()
    }

    /// Pauses `flow`: it starts no run until [`Store::resume_flow`]. Pausing a paused flow
    /// changes nothing (the first pause stays on record). Returns the flow's pause.
    pub async fn pause_flow(
        &self,
        flow: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Pause, HistoryError> {
        let reason = reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| r.chars().take(MAX_REASON_CHARS).collect::<String>());
        sqlx::query(
            "INSERT INTO flow_pauses (flow, paused_at, paused_by, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow) DO NOTHING",
        )
        .bind(flow.to_string())
        .bind(now())
        .bind(by.to_string())
        .bind(reason)
        .execute(&self.pool)
        .await?;
        self.pause_of(flow).await?.ok_or_else(|| {
            HistoryError::Invalid(format!("flow '{flow}' was resumed while it was paused"))
        })
    }

    /// Resumes `flow`; returns the pause it ended (none: it was not paused). One statement:
    /// a transaction that read first and then wrote would not wait for SQLite's lock.
    pub async fn resume_flow(&self, flow: &str) -> Result<Option<Pause>, HistoryError> {
        sqlx::query(
            "DELETE FROM flow_pauses WHERE flow = $1
             RETURNING flow, paused_at, paused_by, reason",
        )
        .bind(flow.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| pause_row(&r))
        .transpose()
    }

    /// The pause of `flow`, when it is paused.
    pub async fn pause_of(&self, flow: &str) -> Result<Option<Pause>, HistoryError> {
        sqlx::query("SELECT flow, paused_at, paused_by, reason FROM flow_pauses WHERE flow = $1")
            .bind(flow.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| pause_row(&r))
            .transpose()
    }

    /// Every paused flow, by flow id.
    pub async fn pauses(&self) -> Result<Vec<Pause>, HistoryError> {
        sqlx::query("SELECT flow, paused_at, paused_by, reason FROM flow_pauses ORDER BY flow")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(pause_row)
            .collect()
    }

    /// Deletes the keys of runs `ids`, at most [`super::PURGE_ROWS`] rows per statement
    /// (a run that listed a million files has a million keys).
    pub(super) async fn purge_keys(&self, ids: &[String]) -> Result<(), HistoryError> {
        let delete = format!(
            "DELETE FROM run_keys WHERE run_id = $1 AND (kind, value) IN
               (SELECT kind, value FROM run_keys WHERE run_id = $1 LIMIT {})",
            super::PURGE_ROWS
        );
        for id in ids {
            loop {
                let done = sqlx::query(&delete)
                    .bind(id.clone())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() < super::PURGE_ROWS as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// How many keys run `run_id` has (tests and benchmarks).
    pub async fn key_count(&self, run_id: &str) -> Result<u64, HistoryError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM run_keys WHERE run_id = $1")
            .bind(run_id.to_string())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

fn pause_row(r: &sqlx::any::AnyRow) -> Result<Pause, HistoryError> {
    Ok(Pause {
        flow: r.try_get("flow")?,
        paused_at: r.try_get("paused_at")?,
        paused_by: r.try_get("paused_by")?,
        reason: r.try_get("reason")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_pattern_escapes_like_wildcards() {
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn numbers_also_search_record_numbers() {
        let k = KeySearch::new(Backend::Sqlite, "#04711", 3);
        assert!(
            k.condition.contains("k.kind <> 'f' AND k.value = $5"),
            "{}",
            k.condition
        );
        assert_eq!(k.params, vec!["%#04711%", "#04711", "4711"]);
        let k = KeySearch::new(Backend::Postgres, "EV00042", 1);
        assert!(k.condition.contains("ILIKE $1"), "{}", k.condition);
        assert_eq!(k.runs.matches("UNION ALL").count(), 1, "{}", k.runs);
        assert_eq!(k.params.len(), 2);
        // a plain number is its own record number
        assert_eq!(KeySearch::new(Backend::Sqlite, "4711", 1).params.len(), 2);
    }

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        let name = "é".repeat(MAX_KEY_BYTES);
        let cut = bounded(&name);
        assert!(cut.len() <= MAX_KEY_BYTES && cut.len() >= MAX_KEY_BYTES - 1);
        assert!(name.starts_with(&cut));
    }

    #[test]
    fn checked_searches() {
        assert_eq!(check_search("  EV1 ").unwrap(), "EV1");
        assert!(check_search(" ").is_err());
        assert!(check_search("a\nb").is_err());
        assert!(check_search(&"x".repeat(MAX_SEARCH_CHARS + 1)).is_err());
    }
}
