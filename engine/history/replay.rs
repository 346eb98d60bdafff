//! Recorded runs: start a run of a flow and record it ([`run_recorded`]), or run a
//! recorded run again from its kept trigger input ([`resubmit`]). Used by `ferry run` and
//! `ferry resubmit`, and meant for the server's triggers.
//!
//! Recording never changes a run: when the store fails, the run goes on and the failure is
//! returned beside the report ([`Recorded::warnings`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{HeldPart, HistoryError, InputPart, NewRun, Outcome, Store, StoredPart, Trigger};
use crate::compile::FlowPlan;
use crate::model::PartKind;
use crate::run::{
    Engine, Fence, Resume, RunFailure, RunReport, RunStart, new_run_id, trigger_input,
};

/// A run to start and record.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Flow id.
    pub flow: String,
    /// What starts it.
    pub trigger: Trigger,
    /// Trigger parts: name, path of its bytes, delivered file name (as
    /// [`crate::run::trigger_input`] takes them).
    pub parts: Vec<(String, PathBuf, Option<String>)>,
    /// The run this one resubmits.
    pub resubmit_of: Option<String>,
}

impl RunRequest {
    /// A run of `flow` without trigger parts.
    pub fn new(flow: impl Into<String>, trigger: Trigger) -> RunRequest {
        RunRequest {
            flow: flow.into(),
            trigger,
            parts: Vec::new(),
            resubmit_of: None,
        }
    }
}

/// A finished run and what went wrong recording it.
#[derive(Debug)]
pub struct Recorded {
    /// What the run did.
    pub report: RunReport,
    /// Recording failures (the run itself is unaffected); empty when all was recorded.
    pub warnings: Vec<HistoryError>,
}

/// Why a resubmit did not start.
#[derive(Debug, thiserror::Error)]
pub enum ResubmitError {
    /// The store failed or the run is unknown.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The run is still running.
    #[error("run '{0}' is still running")]
    StillRunning(String),
    /// The run was abandoned before its trigger input was kept: there is nothing to run
    /// again.
    #[error("run '{run}' was abandoned and cannot be resubmitted: {why}")]
    Abandoned {
        /// The run.
        run: String,
        /// Why (its recorded error).
        why: String,
    },
    /// The new run could not start.
    #[error(transparent)]
    Run(#[from] RunFailure),
}

/// A one-line summary of a trigger input, parts in name order: JSON parts compact (cut at
/// 120 characters), file parts as `name (N bytes)`.
pub fn input_summary(flow: &FlowPlan, input: &Map<String, Value>) -> Option<String> {
    if input.is_empty() {
        return None;
    }
    let mut names: Vec<&String> = input.keys().collect();
    names.sort();
    let parts: Vec<String> = names
        .into_iter()
        .filter_map(|name| input.get(name).map(|v| (name, v)))
        .map(|(name, v)| {
            let kind = flow
                .trigger
                .rest
                .as_ref()
                .and_then(|r| r.parts.get(name))
                .map(|p| p.kind);
            let shown = match kind {
                Some(PartKind::File) => format!(
                    "{} ({} bytes)",
                    v.get("name").and_then(Value::as_str).unwrap_or("?"),
                    v.get("size").and_then(Value::as_u64).unwrap_or(0)
                ),
                _ => {
                    let text = v.to_string();
                    if text.chars().count() > 120 {
                        format!("{}…", text.chars().take(120).collect::<String>())
                    } else {
                        text
                    }
                }
            };
            format!("{name}={shown}")
        })
        .collect();
    Some(parts.join("; "))
}

/// A run recorded as `running` (its trigger input kept), not started yet
/// ([`prepare`], then [`execute`]).
#[derive(Debug)]
pub struct Prepared {
    /// The run id (recorded when [`Prepared::recorded`]).
    pub run_id: String,
    flow: String,
    input: Map<String, Value>,
    /// The run has a row in the store.
    begun: bool,
    /// ... and its trigger input is kept.
    recorded: bool,
    /// Recording failures so far.
    pub warnings: Vec<HistoryError>,
    /// What the interrupted run this one resubmits had confirmed.
    resume: Resume,
    /// Checked before every step (the flow's lease), instead of the engine's own.
    pub fence: Option<Arc<dyn Fence>>,
    /// The flows paused as it was prepared: calling one fails.
    paused: BTreeMap<String, String>,
    /// File parts held in memory ([`prepare_held`]), by the path of their copy: the run
    /// holds them, and writes a copy only for a step that reads it by its path.
    copies: Vec<(PathBuf, Arc<[u8]>)>,
}

impl Prepared {
    /// Whether the run and its input are in the store.
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    /// The flow id.
    pub fn flow(&self) -> &str {
        &self.flow
    }

