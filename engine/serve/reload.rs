//! Hot reload: the flow directory, the lookups and the connections file are watched — the
//! ones given and the ones found by default (`lookups/` beside the flow directory,
//! `connections.yaml` in it), however `serve` was started. A change is compiled first, with
//! the same compiler as `ferry validate`, and swapped in only when it is valid. An invalid
//! change is reported (one log line, `/api/v1/status`, the monitoring page) and the old flows
//! keep running.
//!
//! A reload waits until the files have stopped changing: no event for [`SETTLE`], then the
//! same sizes and modification times twice [`SETTLE`] apart, and again after the compile
//! (else it starts over), so a half-written file is not loaded. It compiles on a blocking
//! thread, off the request path. Symbolic links to directories are not followed (as
//! [`crate::compile::load`] does not).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher as _};

use super::app::App;
use crate::compile::{Inputs, Project, load_limited, resolved};

/// How long the files must stay unchanged before a reload.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// The variable naming the file `serve`'s environment comes from (the packaged systemd unit
/// sets it to `/etc/ferry/ferry.env`, its `EnvironmentFile`): a message about an unset
/// variable then says to set it there.
pub const ENV_FILE_VAR: &str = "FERRY_ENV_FILE";

/// The trigger credentials that flows of `project` name but the environment does not set
/// (or sets empty), one sentence each, saying where to set them: in the file that
/// [`ENV_FILE_VAR`] names, else in the environment of `ferry serve`.
pub fn unset_trigger_credentials(project: &Project) -> Vec<String> {
    let place = match std::env::var(ENV_FILE_VAR) {
        Ok(file) if !file.is_empty() => file,
        _ => "the environment of `ferry serve`".to_owned(),
    };
    let mut out = Vec::new();
    for plan in project.flows.values() {
        let Some(auth) = plan
            .trigger
            .rest
            .as_ref()
            .and_then(|r| r.basic_auth.as_ref())
        else {
            continue;
        };
        let unset: Vec<&str> = [&auth.username_env, &auth.password_env]
            .into_iter()
            .filter(|v| std::env::var(v).map_or(true, |x| x.is_empty()))
            .map(String::as_str)
            .collect();
        if !unset.is_empty() {
            let verb = if unset.len() == 1 { "is" } else { "are" };
            let unset = unset.join(" and ");
            out.push(format!(
                "flow '{}' ({}) takes its trigger's credentials from {} and {}, but {unset} {verb} not set or empty: set {unset} in {place} (or remove `basic_auth` to use the operator's)",
                plan.id,
                plan.path.display(),
                auth.username_env,
                auth.password_env,
            ));
        }
    }
    out
}

/// Watches `inputs` and reloads `app` on change, until shutdown begins.
pub async fn watch(app: Arc<App>, inputs: Inputs, max_file_bytes: u64) -> Result<(), WatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let mut watcher = notify::RecommendedWatcher::new(
        move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event
                && !matches!(e.kind, notify::EventKind::Access(_))
            {
                let _ = tx.try_send(());
            }
        },
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(|source| WatchError {
        path: PathBuf::new(),
        source,
    })?;
    let sources = resolved(&inputs);
    for (p, mode) in watched(&sources) {
        if p.exists() {
            watcher.watch(&p, mode).map_err(|source| WatchError {
                path: p.clone(),
                source,
            })?;
        }
    }
    let mut last_failure: Option<Vec<String>> = None;
    'events: loop {
        tokio::select! {
            () = app.stopping().cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        loop {
            // quiet for SETTLE, then the same files twice
            loop {
                tokio::select! {
                    () = app.stopping().cancelled() => break 'events,
                    got = rx.recv() => if got.is_none() { break 'events } else { continue },
                    () = tokio::time::sleep(SETTLE) => break,
                }
            }
            let before = fingerprint(&sources);
            tokio::time::sleep(SETTLE).await;
            if fingerprint(&sources) != before || !rx.is_empty() {
                continue;
            }
            let inputs = inputs.clone();
            let compiled = tokio::task::spawn_blocking(move || {
                let (project, diags) = load_limited(&inputs, max_file_bytes);
                let problems: Vec<String> = match &project {
                    Some(p) => unset_trigger_credentials(p),
                    None => diags
                        .iter()
                        .filter(|d| d.severity == crate::diag::Severity::Error)
                        .map(crate::diag::Diagnostic::one_line)
                        .collect(),
                };
                (project, problems)
            })
            .await;
            if fingerprint(&sources) != before {
                continue; // changed while compiling: compile the newer files
            }
            match compiled {
                Ok((project, problems)) => {
                    apply(&app, project, problems, &mut last_failure);
                }
                Err(e) => tracing::error!(error = %e, "reload failed"),
            }
            break;
        }
    }
    drop(watcher);
    Ok(())
}

