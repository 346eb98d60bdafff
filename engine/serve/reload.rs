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
//!
//! Every [`POLL`] the watched paths are resolved again: one that now names another
//! directory or file (moved away and a copy put back; a symbolic link swapped, as a
//! Kubernetes ConfigMap's `..data` is) is watched where it points now, and the files'
//! sizes, times and inodes are compared with the ones loaded, so a change no event reported
//! is loaded too. A path that is gone or cannot be watched is logged and shown as the reload
//! failure on `/api/v1/status` until it is back; nothing is compiled meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher as _};

use super::app::App;
use crate::compile::{Inputs, Project, load_limited, resolved};
use crate::diag::Diagnostic;

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

/// The files a load of `inputs` reads, as they are now: taken before the flows `serve` starts
/// with are compiled, it is what [`watch`] first compares the files with, so a change made
/// while serve starts (before its watches are set) is reloaded, not taken as loaded.
#[derive(Debug)]
pub struct Baseline(Vec<Seen>);

/// [`Baseline`] of `inputs` now.
pub fn baseline(inputs: &Inputs) -> Baseline {
    Baseline(fingerprint(&resolved(inputs)))
}

/// Watches `inputs` and reloads `app` on change, until shutdown begins; `loaded` is what the
/// flows `app` runs were compiled from.
pub async fn watch(
    app: Arc<App>,
    inputs: Inputs,
    max_file_bytes: u64,
    loaded: Baseline,
) -> Result<(), WatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let sources = resolved(&inputs);
    let mut watches = Watches::new(tx, &sources);
    let mut broken = watches.refresh();
    report_watch(&app, &broken, None);
    // what the loaded flows were compiled from (or the last attempt)
    let mut known = loaded.0;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<Vec<String>> = None;
    'events: loop {
        tokio::select! {
            () = app.stopping().cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
            _ = poll.tick() => {
                watches.check(&app, &mut broken, &mut known);
                if fingerprint(&sources) == known {
                    continue;
                }
            }
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
            if before == known {
                break; // an event that changed nothing ferry reads
            }
            watches.check(&app, &mut broken, &mut known);
            if watches.any_gone() {
                // a directory or file being replaced, or gone: the loaded flows keep
                // running; the poll reports it and reloads once it is back
                break;
            }
            let inputs = inputs.clone();
            let compiled = tokio::task::spawn_blocking(move || {
                let (project, diags) = load_limited(&inputs, max_file_bytes);
                let problems = problems_of(project.as_ref(), &diags);
                (project, problems)
            })
            .await;
            if fingerprint(&sources) != before {
                continue; // changed while compiling: compile the newer files
            }
            known = before;
            match compiled {
                Ok((project, problems)) => {
                    if apply(&app, project, problems, &mut last_failure).is_some()
                        && !broken.is_empty()
                    {
                        // a reload clears the reported failure; the watch is still lost
                        app.reload_failed(broken.clone());
                    }
                }
                Err(e) => tracing::error!(error = %e, "reload failed"),
            }
            break;
        }
    }
    drop(watches);
    Ok(())
}

/// How often the watched paths are checked for having been replaced (a directory moved
/// away and a copy put back, a symbolic link swapped, as editors, `git checkout`, rsync and
/// Kubernetes ConfigMap updates do), and the files for having changed when no event said so.
pub const POLL: Duration = Duration::from_secs(2);

/// Logs (and shows on `/api/v1/status`, as a reload failure) what cannot be watched, when
/// that changed from `before`.
fn report_watch(app: &App, now: &[String], before: Option<&[String]>) {
    if now.is_empty() {
        if before.is_some_and(|b| !b.is_empty()) {
            tracing::info!("hot reload watches every flow, lookup and connections path again");
        }
        return;
    }
    for problem in now {
        tracing::warn!(problem = %problem, "hot reload cannot watch a path");
    }
    app.reload_failed(now.to_vec());
}

/// The identity of a watched path: the path it resolves to (through symbolic links) and
/// its device and inode.
type Identity = (PathBuf, u64, u64);

