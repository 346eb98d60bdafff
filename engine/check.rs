//! `ferry check`: the connection test, like OIC's "Test" button.
//!
//! For every connection of a project: open it (secrets from the environment) and reach it —
//! list each location the flows use on a file connection (where the location depends on
//! lookups only), reach an HTTP connection's base URL, open a session with the mail relay.
//! Every connection is tried, whatever the others do.

use serde::Serialize;

use crate::compile::Project;
use crate::connectors::Connector;

/// The result of checking one connection (and location).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckRow {
    /// Connection name.
    pub connection: String,
    /// Its kind.
    pub kind: String,
    /// What was reached (a location, a URL, …).
    pub target: String,
    /// Whether it worked.
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// Checks every connection of `project`.
pub async fn check(project: &Project) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for (name, spec) in &project.connections {
        let row = |target: String, result: Result<String, String>| CheckRow {
            connection: name.clone(),
            kind: spec.kind().to_string(),
            target,
            ok: result.is_ok(),
            detail: result.unwrap_or_else(|e| e),
        };
        let connector = match spec.connect(name) {
            Ok(c) => c,
            Err(e) => {
                // name every variable missing, not only the first one connect met
                let missing = crate::connectors::missing_env(spec);
                let detail = if missing.len() > 1 {
                    format!("environment variables not set: {}", missing.join(", "))
                } else {
                    e.to_string()
                };
                rows.push(row(String::new(), Err(detail)));
                continue;
            }
        };
        match &connector {
            Connector::Files(store) => match project.locations.get(name) {
                Some(locations) if !locations.is_empty() => {
                    for loc in locations {
                        let r = store
                            .list(loc, "")
                            .await
                            .map(|files| format!("listed, {} file(s)", files.len()))
                            .map_err(|e| e.to_string());
                        rows.push(row(loc.clone(), r));
                    }
                }
                _ => rows.push(row(
                    String::new(),
                    store.check().await.map_err(|e| e.to_string()),
                )),
            },
            Connector::Http(http) => rows.push(row(
                http.base_url().to_string(),
                http.check().await.map_err(|e| e.to_string()),
            )),
            Connector::Mail(mail) => rows.push(row(
                String::new(),
                mail.check().await.map_err(|e| e.to_string()),
            )),
        }
    }
    rows
}

/// Renders check rows as a table.
pub fn render(rows: &[CheckRow]) -> String {
    let mut out = format!(
        "{:<12} {:<8} {:<7} {:<45} {}\n",
        "connection", "kind", "result", "target", "detail"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<12} {:<8} {:<7} {:<45} {}\n",
            r.connection,
            r.kind,
            if r.ok { "OK" } else { "FAILED" },
            r.target,
            r.detail
        ));
    }
    out
}
