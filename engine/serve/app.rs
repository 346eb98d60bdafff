//! [`App`]: the state of one `ferry serve` instance — the loaded flows (swapped whole on
//! reload), the run history, the runs under way — and how runs start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::Metrics;
use crate::compile::{FlowPlan, Project};
use crate::history::{self, HistoryError, ResubmitError, RunRequest, Store, Trigger};
use crate::run::{Engine, RunFailure, RunOptions};

/// One loaded generation of the flow directory.
#[derive(Debug)]
pub struct Loaded {
    /// The engine over the compiled project.
    pub engine: Arc<Engine>,
    /// 1 for the first load, then one more per successful reload.
    pub generation: u64,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
}

/// The last reload that failed, while it is the newest attempt.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    /// When.
    pub at: String,
    /// The diagnostics, one line each.
    pub diagnostics: Vec<String>,
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such flow.
    #[error("unknown flow '{0}'")]
    UnknownFlow(String),
    /// The flow cannot be started this way.
    #[error("flow '{flow}' {why}")]
    NotAllowed {
        /// Flow id.
        flow: String,
        /// Why.
        why: &'static str,
    },
    /// The flow's previous run is still going (possibly on another instance).
    #[error("flow '{flow}' is already running (on instance {holder})")]
    Busy {
        /// Flow id.
        flow: String,
        /// The instance running it.
        holder: String,
    },
    /// The trigger input is wrong.
    #[error("{0}")]
    Input(String),
    /// The server is shutting down.
    #[error("ferry is shutting down and takes no new runs")]
    Stopping,
    /// The run could not be recorded, so it was not started.
    #[error("the run could not be recorded, so it was not started: {0}")]
    Store(HistoryError),
    /// The run to resubmit is unknown or still running.
    #[error(transparent)]
    Resubmit(ResubmitError),
    /// The flow is paused (the message says by whom, when and why).
    #[error("{0}")]
    Paused(String),
}

impl From<RunFailure> for StartError {
    fn from(f: RunFailure) -> StartError {
        match f {
            RunFailure::UnknownFlow(flow) => StartError::UnknownFlow(flow),
            RunFailure::Input(m) => StartError::Input(m),
            RunFailure::Paused(m) => StartError::Paused(m),
        }
    }
}

/// How long a REST delivery waits for the run history before anything of it is recorded
/// ([`App::refuse_paused_quickly`]): longer, and it is answered `503` (with `Retry-After`).
pub const DELIVERY_STORE_WAIT: Duration = Duration::from_secs(1);

/// Settings of an [`App`].
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// This instance's id (owner of its runs and leases).
    pub instance: String,
    /// How long a flow lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Where runs spool (the system temp dir when `None`).
    pub spool_dir: Option<std::path::PathBuf>,
}

/// The state of a serving instance.
#[derive(Debug)]
pub struct App {
    current: RwLock<Arc<Loaded>>,
    store: Store,
    settings: AppSettings,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    /// Fired when shutdown begins: no new runs.
    stopping: CancellationToken,
    /// Fired at the shutdown deadline: runs stop before their next step.
    interrupt: CancellationToken,
    /// Runs under way on this instance: run id → flow id.
    active: Mutex<HashMap<String, String>>,
    reload_failure: Mutex<Option<ReloadFailure>>,
    /// Woken when the flows change (the scheduler recomputes its ticks).
    pub(super) reloaded: tokio::sync::Notify,
}

impl App {
    /// An app over `project`, recording in `store` (its runs owned by `store`'s registered
    /// incarnation when it is one of `settings.instance`, else by a new one).
    pub fn new(project: Arc<Project>, store: Store, settings: AppSettings) -> Arc<App> {
        let metrics = Arc::new(Metrics::new());
        let interrupt = CancellationToken::new();
        let store = store.owned_by(&settings.instance);
        let engine = Arc::new(Engine::new(
            project,
            run_options(&settings, &interrupt, &metrics),
        ));
        Arc::new(App {
            current: RwLock::new(Arc::new(Loaded {
                engine,
                generation: 1,
                loaded_at: crate::run::now(),
            })),
            store,
            settings,
            metrics,
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            interrupt,
            active: Mutex::new(HashMap::new()),
            reload_failure: Mutex::new(None),
            reloaded: tokio::sync::Notify::new(),
        })
    }

