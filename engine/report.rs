//! The run report for people: what `ferry run` prints after a run, one line an event.
//! `ferry run`, `ferry demo` and the history's text (`ferry runs show`) all render runs
//! and events through it, so they read alike. It stands below all three and imports only
//! the run's report and events.

use crate::run::{Event, RunReport};

/// Events `ferry run` prints at each end of a long run.
const REPORT_EDGE: usize = 25;

/// Renders a run report for people.
pub fn render_report(r: &RunReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} {} (run {}){}\n",
        r.flow,
        r.flow_name,
        r.run_id,
        if r.dry_run { " — dry run" } else { "" }
    ));
    // a long run shows its first and last events; the history has them all
    let total = r.events.len();
    let hidden = total.saturating_sub(2 * REPORT_EDGE);
    for (i, e) in r.events.iter().enumerate() {
        if hidden > 0 && i == REPORT_EDGE {
            s.push_str(&format!(
                "  … {} more event(s) (`ferry runs show {}` pages through them)\n",
                hidden as u64 + r.events_omitted,
                r.run_id
            ));
        }
        if hidden > 0 && (REPORT_EDGE..total - REPORT_EDGE).contains(&i) {
            continue;
        }
        let line = render_event(e, r.dry_run);
        s.push_str("  ");
        s.push_str(&line);
        s.push('\n');
    }
    if hidden == 0 && r.events_omitted > 0 {
        s.push_str(&format!(
            "  … {} more event(s) (`ferry runs show {}` pages through them)\n",
            r.events_omitted, r.run_id
        ));
    }
    if r.dry_run {
        // what the run would do; nothing of it is counted as done
        s.push_str(&format!(
            "outcome: {} (dry run, nothing changed) — would move {} file(s), make {} rename(s), send {} email(s); requests not sent\n",
            r.outcome,
            r.files_to_move(),
            r.renames(),
            r.emails()
        ));
    } else {
        s.push_str(&format!(
        "outcome: {} — {} file(s) moved, {} record(s) sent, {} tolerated, {} rename(s), {} email(s)\n",
        r.outcome,
        r.files_moved(),
        r.requests_ok(),
        r.suppressed(),
        r.renames(),
        r.emails()
    ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("error: step '{}': {}\n", e.step, e.message));
    }
    // each file left where it is, counted by its reason's head (`gone since it was listed`,
    // `ferry refuses its name`, `the target refuses its name`)
    let mut why: Vec<(&str, usize)> = Vec::new();
    for e in &r.events {
        if let Event::Skipped { reason, .. } = e {
            // a target's refusal names its connection: counted together, whatever the target
            let head = if reason.contains(" refuses the name: ") {
                "the target refuses its name"
            } else {
                reason.split([':', '(']).next().unwrap_or(reason).trim()
            };
            match why.iter_mut().find(|(h, _)| *h == head) {
                Some((_, n)) => *n += 1,
                None => why.push((head, 1)),
            }
        }
    }
    if !why.is_empty() {
        let skipped: usize = why.iter().map(|(_, n)| n).sum();
        let reasons: Vec<String> = why.iter().map(|(h, n)| format!("{n} {h}")).collect();
        s.push_str(&format!(
            "warning: {skipped} file(s) left where they are (see above): {}\n",
            reasons.join(", ")
        ));
    }
    let unsent = r.emails_failed();
    if unsent > 0 {
        s.push_str(&format!(
            "warning: {unsent} email(s) could not be sent (see above); the outcome does not depend on them\n"
        ));
    }
    s
}

/// Renders one event of a run for people, as `ferry run` prints it (`dry_run`: what a dry
/// run would do).
pub fn render_event(e: &Event, dry_run: bool) -> String {
    let verb = if dry_run { "would" } else { "did" };
    match e {
        Event::Listed {
            connection,
            location,
            prefix,
            count,
        } => {
            format!("list    {connection}:{location} prefix '{prefix}': {count} file(s)")
        }
        Event::Fetched {
            connection,
            location,
            name,
            bytes,
        } => format!(
            "fetch   {connection}:{}/{name} ({bytes} bytes)",
            location.trim_end_matches('/')
        ),
        Event::Put {
            connection,
            location,
            name,
            bytes,
        } => format!(
            "put     {connection}:{}/{name} ({bytes} bytes) [{verb}]",
            location.trim_end_matches('/')
        ),
        Event::Renamed {
            connection,
            location,
            from,
            to,
        } => format!(
            "rename  {connection}:{}/{from} -> {to} [{verb}]",
            location.trim_end_matches('/')
        ),
        Event::Skipped {
            connection,
            location,
            name,
            reason,
        } => format!(
            "skip    {connection}:{}/{} left where it is: {reason}",
            location.trim_end_matches('/'),
            name.escape_debug()
        ),
        Event::Request {
            method,
            url,
            status,
            suppressed,
            attempts,
            rejected,
            ..
        } => format!(
            "request {method} {url} -> {}{}{}",
            status.map_or("not sent (dry run)".to_string(), |s| s.to_string()),
            if *suppressed {
                " (tolerated)"
            } else if *rejected {
                " (refused: the answer failed `expect`)"
            } else {
                ""
            },
            if *attempts > 1 {
                format!(" ({attempts} attempts)")
            } else {
                String::new()
            }
        ),
        Event::Emailed { to, subject } => {
            format!("email   to {} \"{subject}\" [{verb}]", to.join(", "))
        }
        Event::EmailFailed {
            to,
            subject,
            message,
        } => format!(
            "WARNING email to {} \"{subject}\" was not sent: {message}",
            to.join(", ")
        ),
        Event::Body { of, text } => {
            let mut s = format!("body of {of}:");
            for line in text.lines() {
                s.push_str("\n    | ");
                s.push_str(line);
            }
            s
        }
        Event::Failed { step, message } => format!("FAILED  {step}: {message}"),
    }
}