    /// Whether the run has a row in the store (even if its input could not be kept).
    pub fn begun(&self) -> bool {
        self.begun
    }
}

/// Runs `req.flow` on `engine` and records it in `store` (none: just runs it):
/// [`prepare`] then [`execute`].
pub async fn run_recorded(
    engine: &Engine,
    store: Option<&Store>,
    req: RunRequest,
) -> Result<Recorded, RunFailure> {
    let prepared = prepare(engine, store, req).await?;
    execute(engine, store, prepared).await
}

/// Checks the trigger parts (a wrong part is an error and nothing is recorded), records
/// the run `running` and keeps its parts; the run will read the kept copies, so a resubmit
/// sees exactly what the first run saw. A store failure is a warning here: see
/// [`Prepared::recorded`] when an unrecorded run must not start.
pub async fn prepare(
    engine: &Engine,
    store: Option<&Store>,
    req: RunRequest,
) -> Result<Prepared, RunFailure> {
    prepare_held(engine, store, req, Vec::new(), None).await
}

/// [`prepare`] for a delivery whose parts are `held` in memory (its `req.parts` are then
/// empty): the run and its parts are recorded in the history database alone
/// ([`Store::begin_with_held`]), no file is created, and the run holds its file parts in
/// memory ([`execute`]): a copy is written only for a step that reads it by its path.
/// Without a store, nothing can hold them: an
/// error. `pauses`: the paused flows as the delivery's handler read them when it arrived
/// (`None`: read now).
pub async fn prepare_held(
    engine: &Engine,
    store: Option<&Store>,
    req: RunRequest,
    held: Vec<HeldPart>,
    pauses: Option<Vec<super::Pause>>,
) -> Result<Prepared, RunFailure> {
    if !held.is_empty() {
        let Some(store) = store else {
            return Err(RunFailure::Input(
                "trigger parts held in memory need a run history".into(),
            ));
        };
        return prepare_from_memory(engine, store, req, held, pauses).await;
    }
    let plan = engine
        .project()
        .flows
        .get(&req.flow)
        .ok_or_else(|| RunFailure::UnknownFlow(req.flow.clone()))?;
    let mut warnings = Vec::new();
    let paused = match store {
        Some(store) => paused_others(&plan.id, store.pauses().await, &mut warnings)?,
        None => BTreeMap::new(),
    };
    let mut input = trigger_input(plan, &req.parts)?;
    let summary = input_summary(plan, &input);
    let mut run_id = None;
    let mut kept_failed = false;
    if let Some(store) = store {
        let new = NewRun {
            flow: &plan.id,
            flow_name: &plan.name,
            trigger: req.trigger,
            input_summary: summary.as_deref(),
            resubmit_of: req.resubmit_of.as_deref(),
            dry_run: false,
        };
        if req.parts.is_empty() {
            match store.begin(&new).await {
                Ok(id) => run_id = Some(id),
                Err(e) => warnings.push(e),
            }
        } else {
            // the run and its parts are recorded together (one write of a group commit):
            // a run is never seen waiting for its input
            let parts: Vec<InputPart> = req
                .parts
                .iter()
                .map(|(name, path, file_name)| InputPart {
                    name: name.clone(),
                    kind: part_kind(plan, name),
                    path: path.clone(),
                    file_name: file_name.clone(),
                })
                .collect();
            match store.begin_with_input(&new, &parts).await {
                Ok((id, kept)) => {
                    run_id = Some(id);
                    match trigger_input(plan, &trigger_parts(&kept)) {
                        Ok(i) => input = i,
                        Err(e) => {
                            kept_failed = true;
                            warnings.push(HistoryError::Invalid(format!(
                                "the kept input does not load ({e}); the run uses the delivered one"
                            )));
                        }
                    }
                }
                Err(e) => warnings.push(e),
            }
        }
    }
    let recorded = run_id.is_some() && !kept_failed;
    // A resubmit of an interrupted run resumes it: the side effects it — and the
    // interrupted runs it resubmitted, up the chain — confirmed are not done again, its
    // record loops go on after the last record they confirmed.
    let mut resume = Resume::default();
    if let (Some(store), Some(original)) = (store, &req.resubmit_of) {
        match store.resume_chain(original).await {
            Ok(r) => resume = r,
            Err(e) => warnings.push(e),
        }
    }
    Ok(Prepared {
        resume,
        begun: run_id.is_some(),
        run_id: run_id.unwrap_or_else(new_run_id),
        flow: req.flow,
        input,
        recorded,
        warnings,
        fence: None,
        paused,
        copies: Vec::new(),
    })
}

/// The paused flows, by id with why, from `pauses`: `flow` itself paused starts no run
/// ([`RunFailure::Paused`]); a paused child fails the step that calls it. Pauses that could
/// not be read are a warning, and nothing is paused.
fn paused_others(
    flow: &str,
    pauses: Result<Vec<super::Pause>, HistoryError>,
    warnings: &mut Vec<HistoryError>,
) -> Result<BTreeMap<String, String>, RunFailure> {
    let mut paused = BTreeMap::new();
    match pauses {
        Ok(pauses) => {
            for p in pauses {
                if p.flow == flow {
                    return Err(RunFailure::Paused(p.to_string()));
                }
                paused.insert(p.flow.clone(), p.to_string());
            }
        }
        Err(e) => warnings.push(e),
    }
    Ok(paused)
}

/// [`prepare_held`] with parts: checks them as [`trigger_input`] would, then records the
/// run with them.
async fn prepare_from_memory(
    engine: &Engine,
    store: &Store,
    req: RunRequest,
    held: Vec<HeldPart>,
    pauses: Option<Vec<super::Pause>>,
) -> Result<Prepared, RunFailure> {
    let plan = engine
        .project()
        .flows
        .get(&req.flow)
        .ok_or_else(|| RunFailure::UnknownFlow(req.flow.clone()))?;
    let mut warnings = Vec::new();
    let pauses = match pauses {
        Some(p) => Ok(p),
        None => store.pauses().await,
    };
    let paused = paused_others(&plan.id, pauses, &mut warnings)?;
    let id = new_run_id();
    let copies_dir = store
        .input_copies_dir(&id)
        .map_err(|e| RunFailure::Input(e.to_string()))?;
    let input = held_input(plan, &held, &copies_dir)?;
    let summary = input_summary(plan, &input);
    let new = NewRun {
        flow: &plan.id,
        flow_name: &plan.name,
        trigger: req.trigger,
        input_summary: summary.as_deref(),
        resubmit_of: req.resubmit_of.as_deref(),
        dry_run: false,
    };
    let begun = match store.begin_with_held(&id, &new, &held).await {
        Ok(_) => true,
        Err(e) => {
            warnings.push(e);
            false
        }
    };
    let copies = held
        .into_iter()
        .filter(|p| p.kind == PartKind::File)
        .map(|p| (copies_dir.join(&p.name), p.bytes))
        .collect();
    Ok(Prepared {
        resume: Resume::default(),
        begun,
        run_id: id,
        flow: req.flow,
        input,
        recorded: begun,
        warnings,
        fence: None,
        paused,
        copies,
    })
}

/// A flow's trigger input from parts held in memory, as [`trigger_input`] builds it from
/// files: a `json` part parsed, a `file` part `{path, name, size}` with `path` its copy in
/// `copies` (written only for a step that reads it by its path). Unknown and missing parts
/// are errors.
fn held_input(
    flow: &FlowPlan,
    held: &[HeldPart],
    copies: &std::path::Path,
) -> Result<Map<String, Value>, RunFailure> {
    let mut input = Map::new();
    let Some(rest) = &flow.trigger.rest else {
        let name = held.first().map_or("", |p| p.name.as_str());
        return Err(RunFailure::Input(format!(
            "flow '{}' takes no trigger input, got part '{name}'",
            flow.id
        )));
    };
    for p in held {
        let name = &p.name;
        let spec = crate::run::trigger_part(flow, rest, name)?;
        let value = match spec.kind {
            PartKind::Json => serde_json::from_slice::<Value>(&p.bytes).map_err(|e| {
                RunFailure::Input(format!("part '{name}': it is not valid JSON: {e}"))
            })?,
            PartKind::File => {
                let file_name = p.file_name.clone().unwrap_or_else(|| name.clone());
                crate::connectors::check_name(&file_name)
                    .map_err(|e| RunFailure::Input(format!("part file name: {e}")))?;
                crate::connectors::check_name(name)
                    .map_err(|e| RunFailure::Input(format!("trigger part name: {e}")))?;
                serde_json::json!({
                    "path": copies.join(name).display().to_string(),
                    "name": file_name,
                    "size": p.bytes.len(),
                })
            }
        };
        input.insert(name.clone(), value);
    }
    crate::run::check_required_parts(flow, &input)?;
    Ok(input)
}

/// Removes folder `dir` of a run's copies of held parts (a failure is logged).
async fn remove_copies(dir: PathBuf) {
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the run's copies of its input");
        }
        _ => {}
    });
    let _ = removed.await;
}

