//! `ferry demo` and `ferry graph`.
//!
//! The demo is driven by a plan file (`examples/demo/demo.yaml`, embedded in the binary
//! with the sample files, flows and lookups, and unpacked into the demo directory so it runs
//! from anywhere; `--plan` reads another from disk): which flow directory,
//! lookups and connections template to use, a tree of sample files to seed, and the runs to
//! make (with trigger input for REST-triggered flows). It starts the DACS and DERMS
//! stand-ins on a free port, writes a connections file pointing at them and at local
//! directories under the demo directory, runs each flow and prints what each did. Sample
//! files are seeded only on the first run (or with `--reset`), so a second run shows honest
//! "no file found" runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::compile::{FlowPlan, Inputs, load};
use crate::history::{RunRequest, Store, Trigger};
use crate::run::{Engine, RunOptions};
use crate::steps::Block;

/// A demo plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoPlan {
    /// Flow directory, relative to the plan.
    pub flows: PathBuf,
    /// Lookups directory, relative to the plan.
    pub lookups: PathBuf,
    /// Connections template, relative to the plan; `${DEMO_DIR}` and `${STANDIN_URL}` are
    /// replaced.
    pub connections: PathBuf,
    /// A directory tree copied to `<demo dir>/data` on first run.
    pub seed: PathBuf,
    /// The runs, in order.
    pub runs: Vec<DemoRun>,
}

/// One run of the demo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoRun {
    /// Flow id.
    pub flow: String,
    /// Trigger input parts: name → file relative to the plan.
    #[serde(default)]
    pub input: BTreeMap<String, PathBuf>,
}

/// The demo's files embedded in the binary (see `build.rs`): the plan and its sample files
/// under `examples/demo`, the shipped flows and lookups, by path relative to the repository.
mod bundle {
    include!(concat!(env!("OUT_DIR"), "/demo_bundle.rs"));
}

/// Where the embedded plan lands under the demo directory.
const EMBEDDED_PLAN: &str = "examples/demo/demo.yaml";

/// The port the demo's stand-ins try first (`ferry stand-in`'s default), so that the
/// connections it writes work again with a plain `ferry stand-in`.
const STANDIN_PORT: u16 = 7878;

/// Writes the embedded demo files under `dir` (those missing: an edited flow is kept) and
/// returns the path of the plan.
pub fn unpack(dir: &Path) -> anyhow::Result<PathBuf> {
    for (rel, bytes) in bundle::FILES {
        let path = dir.join(rel);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir.join(EMBEDDED_PLAN))
}

