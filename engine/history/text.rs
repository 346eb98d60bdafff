//! The run history for people: the `ferry runs` table, the `ferry runs show` detail, and
//! the ages the commands take (`30d`, `12h`, `90m`).

use std::fmt::Write as _;
use std::time::Duration;

use super::{EventPage, FileAction, LoopSummary, RunDetail, RunSummary};
use crate::run::Event;

/// Parses an age: a number and a unit, `30d`, `12h`, `90m`, `45s` (or any combination
/// humantime takes, `1h 30m`).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not an age like 30d, 12h or 90m: {e}"))?;
    if d.is_zero() {
        return Err(format!("'{s}' is no age: give more than zero"));
    }
    Ok(d)
}

/// Parses a point in time: RFC 3339 (`2025-01-31T00:00:00Z`) or an age before now (`24h`).
pub fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age = parse_age(s)
        .map_err(|_| format!("'{s}' is neither an RFC 3339 time nor an age like 24h or 7d"))?;
    let age = chrono::Duration::from_std(age).map_err(|_| format!("'{s}' is too long ago"))?;
    chrono::Utc::now()
        .checked_sub_signed(age)
        .ok_or_else(|| format!("'{s}' is too long ago"))
}

/// A duration for people: `850ms`, `1.2s`, `3m04s`, `2h05m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A stored timestamp for people: `2025-01-31 12:00:00` (UTC).
fn when(t: &str) -> String {
    t.get(..19)
        .map_or_else(|| t.to_string(), |s| s.replace('T', " "))
}

fn records(r: &RunSummary) -> String {
    let mut parts = vec![format!("{} ok", r.records_ok)];
    if r.records_tolerated > 0 {
        parts.push(format!("{} tolerated", r.records_tolerated));
    }
    if r.records_failed > 0 {
        parts.push(format!("{} failed", r.records_failed));
    }
    if let Some(n) = r.error_record {
        parts.push(format!("stopped at #{n}"));
    }
    parts.join(", ")
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!(
            "{}…",
            flat.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    } else {
        flat
    }
}

/// The `ferry runs` table: id, flow, trigger, started, duration, outcome, files, records,
/// error; newest first.
pub fn runs_table(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "no runs recorded\n".to_string();
    }
    let header = [
        "ID",
        "FLOW",
        "TRIGGER",
        "STARTED (UTC)",
        "DURATION",
        "OUTCOME",
        "FILES",
        "RECORDS",
        "ERROR",
    ];
    let rows: Vec<[String; 9]> = runs
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.flow.clone(),
                r.trigger.to_string(),
                when(&r.started_at),
                r.duration_ms.map_or_else(|| "-".to_string(), duration),
                format!("{}{}", r.outcome, if r.dry_run { " (dry)" } else { "" }),
                r.files.to_string(),
                records(r),
                r.error
                    .as_deref()
                    .map(|e| one_line(e, 70))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_string));
    for row in &rows {
        line(row);
    }
    out
}

/// Which records `ferry runs show` prints: a page of one filter.
#[derive(Debug, Clone, Copy)]
pub struct RecordsShown<'a> {
    /// The filter's name (`failed`, `tolerated`, `all`).
    pub filter: &'a str,
    /// The page.
    pub page: &'a EventPage,
    /// The cursor it starts after.
    pub after: i64,
    /// The page size asked for.
    pub limit: u32,
}

/// One request event (a record) in full: number, request, status, outcome, answer.
fn record_line(v: &serde_json::Value, dry_run: bool) -> String {
    match serde_json::from_value::<Event>(v.clone()) {
        Ok(Event::Request {
            method,
            url,
            status,
            suppressed,
            record,
            message,
            ..
        }) => {
            let number = record.map_or_else(|| "-".to_string(), |n| format!("#{n}"));
            let outcome = match status {
                None => "not sent (dry run)",
                Some(_) if suppressed => "tolerated",
                Some(s) if (200..300).contains(&s) => "sent",
                Some(_) => "FAILED",
            };
            let status = status.map_or_else(|| "-".to_string(), |s| s.to_string());
            let mut line = format!("{number:>7}  {method} {url} -> {status} {outcome}");
            if let Some(m) = message {
                let _ = write!(line, ": {}", one_line(&m, 2_000));
            }
            line
        }
        Ok(e) => format!("{:>7}  {}", "", crate::report::render_event(&e, dry_run)),
        Err(_) => v.to_string(),
    }
}

/// A page of run `run_id`'s events (`ferry runs show ID --events`): each with its number,
/// then the command for the next page.
pub fn events_page(
    run_id: &str,
    filter: super::EventFilter,
    page: &super::EventPage,
    after: i64,
    limit: u32,
) -> String {
    let mut s = String::new();
    if page.events.is_empty() {
        let _ = writeln!(s, "no {} events after event {after}", filter.name());
        return s;
    }
    for e in &page.events {
        let line = match serde_json::from_value::<Event>(e.event.clone()) {
            Ok(ev) => crate::report::render_event(&ev, false),
            Err(_) => e.event.to_string(),
        };
        let _ = writeln!(s, "#{:<7} {}  {line}", e.seq, when(&e.at));
    }
    if let Some(next) = page.next {
        let _ = writeln!(
            s,
            "more: ferry runs show {run_id} --events --status {} --after {next} --limit {limit}",
            filter.name()
        );
    }
    s
}

