//! Per-file, per-record and per-email outcomes, derived from a run report's events and
//! error. Nothing here knows a flow: files are the fetch, put and rename events; records are
//! the REST requests in order (a record-by-record flow sends one per record); the failing
//! file and record are the loop items of the error that look like a listed file (a `name`)
//! and a CSV record (a `number`).

use serde_json::{Map, Value};

use super::{EmailSent, FileAction, FileOutcome, RecordOutcome, RecordStatus};
use crate::run::{Event, RunReport};

/// The files a run fetched, put, renamed and left where they are (skipped), in order.
pub fn file_outcomes(report: &RunReport) -> Vec<FileOutcome> {
    files_of(&report.events)
}

/// The files fetched, put and renamed among `events`, in order.
pub fn files_of(events: &[Event]) -> Vec<FileOutcome> {
    events
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
            Event::Skipped {
                connection,
                location,
                name,
                ..
            } => Some(FileOutcome {
                action: FileAction::Skipped,
                connection: connection.clone(),
                location: location.clone(),
                name: name.clone(),
                renamed_to: None,
                bytes: None,
            }),
            _ => None,
        })
        .collect()
}

/// The REST requests a run sent, in order, with how each ended.
pub fn record_outcomes(report: &RunReport) -> Vec<RecordOutcome> {
    records_of(&report.events)
}

/// The REST requests among `events`, in order, with how each ended.
pub fn records_of(events: &[Event]) -> Vec<RecordOutcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Request {
                connection,
                method,
                url,
                status,
                suppressed,
                record,
                message,
                rejected,
                ..
            } => Some(RecordOutcome {
                record: record.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                message: message.clone(),
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
    emails_of(&report.events)
}

/// The emails sent among `events`, in order.
pub fn emails_of(events: &[Event]) -> Vec<EmailSent> {
    events
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
