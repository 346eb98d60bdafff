//! `list`: the files at a location whose names start with a prefix, in name order.
//!
//! Output: `{files: [{name, size}], count, skipped: [{name, reason}]}`. Names that start with
//! `exclude_prefix` are left out, so files already marked as sent are never picked up again.
//! `pattern` keeps the names a glob matches (`*.xml`, `ENROLL_??.csv`, `{a,b}*.csv`; `*` never
//! crosses a `/`), with `prefix` or without.
//! A name ferry refuses ([`crate::connectors::check_name`]: a path separator, `.` or `..`, a
//! control character) is left where it is: it is not in `files`, it is in `skipped` with the
//! reason, and the run records a `skipped` event for it; the other files go on.

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
    /// Template: keep names this glob matches (`*.xml`; `*` and `?` never match `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A compiled `list` step.
#[derive(Debug)]
pub struct ListPlan {
    connection: String,
    location: Tpl,
    prefix: Option<Tpl>,
    exclude_prefix: Option<Tpl>,
    pattern: Option<Tpl>,
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
            pattern: cx.opt_template(&format!("{ptr}/pattern"), self.pattern.as_deref()),
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
        let (mut files, mut refused) = store
            .list_checked(&location, &prefix)
            .await
            .map_err(|e| ex.connector_error(&self.connection, e))?;
        if let Some(ex_prefix) = exclude.filter(|p| !p.is_empty()) {
            files.retain(|f| !f.name.starts_with(&ex_prefix));
            refused.retain(|(name, _)| !name.starts_with(&ex_prefix));
        }
        if let Some(p) = &self.pattern {
            let glob = glob_matcher(&ex.render(p, scope)?)?;
            files.retain(|f| glob.is_match(&f.name));
            refused.retain(|(name, _)| glob.is_match(name));
        }
        // the run is found by the names it listed, the refused ones too
        ex.listed_files(
            files
                .iter()
                .map(|f| f.name.as_str())
                .chain(refused.iter().map(|(name, _)| name.as_str())),
        );
        ex.event(Event::Listed {
            connection: self.connection.clone(),
            location: location.clone(),
            prefix,
            count: files.len(),
        });
        let mut skipped = Vec::with_capacity(refused.len());
        for (name, reason) in refused {
            tracing::warn!(
                connection = %self.connection,
                %location,
                name = %name.escape_debug(),
                %reason,
                "a listed file is left where it is: ferry refuses its name"
            );
            ex.event(Event::Skipped {
                connection: self.connection.clone(),
                location: location.clone(),
                name: name.clone(),
                reason: format!("ferry refuses its name: {reason}"),
            });
            skipped.push(
                json!({ "name": name, "reason": format!("ferry refuses its name: {reason}") }),
            );
        }
        Ok(json!({ "count": files.len(), "files": files, "skipped": skipped }))
    }
}

/// A `pattern:` glob: `*` and `?` stay within one `/`-separated segment, `\\` escapes.
fn glob_matcher(pattern: &str) -> Result<globset::GlobMatcher, StepError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| {
            StepError::new(
                crate::run::ErrorKind::Config,
                format!("pattern '{}' is not a glob: {e}", pattern.escape_debug()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::glob_matcher;

    #[test]
    fn patterns_are_globs_within_a_segment() {
        let m = glob_matcher("*.xml").unwrap();
        assert!(m.is_match("a.xml"));
        assert!(!m.is_match("a.xml.bak"));
        assert!(!m.is_match("sub/a.xml"));
        let m = glob_matcher("IN_??.{csv,txt}").unwrap();
        assert!(m.is_match("IN_01.csv") && m.is_match("IN_02.txt"));
        assert!(!m.is_match("IN_1.csv"));
        let e = glob_matcher("[a-").unwrap_err();
        assert!(
            e.message.starts_with("pattern '[a-' is not a glob"),
            "{}",
            e.message
        );
    }
}