/// What is watched: the flow paths and the lookups directory, recursively; the connections
/// file through its directory (editors replace files).
fn watched(sources: &Inputs) -> Vec<(PathBuf, RecursiveMode)> {
    let mut paths: Vec<(PathBuf, RecursiveMode)> = sources
        .paths
        .iter()
        .chain(sources.lookups.iter())
        .map(|p| (p.clone(), RecursiveMode::Recursive))
        .collect();
    if let Some(dir) = sources
        .connections
        .as_ref()
        .and_then(|c| c.parent())
        .filter(|d| !d.as_os_str().is_empty())
        && !paths.iter().any(|(p, _)| same_dir(p, dir))
    {
        paths.push((dir.to_path_buf(), RecursiveMode::NonRecursive));
    }
    paths
}

fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Sizes and modification times of every file a load reads (the walk of
/// [`crate::compile::load`]: no symbolic links to directories, no dot entries).
fn fingerprint(sources: &Inputs) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>, depth: usize) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            if depth > 16 {
                return;
            }
            let Ok(rd) = std::fs::read_dir(p) else {
                return;
            };
            for e in rd.filter_map(Result::ok) {
                let linked_dir = e.file_type().is_ok_and(|t| t.is_symlink()) && e.path().is_dir();
                if !e.file_name().to_string_lossy().starts_with('.') && !linked_dir {
                    walk(&e.path(), out, depth + 1);
                }
            }
        } else {
            out.push((p.to_path_buf(), meta.len(), meta.modified().ok()));
        }
    }
    let mut out = Vec::new();
    for p in sources.paths.iter().chain(sources.lookups.iter()) {
        walk(p, &mut out, 0);
    }
    if let Some(c) = &sources.connections {
        walk(c, &mut out, 0);
    }
    out.sort();
    out
}

/// Swaps `project` in, or records why not: one log line per failure, and none again while
/// the same failure repeats.
fn apply(
    app: &App,
    project: Option<Project>,
    problems: Vec<String>,
    last_failure: &mut Option<Vec<String>>,
) -> Option<u64> {
    match project {
        Some(project) if problems.is_empty() => {
            *last_failure = None;
            let generation = app.swap(Arc::new(project));
            tracing::info!(generation, "flows reloaded");
            Some(generation)
        }
        _ => {
            if last_failure.as_ref() != Some(&problems) {
                tracing::error!(
                    problems = problems.len(),
                    first = %problems.first().map_or("", String::as_str),
                    "reload refused; the loaded flows keep running (all problems: /api/v1/status)"
                );
            }
            *last_failure = Some(problems.clone());
            app.reload_failed(problems);
            None
        }
    }
}

/// Compiles `inputs` and swaps the result in when valid. Returns the new generation, or
/// `None` when the change was refused.
pub fn reload(app: &App, inputs: &Inputs) -> Option<u64> {
    let (project, diags) = load_limited(inputs, crate::compile::DEFAULT_MAX_FILE_BYTES);
    let problems: Vec<String> = match &project {
        Some(p) => unset_trigger_credentials(p),
        None => diags
            .iter()
            .filter(|d| d.severity == crate::diag::Severity::Error)
            .map(crate::diag::Diagnostic::one_line)
            .collect(),
    };
    apply(app, project, problems, &mut None)
}