/// Runs the demo from `plan_path` (none: the plan embedded in the binary, unpacked into
/// `dir`), records its runs in `<dir>/state`, and prints the commands to go on with;
/// returns whether every run succeeded or found no files.
pub async fn run(
    plan_path: Option<&Path>,
    dir: &Path,
    reset: bool,
    out: &mut impl std::io::Write,
) -> anyhow::Result<bool> {
    if reset && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let plan_path = match plan_path {
        Some(p) => p.to_path_buf(),
        None => unpack(dir)?,
    };
    let text = std::fs::read_to_string(&plan_path)
        .with_context(|| format!("reading demo plan {}", plan_path.display()))?;
    let plan: DemoPlan = serde_saphyr_free_parse(&text, &plan_path)?;
    let base = plan_path.parent().unwrap_or(Path::new("."));
    let data = dir.join("data");
    let seeded = !data.exists();
    if seeded {
        copy_tree(&base.join(&plan.seed), &data)?;
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", STANDIN_PORT)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("starting the stand-ins")?,
    };
    let standin_addr = listener.local_addr()?;
    let standin_url = format!("http://{standin_addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let standin_task = tokio::spawn(crate::standin::StandIn::default().serve(listener, async {
        let _ = stop_rx.await;
    }));
    let abs_dir = std::fs::canonicalize(dir)?;
    let template = std::fs::read_to_string(base.join(&plan.connections))?;
    let conn_text = template
        .replace("${DEMO_DIR}", &abs_dir.display().to_string())
        .replace("${STANDIN_URL}", &standin_url);
    let conn_path = abs_dir.join("connections.yaml");
    std::fs::write(&conn_path, conn_text)?;
    let flows_dir = std::fs::canonicalize(base.join(&plan.flows))
        .with_context(|| format!("the demo's flows {}", base.join(&plan.flows).display()))?;
    let lookups_dir = std::fs::canonicalize(base.join(&plan.lookups))
        .with_context(|| format!("the demo's lookups {}", base.join(&plan.lookups).display()))?;
    let (project, diags) = load(&Inputs {
        paths: vec![flows_dir.clone()],
        lookups: Some(lookups_dir.clone()),
        connections: Some(conn_path.clone()),
    });
    let Some(project) = project else {
        for d in &diags {
            writeln!(out, "{}", d.render())?;
        }
        bail!("the demo's flows do not validate");
    };
    let project = Arc::new(project);
    writeln!(
        out,
        "ferry demo — {} ({}), stand-ins at {}, email outbox {}\n",
        abs_dir.display(),
        if seeded {
            "sample files seeded"
        } else {
            "reusing earlier files; --reset to start over"
        },
        standin_url,
        abs_dir.join("outbox").display()
    )?;
    let state_dir = abs_dir.join("state");
    let store = match Store::open_sqlite(&state_dir).await {
        Ok(s) => Some(s),
        Err(e) => {
            writeln!(out, "warning: the demo's runs are not recorded: {e}")?;
            None
        }
    };
    let engine = Engine::new(project.clone(), RunOptions::default());
    let mut rows = Vec::new();
    let mut all_ok = true;
    for r in &plan.runs {
        if !project.flows.contains_key(&r.flow) {
            bail!("the demo names unknown flow '{}'", r.flow);
        }
        let parts: Vec<_> = r
            .input
            .iter()
            .map(|(k, p)| (k.clone(), base.join(p), None))
            .collect();
        let request = RunRequest {
            parts,
            ..RunRequest::new(r.flow.clone(), Trigger::Manual)
        };
        let recorded = crate::history::run_recorded(&engine, store.as_ref(), request).await?;
        for w in &recorded.warnings {
            writeln!(out, "warning: run history: {w}")?;
        }
        let report = recorded.report;
        writeln!(out, "{}", crate::report::render_report(&report))?;
        all_ok &= matches!(
            report.outcome,
            crate::run::Outcome::Succeeded | crate::run::Outcome::NoFiles
        );
        rows.push(report);
    }
    writeln!(
        out,
        "{:<34} {:<10} {:>6} {:>8} {:>8} {:>7}",
        "flow", "outcome", "files", "requests", "renames", "emails"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<34} {:<10} {:>6} {:>8} {:>8} {:>7}",
            r.flow,
            r.outcome.to_string(),
            r.files_moved(),
            r.requests_ok(),
            r.renames(),
            r.emails()
        )?;
    }
    let _ = stop_tx.send(());
    standin_task.await??;
    if let Some(store) = store {
        let last = match rows.last() {
            Some(r) => Some(short_id(&store, &r.run_id).await),
            None => None,
        };
        store.close().await;
        let state = shell_word(&state_dir.display().to_string());
        writeln!(out, "\nnext:")?;
        writeln!(out, "  ferry runs --data {state}")?;
        if let Some(id) = last {
            writeln!(out, "  ferry runs show {id} --data {state}")?;
        }
        writeln!(
            out,
            "  ferry stand-in --listen {standin_addr} &   # the stand-ins the demo's connections point at"
        )?;
        // a trigger's own credentials must be set for `ferry serve` to load its flow: the
        // command sets the unset ones (a demo user, a fresh password) for itself
        let mut creds = String::new();
        for plan in project.flows.values() {
            if let Some(auth) = plan
                .trigger
                .rest
                .as_ref()
                .and_then(|r| r.basic_auth.as_ref())
            {
                for (var, value) in [
                    (&auth.username_env, "demo".to_string()),
                    (
                        &auth.password_env,
                        uuid::Uuid::now_v7().simple().to_string(),
                    ),
                ] {
                    if std::env::var(var).is_ok_and(|v| !v.is_empty())
                        || creds.contains(&format!(" {var}="))
                    {
                        continue;
                    }
                    creds.push_str(&format!(" {}={value}", shell_word(var)));
                }
            }
        }
        let serve = if creds.is_empty() {
            "ferry serve".to_string()
        } else {
            format!("env{creds} ferry serve")
        };
        writeln!(
            out,
            "  {serve} --flows {} --lookups {} --connections {} --data {state}",
            shell_word(&flows_dir.display().to_string()),
            shell_word(&lookups_dir.display().to_string()),
            shell_word(&conn_path.display().to_string()),
        )?;
    }
    Ok(all_ok)
}