fn identity(p: &Path) -> Option<Identity> {
    let canonical = p.canonicalize().ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    let (dev, ino) = file_id(&meta);
    Some((canonical, dev, ino))
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The watcher and what each watched path resolved to when it was watched.
struct Watches {
    watcher: Result<notify::RecommendedWatcher, String>,
    roots: Vec<(PathBuf, RecursiveMode, Option<Identity>)>,
}

impl Watches {
    fn new(tx: tokio::sync::mpsc::Sender<()>, sources: &Inputs) -> Watches {
        let watcher = notify::RecommendedWatcher::new(
            move |event: notify::Result<notify::Event>| {
                if let Ok(e) = event
                    && !matches!(e.kind, notify::EventKind::Access(_))
                {
                    let _ = tx.try_send(());
                }
            },
            notify::Config::default().with_follow_symlinks(false),
        )
        .map_err(|e| format!("cannot start watching files: {e}"));
        Watches {
            watcher,
            roots: watched(sources)
                .into_iter()
                .map(|(p, mode)| (p, mode, None))
                .collect(),
        }
    }

    /// Watches what is there now (a replaced, renamed or re-linked directory); reports a
    /// change in what cannot be watched (`broken`); once everything is watched again,
    /// forgets `known` so that the flows are reloaded (which clears the report).
    fn check(&mut self, app: &App, broken: &mut Vec<String>, known: &mut Vec<Seen>) {
        let now = self.refresh();
        if now != *broken {
            report_watch(app, &now, Some(broken));
            if now.is_empty() {
                known.clear();
            }
            *broken = now;
        }
    }

    /// Whether a watched path does not exist now.
    fn any_gone(&self) -> bool {
        self.roots.iter().any(|(p, _, _)| identity(p).is_none())
    }

    /// Watches each path anew where it now resolves to another directory or file (or
    /// appeared, or went away); what cannot be watched, one sentence each.
    fn refresh(&mut self) -> Vec<String> {
        let watcher = match &mut self.watcher {
            Ok(w) => w,
            Err(e) => {
                return vec![format!(
                    "{e}; changes are found by polling every {} s",
                    POLL.as_secs()
                )];
            }
        };
        let mut problems = Vec::new();
        for (path, mode, seen) in &mut self.roots {
            let now = identity(path);
            if now != *seen {
                if let Some((old, _, _)) = seen.take() {
                    let _ = watcher.unwatch(&old);
                }
                if let Some(id) = &now {
                    match watcher.watch(&id.0, *mode) {
                        Ok(()) => *seen = now.clone(),
                        Err(e) => problems.push(format!(
                            "cannot watch {}: {e}; changes are found by polling every {} s",
                            path.display(),
                            POLL.as_secs()
                        )),
                    }
                }
                // a watched path that changed identity may hold changed files: the poll's
                // fingerprint check decides
            }
            if now.is_none() {
                problems.push(format!(
                    "{} is gone; it is watched again once it is back",
                    path.display()
                ));
            }
        }
        problems
    }
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

/// One file as a load reads it: path, size, modification time, device and inode (a
/// replaced file with the same size and time is still another file).
type Seen = (PathBuf, u64, Option<SystemTime>, (u64, u64));

/// Sizes, modification times and inodes of every file a load reads (the walk of
/// [`crate::compile::load`]: no symbolic links to directories, no dot entries).
fn fingerprint(sources: &Inputs) -> Vec<Seen> {
    fn walk(p: &Path, out: &mut Vec<Seen>, depth: usize) {
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
            out.push((
                p.to_path_buf(),
                meta.len(),
                meta.modified().ok(),
                file_id(&meta),
            ));
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
    let problems = problems_of(project.as_ref(), &diags);
    apply(app, project, problems, &mut None)
}

/// Why a load cannot be swapped in, one line each: the errors of `diags` (the loader hid
/// what files outside the flow's directories hold), else the trigger credentials
/// `project` lacks.
fn problems_of(project: Option<&Project>, diags: &[Diagnostic]) -> Vec<String> {
    match project {
        Some(p) => unset_trigger_credentials(p),
        None => diags
            .iter()
            .filter(|d| d.severity == crate::diag::Severity::Error)
            .map(Diagnostic::one_line)
            .collect(),
    }
}
