//! `ferry new`: a new flow and its test file from a template (`examples/new/`); `ferry init`:
//! a new project around one (`examples/new/project/`).
//!
//! The templates are generic data: a file transfer with a `Sent-` rename and emails, a CSV
//! record loop to a REST endpoint with the `_ErrInRcd_N` restart, and a REST-triggered
//! delivery. Placeholders name the flow and the connections, which are taken from the flow
//! directory's `connections.yaml` (its first file, REST and mail connections), so the new
//! flow validates and its test passes as written.
//!
//! `ferry init [DIR]` writes a project that validates and whose test passes at once:
//! `flows/connections.yaml` (local directories and an `.eml` outbox under
//! `${FERRY_DATA:-./ferry-data}`), `lookups/emails.yaml` (the addresses its flow sends from and
//! to), `schemas/` (the JSON Schemas the files' modelines point at), a file transfer flow
//! with its test, and a sample file in the flow's inbox for its first run.

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
    /// The flow directory has no connections file: no project here.
    #[error("{0} not found: `ferry new` adds a flow to a project; `ferry init` makes one")]
    NoProject(String),
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
    if !conn_path.exists() {
        return Err(NewError::NoProject(conn_path.display().to_string()));
    }
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
    write_flow(
        (&flow_path, flow_src),
        (&test_path, test_src),
        id,
        name,
        &files,
        (&http, &mail),
    )?;
    Ok((flow_path, test_path))
}

/// The template's placeholders filled, written to `flow` and `test`.
fn write_flow(
    (flow_path, flow_src): (&Path, &str),
    (test_path, test_src): (&Path, &str),
    id: &str,
    name: Option<&str>,
    files: &str,
    (http, mail): (&Result<String, NewError>, &Result<String, NewError>),
) -> Result<(), NewError> {
    let fill = |s: &str| -> Result<String, NewError> {
        let mut out = s
            .replace("__ID__", id)
            .replace("__NAME__", name.unwrap_or(id))
            .replace("__FILES__", files);
        if out.contains("__HTTP__") {
            out = out.replace("__HTTP__", http.as_ref().map_err(clone_missing)?);
        }
        if out.contains("__MAIL__") {
            out = out.replace("__MAIL__", mail.as_ref().map_err(clone_missing)?);
        }
        Ok(out)
    };
    let (flow_text, test_text) = (fill(flow_src)?, fill(test_src)?);
    for (path, text) in [(flow_path, flow_text), (test_path, test_text)] {
        write_new(path, &text)?;
    }
    Ok(())
}

/// Writes `text` to `path`, making its directory.
fn write_new(path: &Path, text: &str) -> Result<(), NewError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| NewError::Io(dir.display().to_string(), e))?;
    }
    std::fs::write(path, text).map_err(|e| NewError::Io(path.display().to_string(), e))
}

/// Writes the JSON Schemas into the `schemas/` beside the flow directory `flows` (where the
/// modelines of the files `ferry new` writes point) when it is missing; returns it then.
pub fn schemas_beside(flows: &Path) -> Result<Option<PathBuf>, NewError> {
    let dir = match (flows.parent(), flows.file_name()) {
        (Some(parent), Some(_)) => parent.join("schemas"),
        _ => flows.join("..").join("schemas"),
    };
    if dir.exists() {
        return Ok(None);
    }
    write_schemas(&dir)?;
    Ok(Some(dir))
}

/// The flow id and file stem `ferry init` gives its flow.
pub const INIT_FLOW: (&str, &str) = ("hello-transfer", "hello_transfer");

/// The JSON Schemas of flow, connection, lookup and test files, by file name (what `ferry
/// schema` prints and `--write` writes).
pub fn schemas() -> [(&'static str, Value); 4] {
    [
        ("flow.schema.json", crate::compile::flow_schema()),
        (
            "connections.schema.json",
            crate::compile::connections_schema(),
        ),
        ("lookup.schema.json", crate::compile::lookup_schema()),
        ("test.schema.json", crate::testing::test_schema()),
    ]
}

/// Writes the JSON Schemas into `dir` (made if missing).
pub fn write_schemas(dir: &Path) -> Result<(), NewError> {
    for (name, schema) in schemas() {
        let text = serde_json::to_string_pretty(&schema)
            .map_err(|e| NewError::Io(name.to_string(), std::io::Error::other(e)))?;
        write_new(&dir.join(name), &format!("{text}\n"))?;
    }
    Ok(())
}

/// `ferry init`: writes a new project into `dir` (made if missing; refused if it has a
/// `flows/`, `lookups/` or `schemas/` already), with a sample file in the flow's inbox;
/// returns the files written, relative to `dir`.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, NewError> {
    for sub in ["flows", "lookups", "schemas"] {
        if dir.join(sub).exists() {
            return Err(NewError::Exists(dir.join(sub).display().to_string()));
        }
    }
    let (id, stem) = INIT_FLOW;
    let flow = PathBuf::from("flows").join(format!("{stem}.yaml"));
    let test = PathBuf::from("flows/tests").join(format!("{stem}.test.yaml"));
    let connections = PathBuf::from("flows/connections.yaml");
    let lookup = PathBuf::from("lookups/emails.yaml");
    write_new(
        &dir.join(&connections),
        include_str!("../examples/new/project/connections.yaml"),
    )?;
    write_new(
        &dir.join(&lookup),
        include_str!("../examples/new/project/emails.yaml"),
    )?;
    write_schemas(&dir.join("schemas"))?;
    // a file for the flow's first run, in the directory the connection reads by default
    let sample = PathBuf::from("ferry-data/files/inbox/data_1.csv");
    write_new(&dir.join(&sample), "id,name\n1,first\n")?;
    std::fs::create_dir_all(dir.join("ferry-data/files/outbox"))
        .map_err(|e| NewError::Io(dir.join("ferry-data/files/outbox").display().to_string(), e))?;
    let (_, test_src) = Template::FileTransfer.sources();
    write_flow(
        (
            &dir.join(&flow),
            include_str!("../examples/new/project/flow.yaml"),
        ),
        (&dir.join(&test), test_src),
        id,
        Some("Hello transfer"),
        "files",
        (&Ok("files".to_string()), &Ok("mail".to_string())),
    )?;
    Ok(vec![
        connections,
        lookup,
        PathBuf::from("schemas"),
        flow,
        test,
        sample,
    ])
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
