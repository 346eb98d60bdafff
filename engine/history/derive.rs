//! Per-file, per-record and per-email outcomes, derived from a run report's events and
//! error. Nothing here knows a flow: files are the fetch, put and rename events; records are
//! the REST requests in order (a record-by-record flow sends one per record); the failing
//! file and record are the loop items of the error that look like a listed file (a `name`)
//! and a CSV record (a `number`).

use serde_json::{Map, Value};

use super::{EmailSent, FileAction, FileOutcome, RecordOutcome, RecordStatus};
use crate::run::{Event, RunReport};

/// The files a run fetched, put and renamed, in order.
pub fn file_outcomes(report: &RunReport) -> Vec<FileOutcome> {
    report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Fetched {
                connection,
                location,
                name,
                bytes,
            } => Some(FileOutcome {
                action: FileAction::Fetched,
                connection: connection.clone(),
                location: location.clone(),
                name: name.clone(),
                renamed_to: None,
                bytes: Some(clamp(*bytes)),
            }),
            Event::Put {
                connection,
                location,
                name,
                bytes,
            } => Some(FileOutcome {
                action: FileAction::Put,
                connection: connection.clone(),
                location: location.clone(),
                name: name.clone(),
                renamed_to: None,
                bytes: Some(clamp(*bytes)),
            }),
            Event::Renamed {
                connection,
                location,
                from,
                to,
            } => Some(FileOutcome {
                action: FileAction::Renamed,
                connection: connection.clone(),
                location: location.clone(),
                name: from.clone(),
                renamed_to: Some(to.clone()),
                bytes: None,
            }),
            _ => None,
        })
        .collect()
}

/// The REST requests a run sent, in order, with how each ended.
pub fn record_outcomes(report: &RunReport) -> Vec<RecordOutcome> {
    report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Request {
                connection,
                method,
                url,
                status,
                suppressed,
                rejected,
            } => Some(RecordOutcome {
                connection: connection.clone(),
                method: method.clone(),
                url: url.clone(),
                status: status.map(i64::from),
                outcome: match status {
                    None => RecordStatus::NotSent,
                    Some(_) if *suppressed => RecordStatus::Tolerated,
                    Some(_) if *rejected => RecordStatus::Failed,
                    Some(s) if (200..300).contains(s) => RecordStatus::Sent,
                    Some(_) => RecordStatus::Failed,
                },
            }),
            _ => None,
        })
        .collect()
}

/// The emails a run sent, in order.
pub fn email_outcomes(report: &RunReport) -> Vec<EmailSent> {
    report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Emailed { to, subject } => Some(EmailSent {
                to: to.clone(),
                subject: subject.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The file a failing loop was on: the first loop item with a string `name`.
pub fn error_file(items: &Map<String, Value>) -> Option<String> {
    items.values().find_map(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .map(ToString::to_string)
    })
}

/// The record a failing CSV loop was on: the first loop item with an integer `number`.
pub fn error_record(items: &Map<String, Value>) -> Option<i64> {
    items
        .values()
        .find_map(|v| v.get("number").and_then(Value::as_i64))
}

/// A size as a BIGINT.
pub(super) fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
