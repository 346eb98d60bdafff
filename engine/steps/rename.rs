//! `rename`: rename a file at its location (mark a source as sent, or as failed at a record).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::connectors::Capability;
use crate::run::{Event, Exec, Scope, StepError};
use crate::template::Tpl;

/// Configuration of a `rename` step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameStep {
    /// Name of a file connection.
    pub connection: String,
    /// Template: the directory or `namespace/bucket`.
    pub location: String,
    /// Template: the current name.
    pub from: String,
    /// Template: the new name.
    pub to: String,
}

/// A compiled `rename` step.
#[derive(Debug)]
pub struct RenamePlan {
    connection: String,
    location: Tpl,
    from: Tpl,
    to: Tpl,
}

impl RenameStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> RenamePlan {
        RenamePlan {
            connection: cx.connection(
                &format!("{ptr}/connection"),
                &self.connection,
                Capability::Files,
            ),
            location: cx.location(&format!("{ptr}/location"), &self.connection, &self.location),
            from: cx.template(&format!("{ptr}/from"), &self.from),
            to: cx.template(&format!("{ptr}/to"), &self.to),
        }
    }
}

impl RenamePlan {
    /// Renames (or, in a dry run, says it would).
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<Value, StepError> {
        let location = ex.render(&self.location, scope)?;
        let from = ex.render(&self.from, scope)?;
        let to = ex.render(&self.to, scope)?;
        let store = ex.files(&self.connection)?;
        if from != to && !ex.dry_run() {
            store
                .rename(&location, &from, &to)
                .await
                .map_err(|e| ex.connector_error(&self.connection, e))?;
            ex.note_renamed(&self.connection, &location, &from, &to, scope.step());
        }
        ex.event(Event::Renamed {
            connection: self.connection.clone(),
            location,
            from: from.clone(),
            to: to.clone(),
        });
        Ok(json!({ "from": from, "to": to }))
    }
}
