//! `fetch`: copy a file from a connection into the run's spool directory.
//!
//! Output: `{path, name, size}`; `path` is a local spool file that later steps (`invoke`
//! puts and uploads, `for_each` over CSV records) read as a stream. The spool is removed
//! when the run ends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::connectors::Capability;
use crate::run::{Event, Exec, Scope, StepError};
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
    /// Fetches.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<Value, StepError> {
        let location = ex.render(&self.location, scope)?;
        let name = ex.render(&self.name, scope)?;
        let store = ex.files(&self.connection)?;
        // object stores take names with `/` (a file in a folder); the spool file is flat
        store
            .check_name(&name)
            .map_err(|e| ex.connector_error(&self.connection, e))?;
        let path = ex.spool_path(name.rsplit('/').next().unwrap_or(&name));
        let _tick = ex.transfer_progress(&name, &path, None, true);
        let size = store
            .get(&location, &name, &path)
            .await
            .map_err(|e| ex.connector_error(&self.connection, e))?;
        ex.event(Event::Fetched {
            connection: self.connection.clone(),
            location,
            name: name.clone(),
            bytes: size,
        });
        Ok(json!({ "path": path.display().to_string(), "name": name, "size": size }))
    }
}
