//! The scheduler: fires each scheduled flow on its cron ticks.
//!
//! Every instance computes the same ticks from the same flows; each tick is claimed in the
//! run history (one row per flow and tick), so exactly one instance fires it. The run then
//! takes the flow's lease ([`super::app::App::start`]): when the previous run of the flow is
//! still going, here or on another instance, the tick is recorded `skipped`. Missed ticks
//! (the server was down, or busy past several ticks) are not caught up: the next tick fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::app::{App, StartError};
use crate::history::{RunRequest, TickStatus, Trigger};

/// The longest the scheduler sleeps before looking again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs the scheduler until shutdown begins.
pub async fn run(app: Arc<App>) {
    // per flow: the last tick handled (fired, skipped or claimed elsewhere)
    let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
    let started = Utc::now();
    loop {
        let project = app.project();
        let now = Utc::now();
        let mut next_wake: Option<DateTime<Utc>> = None;
        for plan in project.flows.values() {
            let Some(schedule) = &plan.schedule else {
                continue;
            };
            let after = *last.get(&plan.id).unwrap_or(&started);
            let Some(mut due) = schedule.next_after(after) else {
                continue;
            };
            if due <= now {
                // the latest due tick fires; older ones were missed
                while let Some(t) = schedule.next_after(due) {
                    if t > now {
                        break;
                    }
                    due = t;
                }
                fire(&app, &plan.id, due).await;
                last.insert(plan.id.clone(), due);
                match schedule.next_after(due) {
                    Some(n) => due = n,
                    None => continue,
                }
            }
            next_wake = Some(next_wake.map_or(due, |w| w.min(due)));
        }
        let sleep = next_wake
            .and_then(|w| (w - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        tokio::select! {
            () = app.stopping().cancelled() => break,
            () = app.reloaded.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Claims tick `at` of `flow` and starts the run, or records why not.
async fn fire(app: &Arc<App>, flow: &str, at: DateTime<Utc>) {
    let instance = app.settings().instance.clone();
    match app.store().claim_tick(flow, at, &instance).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(%flow, tick = %at, "tick claimed by another instance");
            return;
        }
        Err(e) => {
            tracing::warn!(%flow, tick = %at, error = %e, "cannot claim the tick; it is skipped");
            return;
        }
    }
    let (status, run_id, note) = match app.start(RunRequest::new(flow, Trigger::Schedule)).await {
        Ok(run_id) => {
            tracing::info!(%flow, tick = %at, %run_id, "scheduled run started");
            (TickStatus::Started, Some(run_id), None)
        }
        Err(e @ StartError::Paused(_)) => {
            tracing::info!(%flow, tick = %at, reason = %e, "tick not run: the flow is paused");
            (TickStatus::Paused, None, Some(e.to_string()))
        }
        Err(e) => {
            if matches!(e, StartError::Busy { .. }) {
                app.metrics().skipped_tick(flow);
                tracing::warn!(%flow, tick = %at, reason = %e, "tick skipped");
            } else {
                tracing::warn!(%flow, tick = %at, reason = %e, "tick skipped: the run did not start");
            }
            (TickStatus::Skipped, None, Some(e.to_string()))
        }
    };
    if let Err(e) = app
        .store()
        .settle_tick(flow, at, status, run_id.as_deref(), note.as_deref())
        .await
    {
        tracing::warn!(%flow, tick = %at, error = %e, "cannot record the tick");
    }
}
