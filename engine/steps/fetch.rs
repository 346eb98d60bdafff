//! `fetch`: copy a file from a connection into the run's spool directory.
//!
//! Output: `{path, name, size}`; `path` is a local spool file that later steps (`invoke`
//! puts and uploads, `for_each` over CSV records) read as a stream. The spool is removed
//! when the run ends.
//!
//! From an object store that copies on the server (S3, OCI), a fetch reads only the object's
//! size and entity tag (`HeadObject`): the body stays where it is until a step reads the
//! path. A put of it to the same service with the same credentials is then a copy on the
//! server (no byte passes through ferry); any other reader (a put elsewhere, a request body,
//! a loop over its CSV records) downloads it first, through [`materialize`]. A file gone
//! since it was listed is found by the fetch as before; one changed after the fetch fails
//! the copy (it is conditional on the entity tag).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use std::sync::Arc;

use crate::compile::FlowCx;
use crate::connectors::local::HeldFile;
use crate::connectors::{Capability, ConnectorError};
use crate::run::{ErrorKind, Event, Exec, Scope, StepError, StepResult};
use crate::template::Tpl;

/// Configuration of a `fetch` step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchStep {
    /// Name of a file connection.
    pub connection: String,
    /// Template: the directory or `namespace/bucket`.
    pub location: String,
    /// Template: the file name.
    pub name: String,
}

/// A compiled `fetch` step.
#[derive(Debug)]
pub struct FetchPlan {
    connection: String,
    location: Tpl,
    name: Tpl,
}

impl FetchStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> FetchPlan {
        FetchPlan {
            connection: cx.connection(
                &format!("{ptr}/connection"),
                &self.connection,
                Capability::Files,
            ),
            location: cx.location(&format!("{ptr}/location"), &self.connection, &self.location),
            name: cx.template(&format!("{ptr}/name"), &self.name),
        }
    }
}

impl FetchPlan {
    /// Fetches. A file gone since it was listed (someone else took it) is a `skipped`
    /// event and ends the loop item; a spool that cannot take the file says so (the log names
    /// the spool's directory).
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        let location = ex.render(&self.location, scope)?;
        let name = ex.render(&self.name, scope)?;
        let store = ex.files(&self.connection)?;
        // object stores take names with `/` (a file in a folder); the spool file is flat
        store
            .check_name(&name)
            .map_err(|e| ex.connector_error(&self.connection, e))?;
        let path = ex.spool_path(spool_name(name.rsplit('/').next().unwrap_or(&name)))?;
        let got = if store.copies_on_server() {
            match store.head(&location, &name).await {
                Some(Ok((size, etag))) => {
                    ex.defer_fetch(
                        path.clone(),
                        RemoteFile {
                            connection: self.connection.clone(),
                            location: location.clone(),
                            name: name.clone(),
                            size,
                            etag,
                        },
                    );
                    Ok(size)
                }
                Some(Err(e)) => Err(e),
                None => get(ex, store, &location, &name, &path).await,
            }
        } else if !ex.dry_run()
            && let Some(opened) = store.open_held(&location, &name).await
        {
            // a local file: held open for the put, no spool file (see `HeldFile`)
            opened.map(|held| {
                let size = held.size();
                ex.hold_fetch(path.clone(), Arc::new(held));
                size
            })
        } else {
            get(ex, store, &location, &name, &path).await
        };
        let size = match got {
            Ok(size) => size,
            Err(ConnectorError::NotFound(what))
                if scope.in_loop()
                    || ex
                        .renamed_by_run(&self.connection, &location, &name)
                        .is_some() =>
            {
                let _ = std::fs::remove_file(&path);
                // gone because this run renamed it first: the flow's order is wrong
                if let Some((to, by)) = ex.renamed_by_run(&self.connection, &location, &name) {
                    return Err(StepError::new(
                        ErrorKind::Config,
                        format!(
                            "{}:{}/{name} was renamed to {to} by this run (step '{by}') before step '{}' fetched it: \
                             fetch it first (a step runs after the steps its `needs:` and templates name)",
                            self.connection,
                            location.trim_end_matches('/'),
                            scope.step()
                        ),
                    ));
                }
                ex.event(Event::Skipped {
                    connection: self.connection.clone(),
                    location,
                    name: name.clone(),
                    reason: format!("gone since it was listed ({what})"),
                });
                return Ok(StepResult::Skip);
            }
            Err(ConnectorError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                let _ = std::fs::remove_file(&path);
                // the spool's place on this server is for the operator's log; the error
                // goes to the flow (its emails, acknowledgements sent outside)
                tracing::error!(spool = %ex.spool_dir().display(), connection = %self.connection,
                    error = %source, "the spool is full");
                return Err(StepError::new(
                    ErrorKind::Connector,
                    format!(
                        "the spool cannot take {name} from connection '{}': {source} \
                         (free space in ferry's spool directory, named in its log, or choose another --data)",
                        self.connection
                    ),
                ));
            }
            Err(e) => return Err(ex.connector_error(&self.connection, e)),
        };
        scope.spooled(path.clone());
        ex.event(Event::Fetched {
            connection: self.connection.clone(),
            location,
            name: name.clone(),
            bytes: size,
        });
        Ok(StepResult::Value(
            json!({ "path": path.display().to_string(), "name": name, "size": size }),
        ))
    }
}