    /// The current generation of flows.
    pub fn loaded(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current project.
    pub fn project(&self) -> Arc<Project> {
        self.loaded().engine.project().clone()
    }

    /// Swaps in a newly compiled project; runs under way finish on the one they started on.
    pub fn swap(&self, project: Arc<Project>) -> u64 {
        let engine = Arc::new(Engine::new(
            project,
            run_options(&self.settings, &self.interrupt, &self.metrics),
        ));
        let generation = {
            let mut g = match self.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let generation = g.generation + 1;
            *g = Arc::new(Loaded {
                engine,
                generation,
                loaded_at: crate::run::now(),
            });
            generation
        };
        self.set_reload_failure(None);
        self.metrics.reloaded(true);
        self.reloaded.notify_waiters();
        generation
    }

    /// Records a reload that failed (the old flows stay).
    pub fn reload_failed(&self, diagnostics: Vec<String>) {
        self.metrics.reloaded(false);
        self.set_reload_failure(Some(ReloadFailure {
            at: crate::run::now(),
            diagnostics,
        }));
    }

    fn set_reload_failure(&self, f: Option<ReloadFailure>) {
        match self.reload_failure.lock() {
            Ok(mut g) => *g = f,
            Err(poisoned) => *poisoned.into_inner() = f,
        }
    }

    /// The last failed reload, when no reload succeeded since.
    pub fn reload_failure(&self) -> Option<ReloadFailure> {
        match self.reload_failure.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The run history.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The settings.
    pub fn settings(&self) -> &AppSettings {
        &self.settings
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Fired when shutdown begins.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Runs under way on this instance: (run id, flow id), by run id.
    pub fn active_runs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = match self.active.lock() {
            Ok(g) => g.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            Err(p) => p
                .into_inner()
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
        };
        v.sort();
        v
    }

    fn set_active(&self, run_id: &str, flow: Option<&str>) {
        let mut g = match self.active.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match flow {
            Some(f) => {
                g.insert(run_id.to_string(), f.to_string());
            }
            None => {
                g.remove(run_id);
            }
        }
        self.metrics
            .running
            .set(i64::try_from(g.len()).unwrap_or(i64::MAX));
    }

    /// Starts "run now" of `flow` (manual trigger; the flow must allow it).
    pub async fn run_now(self: &Arc<Self>, flow: &str) -> Result<String, StartError> {
        let plan = self.plan(flow)?;
        if !plan.trigger.manual && plan.trigger.schedule.is_none() {
            return Err(StartError::NotAllowed {
                flow: flow.to_string(),
                why: "has neither a manual nor a schedule trigger (it is started by its REST trigger or by another flow)",
            });
        }
        self.start(RunRequest::new(flow, Trigger::Manual)).await
    }

    /// Refuses to start a run of `flow` while it is paused.
    pub async fn refuse_paused(&self, flow: &str) -> Result<(), StartError> {
        match self.store.pause_of(flow).await {
            Ok(None) => Ok(()),
            Ok(Some(p)) => Err(StartError::Paused(p.to_string())),
            Err(e) => Err(StartError::Store(e)),
        }
    }

    /// [`App::refuse_paused`], waiting at most [`DELIVERY_STORE_WAIT`] for the run history:
    /// a history that does not answer by then is [`StartError::Store`] with
    /// `PoolTimedOut`. It reads only, so giving up leaves nothing behind; a REST delivery
    /// checks here, before anything of it is recorded, and its sender hears `503` at once
    /// instead of after the pool's 30 s.
    pub async fn refuse_paused_quickly(&self, flow: &str) -> Result<(), StartError> {
        self.pauses_unless_paused(flow).await.map(|_| ())
    }

    /// [`App::refuse_paused_quickly`] that returns the pauses of the other flows, which
    /// [`App::start_held`] takes instead of reading them again (one read per delivery).
    pub async fn pauses_unless_paused(
        &self,
        flow: &str,
    ) -> Result<Vec<history::Pause>, StartError> {
        match tokio::time::timeout(DELIVERY_STORE_WAIT, self.store.pauses()).await {
            Ok(Ok(pauses)) => match pauses.iter().find(|p| p.flow == flow) {
                Some(p) => Err(StartError::Paused(p.to_string())),
                None => Ok(pauses),
            },
            Ok(Err(e)) => Err(StartError::Store(e)),
            Err(_) => Err(StartError::Store(HistoryError::Db(
                sqlx::Error::PoolTimedOut,
            ))),
        }
    }

    /// Pauses `flow` (one of the loaded flows): it starts no run, on any instance sharing
    /// the history, until [`App::resume`].
    pub async fn pause(
        &self,
        flow: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<history::Pause, StartError> {
        self.plan(flow)?;
        let p = self
            .store
            .pause_flow(flow, by, reason)
            .await
            .map_err(StartError::Store)?;
        tracing::warn!(flow, paused_by = %p.paused_by, reason = p.reason.as_deref().unwrap_or(""), "flow paused");
        Ok(p)
    }

    /// Resumes `flow`; returns the pause it ended (none: it was not paused).
    pub async fn resume(&self, flow: &str, by: &str) -> Result<Option<history::Pause>, StartError> {
        self.plan(flow)?;
        let p = self
            .store
            .resume_flow(flow)
            .await
            .map_err(StartError::Store)?;
        if p.is_some() {
            tracing::warn!(flow, resumed_by = %by, "flow resumed");
        }
        Ok(p)
    }

    /// Starts a resubmit of recorded run `run_id`; returns the new run's id.
    pub async fn resubmit(self: &Arc<Self>, run_id: &str) -> Result<String, StartError> {
        let req = history::resubmit_request(&self.store, run_id)
            .await
            .map_err(StartError::Resubmit)?;
        self.start(req).await
    }

    fn plan(&self, flow: &str) -> Result<Arc<FlowPlan>, StartError> {
        self.project()
            .flows
            .get(flow)
            .cloned()
            .ok_or_else(|| StartError::UnknownFlow(flow.to_string()))
    }

    /// [`App::start`] in a task of its own, which the returned future waits for: once
    /// begun, the recording and the start go on whatever becomes of the caller, so a REST
    /// client that goes away while its delivery is recorded drops only its wait for the
    /// answer — the run it delivered is recorded and runs, or nothing of it is recorded.
    /// `keep` (the delivery's staged parts) lives until the recording has ended.
    pub fn start_detached<K: Send + 'static>(
        self: &Arc<Self>,
        req: RunRequest,
        held: Vec<history::HeldPart>,
        pauses: Option<Vec<history::Pause>>,
        keep: K,
    ) -> impl std::future::Future<Output = Result<String, StartError>> + Send + 'static {
        let app = self.clone();
        let recording = self.tracker.spawn(async move {
            let started = app.start_held(req, held, pauses).await;
            drop(keep);
            started
        });
        async move {
            match recording.await {
                Ok(started) => started,
                Err(e) => Err(StartError::Store(HistoryError::Invalid(format!(
                    "the run's recording stopped: {e}"
                )))),
            }
        }
    }

    /// Records run `req` (its trigger input kept) and starts it in the background; returns
    /// its run id once it is recorded. A flow without a REST trigger runs one at a time,
    /// across all processes sharing the store: it holds the flow's lease, renewed while it
    /// runs, and starts no step once the lease is lost or lapsed (its fence).
    pub async fn start(self: &Arc<Self>, req: RunRequest) -> Result<String, StartError> {
        self.start_held(req, Vec::new(), None).await
    }

    /// [`App::start`] of a delivery whose parts are `held` in memory: they are kept in the
    /// history database with the run's record ([`history::prepare_held`]). `pauses`: the
    /// pauses the delivery's handler read as it arrived (none: read them).
    pub async fn start_held(
        self: &Arc<Self>,
        req: RunRequest,
        held: Vec<history::HeldPart>,
        pauses: Option<Vec<history::Pause>>,
    ) -> Result<String, StartError> {
        if self.is_stopping() {
            return Err(StartError::Stopping);
        }
        let loaded = self.loaded();
        let engine = loaded.engine.clone();
        let plan = engine
            .project()
            .flows
            .get(&req.flow)
            .cloned()
            .ok_or_else(|| StartError::UnknownFlow(req.flow.clone()))?;
        // before the lease: a paused flow takes nothing from the one that runs. A delivery's
        // handler checked just before, waiting for the history only briefly, and
        // [`history::prepare`] checks again with the other pauses: not a third read here
        if req.trigger != Trigger::Rest {
            self.refuse_paused(&plan.id).await?;
        }
        let exclusive = plan.trigger.rest.is_none();
        let lease = if exclusive {
            let name = history::flow_lease(&plan.id);
            match self
                .store
                .acquire_lease(&name, self.settings.lease_ttl)
                .await
                .map_err(StartError::Store)?
            {
                Some(held) => Some(held),
                None => {
                    let holder = self
                        .store
                        .lease_holder(&name)
                        .await
                        .ok()
                        .flatten()
                        .map_or_else(|| "unknown".into(), |h| h.instance);
                    return Err(StartError::Busy {
                        flow: plan.id.clone(),
                        holder,
                    });
                }
            }
        } else {
            None
        };
        let mut prepared = match history::prepare_held(
            &engine,
            Some(&self.store),
            req,
            held,
            pauses,
        )
        .await
        {
            Ok(p) if p.recorded() => p,
            Ok(mut p) => {
                if let Some(held) = lease {
                    held.release().await;
                }
                let e = p
                    .warnings
                    .pop()
                    .unwrap_or_else(|| HistoryError::Invalid("the run was not recorded".into()));
                // begun, its input not kept: it never starts, and is no work to resubmit
                if p.begun()
                    && let Err(w) = self.store.mark_abandoned(&p.run_id, &e.to_string()).await
                {
                    tracing::warn!(run_id = %p.run_id, error = %w, "cannot record the run abandoned");
                }
                return Err(StartError::Store(e));
            }
            Err(e) => {
                if let Some(held) = lease {
                    held.release().await;
                }
                return Err(e.into());
            }
        };
        // the run starts no step once it no longer holds the flow's lease
        prepared.fence = lease.as_ref().map(history::HeldLease::fence);
        let run_id = prepared.run_id.clone();
        self.set_active(&run_id, Some(&plan.id));
        let app = self.clone();
        let id = run_id.clone();
        self.tracker.spawn(async move {
            let result = history::execute(&engine, Some(&app.store), prepared).await;
            if let Some(held) = lease {
                held.release().await;
            }
            match result {
                Ok(recorded) => {
                    for w in &recorded.warnings {
                        tracing::warn!(run_id = %id, error = %w, "run history");
                    }
                    // the engine logged "run finished" with its counters (telemetry); the
                    // trigger is in the run's history
                    app.metrics.observe_run(&recorded.report);
                }
                Err(e) => tracing::warn!(run_id = %id, error = %e, "run did not start"),
            }
            app.set_active(&id, None);
        });
        Ok(run_id)
    }

    /// Shutdown: takes no new runs, waits up to `grace` for runs under way, then asks them
    /// to stop before their next step and waits up to `grace` again; runs still going after
    /// that are recorded `interrupted`. Returns how many runs were interrupted.
    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.stopping.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let under_way = self.active_runs();
        tracing::warn!(
            runs = under_way.len(),
            "shutdown deadline passed: runs stop before their next step"
        );
        self.interrupt.cancel();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            for (run_id, _) in self.active_runs() {
                match self
                    .store
                    .mark_interrupted(&run_id, "ferry stopped before the run ended")
                    .await
                {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%run_id, error = %e, "cannot record the interruption"),
                }
            }
        }
        under_way.len()
    }
}

fn run_options(
    settings: &AppSettings,
    interrupt: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> RunOptions {
    RunOptions {
        dry_run: false,
        spool_dir: settings.spool_dir.clone(),
        cancel: Some(interrupt.clone()),
        observer: Some(metrics.clone()),
        fence: None,
        ..RunOptions::default()
    }
}