/// The shortest prefix of run id `id`, 8 characters at least, that names no other run in
/// `store` (`ferry runs show` and `ferry resubmit` take it).
async fn short_id(store: &Store, id: &str) -> String {
    for len in 8..id.len() {
        let prefix = &id[..len];
        match store.ids_starting_with(prefix, 2).await {
            Ok(ids) if ids.len() == 1 => return prefix.to_string(),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    id.to_string()
}

/// `word` as one shell word: as it is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+@,=".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn serde_saphyr_free_parse<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> anyhow::Result<T> {
    let doc = crate::yaml::SourceDoc::parse(path, text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: {}",
            path.display(),
            e.pos.line,
            e.pos.column,
            e.message
        )
    })?;
    serde_json::from_value(doc.value).with_context(|| format!("reading {}", path.display()))
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A flow's step graph as Mermaid (or DOT when `dot`).
pub fn graph(flow: &FlowPlan, dot: bool) -> String {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    walk(&flow.steps, None, &mut nodes, &mut edges);
    let mut s = String::new();
    if dot {
        let _ = writeln!(s, "digraph \"{}\" {{\n  rankdir=TB;", flow.id);
        for (id, label) in &nodes {
            let _ = writeln!(s, "  \"{id}\" [label=\"{label}\"];");
        }
        for (a, b, l) in &edges {
            let _ = writeln!(
                s,
                "  \"{a}\" -> \"{b}\"{};",
                if l.is_empty() {
                    String::new()
                } else {
                    format!(" [label=\"{l}\"]")
                }
            );
        }
        s.push_str("}\n");
    } else {
        let _ = writeln!(s, "flowchart TD");
        for (id, label) in &nodes {
            let _ = writeln!(s, "  {id}[\"{label}\"]");
        }
        for (a, b, l) in &edges {
            if l.is_empty() {
                let _ = writeln!(s, "  {a} --> {b}");
            } else {
                let _ = writeln!(s, "  {a} -->|{l}| {b}");
            }
        }
    }
    s
}

fn walk(
    block: &Block,
    parent: Option<(&str, String)>,
    nodes: &mut Vec<(String, String)>,
    edges: &mut Vec<(String, String, String)>,
) {
    let mut prev: Option<String> = None;
    for step in &block.steps {
        let mut label = format!("{}: {}", step.kind.name(), step.id);
        if step.run_on != crate::model::RunOn::Success {
            label.push_str(&format!(" (on {:?})", step.run_on).to_lowercase());
        }
        if step.when.is_some() {
            label.push_str(" [when]");
        }
        nodes.push((step.id.clone(), label));
        match (&prev, &parent) {
            (Some(p), _) => edges.push((p.clone(), step.id.clone(), String::new())),
            (None, Some((p, l))) => edges.push((p.to_string(), step.id.clone(), l.clone())),
            (None, None) => {}
        }
        for (label, child) in step.kind.children() {
            walk(child, Some((&step.id, label)), nodes, edges);
        }
        prev = Some(step.id.clone());
    }
}