/// The `ferry runs show` detail: the run, its kept input, files, record loops as ranges, a
/// page of records (failures by default), emails, error and the first page of events.
pub fn run_detail(d: &RunDetail, loops: &[LoopSummary], records: &RecordsShown<'_>) -> String {
    let r = &d.summary;
    let mut s = String::new();
    let _ = writeln!(s, "run {}", r.id);
    let _ = writeln!(s, "  flow       {} ({})", r.flow, r.flow_name);
    match &r.resubmit_of {
        Some(of) => {
            let _ = writeln!(s, "  trigger    {} of {of}", r.trigger);
        }
        None => {
            let _ = writeln!(s, "  trigger    {}", r.trigger);
        }
    }
    let _ = writeln!(
        s,
        "  outcome    {}{}",
        r.outcome,
        if r.dry_run { " (dry run)" } else { "" }
    );
    let _ = writeln!(s, "  started    {} UTC", when(&r.started_at));
    if let Some(f) = &r.finished_at {
        let _ = writeln!(
            s,
            "  finished   {} UTC ({})",
            when(f),
            r.duration_ms.map_or_else(|| "-".to_string(), duration)
        );
    }
    if let Some(i) = &r.input_summary {
        let _ = writeln!(s, "  input      {i}");
    }
    if !d.tracked.is_empty() {
        let values: Vec<String> = d
            .tracked
            .iter()
            .map(|t| format!("{}={}", t.name, t.value))
            .collect();
        let _ = writeln!(s, "  tracked    {}", values.join(", "));
    }
    if !d.resubmitted_as.is_empty() {
        let _ = writeln!(s, "  resubmitted as {}", d.resubmitted_as.join(", "));
    }
    let _ = writeln!(
        s,
        "  totals     {} file(s) put ({} bytes), {} rename(s), records: {} sent, {} tolerated, {} failed, {} email(s)",
        r.files, r.bytes, r.renames, r.records_ok, r.records_tolerated, r.records_failed, r.emails
    );
    if !d.inputs.is_empty() {
        s.push_str("kept input:\n");
        for p in &d.inputs {
            let kind = match p.kind {
                crate::model::PartKind::Json => "json",
                crate::model::PartKind::File => "file",
            };
            let _ = writeln!(
                s,
                "  {:<10} {kind} {}{} bytes, sha256 {}",
                p.name,
                p.file_name
                    .as_deref()
                    .map(|n| format!("{n}, "))
                    .unwrap_or_default(),
                p.size,
                p.sha256.get(..16).unwrap_or(&p.sha256)
            );
        }
    }
    if !d.files.is_empty() {
        s.push_str("files:\n");
        for f in &d.files {
            let at = format!(
                "{}:{}/{}",
                f.connection,
                f.location.trim_end_matches('/'),
                f.name
            );
            let _ = match f.action {
                FileAction::Fetched => {
                    writeln!(s, "  fetched  {at} ({} bytes)", f.bytes.unwrap_or(0))
                }
                FileAction::Put => writeln!(s, "  put      {at} ({} bytes)", f.bytes.unwrap_or(0)),
                FileAction::Renamed => writeln!(
                    s,
                    "  renamed  {at} -> {}",
                    f.renamed_to.as_deref().unwrap_or("?")
                ),
                FileAction::Skipped => writeln!(s, "  skipped  {}", at.escape_debug()),
            };
        }
    }
    if !loops.is_empty() {
        s.push_str("record loops:\n");
        for l in loops {
            let _ = writeln!(s, "  {}: {}", l.progress.label, l.line);
        }
    }
    let shown = if records.filter == "all" {
        "records".to_string()
    } else {
        format!("{} records", records.filter)
    };
    if records.page.events.is_empty() {
        if records.after == 0 {
            let _ = writeln!(s, "{shown}: none");
        } else {
            let _ = writeln!(s, "{shown} after event {}: none", records.after);
        }
    } else {
        let _ = writeln!(s, "{shown}:");
        for e in &records.page.events {
            let _ = writeln!(s, "{}", record_line(&e.event, r.dry_run));
        }
        if let Some(next) = records.page.next {
            let _ = writeln!(
                s,
                "  more: ferry runs show {} --records {} --after {next} --limit {}",
                r.id, records.filter, records.limit
            );
        }
    }
    if !d.emails.is_empty() {
        s.push_str("emails:\n");
        for e in &d.emails {
            let _ = writeln!(s, "  to {} \"{}\"", e.to.join(", "), e.subject);
        }
    }
    if let Some(e) = &d.failure {
        if e.step.is_empty() {
            let _ = writeln!(s, "error: {}", e.message);
        } else {
            let _ = writeln!(s, "error: step '{}' ({}): {}", e.step, e.kind, e.message);
        }
        let mut at = Vec::new();
        if let Some(f) = &e.file {
            at.push(format!("file {f}"));
        }
        if let Some(n) = e.record {
            at.push(format!("record {n}"));
        }
        if !at.is_empty() {
            let _ = writeln!(s, "  at {}", at.join(", "));
        }
    }
    if !d.events.is_empty() {
        s.push_str(if d.events_next.is_some() {
            "events (the first page):\n"
        } else {
            "events:\n"
        });
        for v in &d.events {
            let line = match serde_json::from_value::<Event>(v.clone()) {
                Ok(e) => crate::report::render_event(&e, r.dry_run),
                Err(_) => v.to_string(),
            };
            let _ = writeln!(s, "  {line}");
        }
    }
    if let Some(next) = d.events_next {
        let _ = writeln!(
            s,
            "  more: GET /api/v1/runs/{}/events?after={next} (ferry serve), or the run page",
            r.id
        );
    }
    s
}