/// A fetched file still on its object store, which a spool path stands for until
/// something reads it.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    /// The file connection.
    pub connection: String,
    /// Its location there.
    pub location: String,
    /// Its name there.
    pub name: String,
    /// Its size when fetched.
    pub size: u64,
    /// Its entity tag when fetched, if the store gave one.
    pub etag: Option<String>,
}

/// Downloads `store`'s `location/name` into the spool file `path`, showing progress.
async fn get(
    ex: &Exec<'_>,
    store: &crate::connectors::FileStore,
    location: &str,
    name: &str,
    path: &std::path::Path,
) -> Result<u64, ConnectorError> {
    let tick = ex.transfer_progress(name, path, None, true);
    let got = store.get(location, name, path).await;
    drop(tick);
    got
}

/// What a spool path stands for while it holds no file.
#[derive(Debug, Clone)]
pub enum Deferred {
    /// A file still on its object store.
    Remote(RemoteFile),
    /// A local file held open (see [`HeldFile`]).
    Held(Arc<HeldFile>),
}

/// The file a fetch holds open for the spool path `path`, when `store` reads it itself
/// (a put to a local directory): the put then needs no spool file.
pub fn held_for(
    ex: &Exec<'_>,
    store: &crate::connectors::FileStore,
    path: &std::path::Path,
) -> Option<Arc<HeldFile>> {
    if !store.reads_held() {
        return None;
    }
    ex.held_fetch(path, false)
}

/// Makes sure the spool file `path` holds its bytes before a step reads it: a file whose
/// fetch was deferred (see the module's documentation) is downloaded now, a local file
/// held open is linked or copied into the spool. Any other path is left as it is.
pub async fn materialize(ex: &Exec<'_>, path: &std::path::Path) -> Result<(), StepError> {
    if let Some(held) = ex.held_fetch(path, true) {
        let dest = path.to_path_buf();
        let made = tokio::task::spawn_blocking(move || held.materialize(&dest))
            .await
            .map_err(|e| StepError::new(ErrorKind::Connector, format!("the spool: {e}")))?;
        return made.map(|_| ()).map_err(|e| {
            StepError::new(
                ErrorKind::Connector,
                format!(
                    "the spool cannot take a fetched file: {}",
                    e.naming(ex.spool_dir(), "the spool")
                ),
            )
        });
    }
    let Some(file) = ex.deferred_fetch(path, true) else {
        return Ok(());
    };
    let store = ex.files(&file.connection)?;
    match get(ex, store, &file.location, &file.name, path).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            let connection = file.connection.clone();
            ex.defer_fetch(path.to_path_buf(), file);
            Err(ex.connector_error(&connection, e))
        }
    }
}

/// Bytes of a file's name kept in its spool file's name: the run's spool adds a counter
/// (`000001-`), and a name the source holds must still fit in 255 bytes there.
const SPOOL_NAME_BYTES: usize = 200;

/// The name a fetched file is spooled under: its own, cut to [`SPOOL_NAME_BYTES`] at a
/// character boundary (the spool's counter keeps it unique; the file keeps its full name
/// in the step's output).
fn spool_name(name: &str) -> &str {
    if name.len() <= SPOOL_NAME_BYTES {
        return name;
    }
    let mut end = SPOOL_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod spool_name_tests {
    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        assert_eq!(super::spool_name("a.csv"), "a.csv");
        let long = "é".repeat(125); // 250 bytes
        let cut = super::spool_name(&long);
        assert_eq!(cut.len(), 200);
        assert!(long.starts_with(cut));
    }
}
