//! `list`: the files at a location whose names start with a prefix, in name order.
//!
//! Output: `{files: [{name, size}], count}`. Names that start with `exclude_prefix` are left
//! out, so files already marked as sent are never picked up again.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::connectors::Capability;
use crate::run::{Event, Exec, Scope, StepError};
use crate::template::Tpl;

/// Configuration of a `list` step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListStep {
    /// Name of a file connection.
    pub connection: String,
    /// Template: the directory or `namespace/bucket` to list.
    pub location: String,
    /// Template: keep names starting with this (all names when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Template: drop names starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_prefix: Option<String>,
}

/// A compiled `list` step.
#[derive(Debug)]
pub struct ListPlan {
    connection: String,
    location: Tpl,
    prefix: Option<Tpl>,
    exclude_prefix: Option<Tpl>,
}

impl ListStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> ListPlan {
        ListPlan {
            connection: cx.connection(
                &format!("{ptr}/connection"),
                &self.connection,
                Capability::Files,
            ),
            location: cx.location(&format!("{ptr}/location"), &self.connection, &self.location),
            prefix: cx.opt_template(&format!("{ptr}/prefix"), self.prefix.as_deref()),
            exclude_prefix: cx.opt_template(
                &format!("{ptr}/exclude_prefix"),
                self.exclude_prefix.as_deref(),
            ),
        }
    }
}

impl ListPlan {
    /// Lists.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<Value, StepError> {
        let location = ex.render(&self.location, scope)?;
        let prefix = match &self.prefix {
            Some(p) => ex.render(p, scope)?,
            None => String::new(),
        };
        let exclude = match &self.exclude_prefix {
            Some(p) => Some(ex.render(p, scope)?),
            None => None,
        };
        let store = ex.files(&self.connection)?;
        let mut files = store
            .list(&location, &prefix)
            .await
            .map_err(|e| ex.connector_error(&self.connection, e))?;
        if let Some(ex_prefix) = exclude.filter(|p| !p.is_empty()) {
            files.retain(|f| !f.name.starts_with(&ex_prefix));
        }
        ex.event(Event::Listed {
            connection: self.connection.clone(),
            location,
            prefix,
            count: files.len(),
        });
        Ok(json!({ "count": files.len(), "files": files }))
    }
}
