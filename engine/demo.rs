//! `ferry demo` and `ferry graph`.
//!
//! The demo is driven by a plan file (`examples/demo/demo.yaml`): which flow directory,
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
use crate::run::{Engine, RunOptions, trigger_input};
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

/// Runs the demo; returns whether every run succeeded or found no files.
pub async fn run(
    plan_path: &Path,
    dir: &Path,
    reset: bool,
    out: &mut impl std::io::Write,
) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(plan_path)
        .with_context(|| format!("reading demo plan {}", plan_path.display()))?;
    let plan: DemoPlan = serde_saphyr_free_parse(&text, plan_path)?;
    let base = plan_path.parent().unwrap_or(Path::new("."));
    let data = dir.join("data");
    if reset && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let seeded = !data.exists();
    if seeded {
        copy_tree(&base.join(&plan.seed), &data)?;
    }
    let stand_in = crate::standin::StandIn::default()
        .spawn()
        .await
        .context("starting the stand-ins")?;
    let abs_dir = std::fs::canonicalize(dir)?;
    let template = std::fs::read_to_string(base.join(&plan.connections))?;
    let conn_text = template
        .replace("${DEMO_DIR}", &abs_dir.display().to_string())
        .replace("${STANDIN_URL}", stand_in.base_url());
    let conn_path = dir.join("connections.yaml");
    std::fs::write(&conn_path, conn_text)?;
    let (project, diags) = load(&Inputs {
        paths: vec![base.join(&plan.flows)],
        lookups: Some(base.join(&plan.lookups)),
        connections: Some(conn_path),
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
        stand_in.base_url(),
        abs_dir.join("outbox").display()
    )?;
    let engine = Engine::new(project.clone(), RunOptions::default());
    let mut rows = Vec::new();
    let mut all_ok = true;
    for r in &plan.runs {
        let flow = project
            .flows
            .get(&r.flow)
            .with_context(|| format!("the demo names unknown flow '{}'", r.flow))?;
        let parts: Vec<_> = r
            .input
            .iter()
            .map(|(k, p)| (k.clone(), base.join(p), None))
            .collect();
        let input = trigger_input(flow, &parts)?;
        let report = engine.run(&r.flow, input).await?;
        writeln!(out, "{}", crate::cli::render_report(&report))?;
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
    stand_in.stop().await?;
    Ok(all_ok)
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
