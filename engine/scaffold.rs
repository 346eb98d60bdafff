//! `ferry new`: a new flow and its test file from a template (`examples/new/`).
//!
//! The templates are generic data: a file transfer with a `Sent-` rename and emails, a CSV
//! record loop to a REST endpoint with the `_ErrInRcd_N` restart, and a REST-triggered
//! delivery. Placeholders name the flow and the connections, which are taken from the flow
//! directory's `connections.yaml` (its first file, REST and mail connections), so the new
//! flow validates and its test passes as written.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// Files from one location to another, sources renamed `Sent-`, no-file and summary emails.
    FileTransfer,
    /// Each record of CSV files to a REST endpoint, `_ErrInRcd_N` on failure, resume at N.
    CsvToRest,
    /// A REST trigger (JSON + file parts): put the file, acknowledge over REST.
    RestTrigger,
}

impl Template {
    fn sources(self) -> (&'static str, &'static str) {
        match self {
            Template::FileTransfer => (
                include_str!("../examples/new/file_transfer.yaml"),
                include_str!("../examples/new/file_transfer.test.yaml"),
            ),
            Template::CsvToRest => (
                include_str!("../examples/new/csv_to_rest.yaml"),
                include_str!("../examples/new/csv_to_rest.test.yaml"),
            ),
            Template::RestTrigger => (
                include_str!("../examples/new/rest_trigger.yaml"),
                include_str!("../examples/new/rest_trigger.test.yaml"),
            ),
        }
    }
}

/// Why a flow could not be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// A bad flow id.
    #[error("a flow id is letters, digits, '.', '_' and '-': '{0}'")]
    BadId(String),
    /// The flow directory's connections cannot be read.
    #[error("{0}")]
    Connections(String),
    /// The flow directory lacks a kind of connection the template needs.
    #[error("{path} has no {what} connection, which the template needs")]
    Missing {
        /// The connections file.
        path: String,
        /// `file`, `REST` or `mail`.
        what: &'static str,
    },
    /// A file exists already.
    #[error("{0} exists already; nothing was written")]
    Exists(String),
    /// Writing failed.
    #[error("writing {0}: {1}")]
    Io(String, std::io::Error),
}

/// Writes `<flows>/<file>.yaml` and `<flows>/tests/<file>.test.yaml` for flow `id`;
/// returns the two paths.
pub fn new_flow(
    flows: &Path,
    template: Template,
    id: &str,
    name: Option<&str>,
) -> Result<(PathBuf, PathBuf), NewError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(NewError::BadId(id.to_string()));
    }
    let conn_path = flows.join("connections.yaml");
    let doc = crate::yaml::SourceDoc::load(&conn_path)
        .map_err(|d| NewError::Connections(d.one_line()))?;
    let conns = doc
        .value
        .get("connections")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let first = |kinds: &[&str], what: &'static str| {
        conns
            .iter()
            .find(|(_, v)| {
                v.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| kinds.contains(&k))
            })
            .map(|(k, _)| k.clone())
            .ok_or(NewError::Missing {
                path: conn_path.display().to_string(),
                what,
            })
    };
    let files = first(&["local", "ftp", "sftp", "s3", "oci"], "file")?;
    let http = first(&["http"], "REST");
    let mail = first(&["outbox", "smtp"], "mail");
    let file = id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>();
    let flow_path = flows.join(format!("{file}.yaml"));
    let test_path = flows.join("tests").join(format!("{file}.test.yaml"));
    for p in [&flow_path, &test_path] {
        if p.exists() {
            return Err(NewError::Exists(p.display().to_string()));
        }
    }
    let (flow_src, test_src) = template.sources();
    let fill = |s: &str| -> Result<String, NewError> {
        let mut out = s
            .replace("__ID__", id)
            .replace("__NAME__", name.unwrap_or(id))
            .replace("__FILES__", &files);
        if out.contains("__HTTP__") {
            out = out.replace("__HTTP__", http.as_ref().map_err(clone_missing)?);
        }
        if out.contains("__MAIL__") {
            out = out.replace("__MAIL__", mail.as_ref().map_err(clone_missing)?);
        }
        Ok(out)
    };
    let (flow_text, test_text) = (fill(flow_src)?, fill(test_src)?);
    std::fs::create_dir_all(flows.join("tests"))
        .map_err(|e| NewError::Io(flows.join("tests").display().to_string(), e))?;
    std::fs::write(&flow_path, flow_text)
        .map_err(|e| NewError::Io(flow_path.display().to_string(), e))?;
    std::fs::write(&test_path, test_text)
        .map_err(|e| NewError::Io(test_path.display().to_string(), e))?;
    Ok((flow_path, test_path))
}

fn clone_missing(e: &NewError) -> NewError {
    match e {
        NewError::Missing { path, what } => NewError::Missing {
            path: path.clone(),
            what,
        },
        other => NewError::Connections(other.to_string()),
    }
}