/// Bytes of delivered parts that running runs hold in memory at once
/// ([`crate::history::HELD_DELIVERY_BYTES`] at most a delivery); past it, a run's parts are
/// written as copies when it starts.
pub const RUN_HELD_BYTES: usize = 64 * 1024 * 1024;

/// What is left of [`RUN_HELD_BYTES`] (one permit a byte).
static RUN_HELD_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RUN_HELD_BYTES);

/// Writes the copies of parts held in memory (one blocking task for all), unsynced: the
/// history database holds the bytes.
async fn write_copies(copies: Vec<(PathBuf, Arc<[u8]>)>) -> Result<(), HistoryError> {
    let written = tokio::task::spawn_blocking(move || -> Result<(), HistoryError> {
        for (path, bytes) in copies {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, &bytes).map_err(|source| HistoryError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    });
    written.await.map_err(|e| HistoryError::Io {
        path: PathBuf::from(super::INPUT_COPIES_DIR),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// The parts a run holds in memory, with the share of `budget` they take (one permit a
/// byte). Where the budget has no room for them all, their copies are written now and the
/// run holds none; the error is a copy that could not be written.
async fn hold_within(
    budget: &tokio::sync::Semaphore,
    copies: Vec<(PathBuf, Arc<[u8]>)>,
) -> (
    Vec<(PathBuf, Arc<[u8]>)>,
    Option<tokio::sync::SemaphorePermit<'_>>,
    Option<HistoryError>,
) {
    let bytes: usize = copies.iter().map(|(_, b)| b.len()).sum();
    let permit = u32::try_from(bytes)
        .ok()
        .and_then(|n| budget.try_acquire_many(n).ok());
    if permit.is_some() {
        return (copies, permit, None);
    }
    let unwritten = write_copies(copies).await.err();
    (Vec::new(), None, unwritten)
}

/// Runs a prepared run and records how it ended.
pub async fn execute(
    engine: &Engine,
    store: Option<&Store>,
    prepared: Prepared,
) -> Result<Recorded, RunFailure> {
    let Prepared {
        run_id: id,
        flow,
        input,
        begun,
        recorded: _,
        mut warnings,
        resume,
        fence,
        paused,
        copies,
    } = prepared;
    // held parts stay in memory, within a budget shared by every run: a put to a local
    // directory writes them from there, any other reader has the copy made first. Past the
    // budget, the copies are written now. A copy that cannot be written fails the step that
    // reads it; a resubmit makes it again from the database.
    let copies_dir = copies
        .first()
        .and_then(|(p, _)| p.parent().map(std::path::Path::to_path_buf));
    let (held_files, held_permit, unwritten) = hold_within(&RUN_HELD_BUDGET, copies).await;
    if let Some(e) = unwritten {
        tracing::warn!(run_id = %id, error = %e, "cannot write the copy of a delivered part");
        warnings.push(e);
    }
    let store = store.filter(|_| begun);
    let start = RunStart {
        flow,
        input,
        run_id: id.clone(),
        journal: store.map(|s| s.journal(&id)),
        resume,
        fence,
        paused,
        held_files,
    };
    let started = engine.start(start).await;
    drop(held_permit);
    // the copies of held parts are the run's alone: removed once it has ended (before its
    // end is recorded, so no resubmit of it is under way), the database keeps the bytes
    if let Some(dir) = copies_dir.filter(|d| d.exists()) {
        remove_copies(dir).await;
    }
    let report = match started {
        Ok(r) => r,
        Err(failure) => {
            if let Some(store) = store
                && let Err(e) = store.abandon(&id, &failure.to_string()).await
            {
                tracing::warn!(run_id = %id, error = %e, "cannot record that the run did not start");
            }
            return Err(failure);
        }
    };
    // an outage does not lose how the run ended
    if let Some(store) = store
        && let Err(e) = store.finish_retrying(&report).await
    {
        warnings.push(e);
    }
    Ok(Recorded { report, warnings })
}

/// Runs recorded run `run_id` again: a new run of the same flow with the kept trigger
/// input, trigger `resubmit`, linked to the original by `resubmit_of`. The engine needs
/// nothing special: a flow that marks where it stopped (a file renamed `…_ErrInRcd_N`)
/// resumes there by itself.
pub async fn resubmit(
    engine: &Engine,
    store: &Store,
    run_id: &str,
) -> Result<Recorded, ResubmitError> {
    let req = resubmit_request(store, run_id).await?;
    Ok(run_recorded(engine, Some(store), req).await?)
}

/// The request that resubmits recorded run `run_id`: same flow, its kept trigger input,
/// trigger `resubmit`, linked by `resubmit_of`. Refused while the run is still running.
pub async fn resubmit_request(store: &Store, run_id: &str) -> Result<RunRequest, ResubmitError> {
    let original = store
        .get(run_id)
        .await?
        .ok_or_else(|| HistoryError::UnknownRun(run_id.to_string()))?;
    if original.summary.outcome == Outcome::Running {
        return Err(ResubmitError::StillRunning(run_id.to_string()));
    }
    if original.summary.outcome == Outcome::Abandoned {
        return Err(ResubmitError::Abandoned {
            run: run_id.to_string(),
            why: original.summary.error.unwrap_or_default(),
        });
    }
    let kept = store.input(run_id).await?;
    Ok(RunRequest {
        flow: original.summary.flow.clone(),
        trigger: Trigger::Resubmit,
        parts: trigger_parts(&kept),
        resubmit_of: Some(run_id.to_string()),
    })
}

fn trigger_parts(kept: &[StoredPart]) -> Vec<(String, PathBuf, Option<String>)> {
    kept.iter().map(StoredPart::as_trigger_part).collect()
}

fn part_kind(plan: &FlowPlan, name: &str) -> PartKind {
    plan.trigger
        .rest
        .as_ref()
        .and_then(|r| r.parts.get(name))
        .map_or(PartKind::File, |p| p.kind)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn part(dir: &std::path::Path, name: &str, len: usize) -> (PathBuf, Arc<[u8]>) {
        (dir.join("copies").join(name), Arc::from(vec![b'x'; len]))
    }

    /// Within the budget a run's parts stay in memory (no file); past it their copies are
    /// written, byte for byte, and the run holds none; the budget is whole again after.
    #[tokio::test]
    async fn parts_past_the_held_budget_are_written_as_copies() {
        let dir = tempfile::tempdir().unwrap();
        let budget = tokio::sync::Semaphore::new(10);
        let (held, permit, err) = hold_within(&budget, vec![part(dir.path(), "a", 6)]).await;
        assert!(err.is_none());
        assert_eq!(held.len(), 1);
        assert!(!dir.path().join("copies/a").exists(), "held, not written");
        assert_eq!(budget.available_permits(), 4);

        // 6 bytes held by the first run: 5 more do not fit
        let (more, none, err) = hold_within(
            &budget,
            vec![part(dir.path(), "b", 3), part(dir.path(), "c", 2)],
        )
        .await;
        assert!(err.is_none());
        assert!(more.is_empty() && none.is_none());
        assert_eq!(std::fs::read(dir.path().join("copies/b")).unwrap(), b"xxx");
        assert_eq!(std::fs::read(dir.path().join("copies/c")).unwrap(), b"xx");
        assert_eq!(
            budget.available_permits(),
            4,
            "written copies take no budget"
        );

        drop(permit);
        assert_eq!(budget.available_permits(), 10);
    }

    /// A copy that cannot be written past the budget is the error the run warns of.
    #[tokio::test]
    async fn a_copy_that_cannot_be_written_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("copies"), b"a file, not a directory").unwrap();
        let budget = tokio::sync::Semaphore::new(1);
        let (held, _, err) = hold_within(&budget, vec![part(dir.path(), "a", 2)]).await;
        assert!(held.is_empty());
        let err = err.unwrap().to_string();
        assert!(err.contains("copies"), "{err}");
    }
}
