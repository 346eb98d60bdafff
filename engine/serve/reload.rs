//! Hot reload: the flow directory, the lookups and the connections file are watched; a
//! change is compiled first, with the same compiler as `ferry validate`, and swapped in only
//! when it is valid. An invalid change is reported (log, `/api/v1/status`, the monitoring
//! page) and the old flows keep running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::app::App;
use crate::compile::{Inputs, load};

/// How long changes are gathered before one reload (editors write files in several steps).
const SETTLE: Duration = Duration::from_millis(300);

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Watches `inputs` and reloads `app` on change, until shutdown begins.
pub async fn watch(app: Arc<App>, inputs: Inputs) -> Result<(), WatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !matches!(e.kind, notify::EventKind::Access(_))
        {
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| WatchError {
        path: PathBuf::new(),
        source,
    })?;
    let mut paths: Vec<(PathBuf, RecursiveMode)> = inputs
        .paths
        .iter()
        .chain(inputs.lookups.iter())
        .map(|p| (p.clone(), RecursiveMode::Recursive))
        .collect();
    // the connections file is watched through its directory (editors replace files)
    if let Some(dir) = inputs
        .connections
        .as_ref()
        .and_then(|c| c.parent())
        .filter(|d| !d.as_os_str().is_empty())
    {
        paths.push((dir.to_path_buf(), RecursiveMode::NonRecursive));
    }
    for (p, mode) in &paths {
        if p.exists() {
            watcher.watch(p, *mode).map_err(|source| WatchError {
                path: p.clone(),
                source,
            })?;
        }
    }
    loop {
        tokio::select! {
            () = app.stopping().cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        tokio::time::sleep(SETTLE).await;
        while rx.try_recv().is_ok() {}
        reload(&app, &inputs);
    }
    drop(watcher);
    Ok(())
}

/// Compiles `inputs` and swaps the result in when valid. Returns the new generation, or
/// `None` when the change was refused.
pub fn reload(app: &App, inputs: &Inputs) -> Option<u64> {
    let (project, diags) = load(inputs);
    match project {
        Some(project) => {
            let generation = app.swap(Arc::new(project));
            tracing::info!(generation, "flows reloaded");
            Some(generation)
        }
        None => {
            let lines: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == crate::diag::Severity::Error)
                .map(crate::diag::Diagnostic::one_line)
                .collect();
            for l in &lines {
                tracing::error!(diagnostic = %l, "reload refused; the loaded flows keep running");
            }
            app.reload_failed(lines);
            None
        }
    }
}
