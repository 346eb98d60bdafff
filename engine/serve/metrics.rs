//! Prometheus metrics of a serving instance (`GET /metrics`, OpenMetrics text).
//!
//! Every family is there from the start, so dashboards and `absent()` alerts see it before
//! the first run: the label sets of the loaded flows are made at zero when an engine is
//! made over them (at start and on every reload, for the flows new in it): runs by outcome,
//! files, bytes, records and errors by kind for flows with a trigger; step durations by the
//! step kinds of every flow, result `ok`; skipped ticks of scheduled flows; `202` trigger
//! requests of REST-triggered flows; reloads `ok` and `invalid`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::compile::Project;
use crate::run::{ErrorKind, Outcome, RunReport, StepObserver};
use crate::steps::Block;

/// The outcomes a run ends with.
const OUTCOMES: [Outcome; 4] = [
    Outcome::Succeeded,
    Outcome::Partial,
    Outcome::Failed,
    Outcome::NoFiles,
];

/// The kinds of errors a run fails with.
const ERROR_KINDS: [ErrorKind; 8] = [
    ErrorKind::Template,
    ErrorKind::Connector,
    ErrorKind::Http,
    ErrorKind::Expectation,
    ErrorKind::Data,
    ErrorKind::Config,
    ErrorKind::ChildFlow,
    ErrorKind::Interrupted,
];

/// Fails to compile when a kind of error or an outcome is added and not listed above.
const fn _listed(k: ErrorKind, o: Outcome) {
    match k {
        ErrorKind::Template
        | ErrorKind::Connector
        | ErrorKind::Http
        | ErrorKind::Expectation
        | ErrorKind::Data
        | ErrorKind::Config
        | ErrorKind::ChildFlow
        | ErrorKind::Interrupted => {}
    }
    match o {
        Outcome::Succeeded | Outcome::Partial | Outcome::Failed | Outcome::NoFiles => {}
    }
}

/// A value's serde name (`no_files`, `child_flow`).
fn name_of(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The step kinds of a block and the blocks in it.
fn step_kinds(block: &Block, out: &mut std::collections::BTreeSet<&'static str>) {
    for step in &block.steps {
        out.insert(step.kind.name());
        for (_, inner) in step.kind.children() {
            step_kinds(inner, out);
        }
    }
}

/// A series' labels: the names are words of this file, each value is held once for every
/// series that has it (10,000 flows' series copied each flow id some twenty times).
type Labels = Vec<(&'static str, Arc<str>)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, shared(v))).collect()
}

/// The one copy of label value `v`. The values are flow ids, outcomes, kinds, routes and
/// status codes, each kept while the process lives, as the series that have them are.
fn shared(v: &str) -> Arc<str> {
    static VALUES: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);
    let mut values = VALUES.lock().unwrap_or_else(PoisonError::into_inner);
    let values = values.get_or_insert_with(HashSet::new);
    if let Some(v) = values.get(v) {
        return v.clone();
    }
    let v: Arc<str> = Arc::from(v);
    values.insert(v.clone());
    v
}

fn step_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// The metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Runs ended, by flow and outcome.
    pub runs: Family<Labels, Counter>,
    /// Files put to targets, by flow.
    pub files: Family<Labels, Counter>,
    /// Bytes put to targets, by flow.
    pub bytes: Family<Labels, Counter>,
    /// REST records sent with a success status, by flow.
    pub records: Family<Labels, Counter>,
    /// Failed runs, by flow and error kind.
    pub errors: Family<Labels, Counter>,
    /// Step durations, by flow and step kind.
    pub steps: Family<Labels, Histogram, fn() -> Histogram>,
    /// Schedule ticks skipped because the previous run was still going, by flow.
    pub skipped_ticks: Family<Labels, Counter>,
    /// Trigger requests answered, by flow and status code.
    pub deliveries: Family<Labels, Counter>,
    /// Reloads of the flow directory, by result.
    pub reloads: Family<Labels, Counter>,
    /// Runs under way on this instance.
    pub running: Gauge,
    /// Requests refused for wrong credentials, by route (`api`, `ui`, `trigger`).
    pub auth_failures: Family<Labels, Counter>,
    /// Whether a flow is paused (1) or not (0), by flow: read from the history at each
    /// scrape ([`Metrics::set_paused`]), so a pause made by `ferry pause` or another
    /// instance shows too.
    pub paused: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ferry");
        let runs = Family::<Labels, Counter>::default();
        let files = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let records = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let steps = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            step_histogram as fn() -> Histogram,
        );
        let skipped_ticks = Family::<Labels, Counter>::default();
        let deliveries = Family::<Labels, Counter>::default();
        let reloads = Family::<Labels, Counter>::default();
        let running = Gauge::default();
        let auth_failures = Family::<Labels, Counter>::default();
        let paused = Family::<Labels, Gauge>::default();
        registry.register("runs", "Runs ended, by flow and outcome", runs.clone());
        registry.register("files_moved", "Files put to targets", files.clone());
        registry.register("bytes_moved", "Bytes put to targets", bytes.clone());
        registry.register(
            "records_sent",
            "REST requests answered with a success status",
            records.clone(),
        );
        registry.register("errors", "Failed runs by error kind", errors.clone());
        registry.register(
            "step_duration_seconds",
            "Step durations by flow and step kind",
            steps.clone(),
        );
        registry.register(
            "skipped_ticks",
            "Schedule ticks skipped because the flow was still running",
            skipped_ticks.clone(),
        );
        registry.register(
            "trigger_requests",
            "REST trigger requests by flow and HTTP status",
            deliveries.clone(),
        );
        registry.register("reloads", "Reloads of the flow directory", reloads.clone());
        registry.register("runs_running", "Runs under way", running.clone());
        for ok in ["ok", "invalid"] {
            drop(reloads.get_or_create(&labels(&[("result", ok)])));
        }
        registry.register(
            "auth_failures",
            "Requests refused for wrong credentials, by route",
            auth_failures.clone(),
        );
        for route in ["api", "ui", "trigger"] {
            drop(auth_failures.get_or_create(&labels(&[("route", route)])));
        }
        registry.register(
            "flow_paused",
            "Whether the flow is paused (1) or not (0)",
            paused.clone(),
        );
        Metrics {
            registry,
            runs,
            files,
            bytes,
            records,
            errors,
            steps,
            skipped_ticks,
            deliveries,
            reloads,
            running,
            auth_failures,
            paused,
        }
    }

    /// Sets each flow of `project` that has a trigger paused (1) when `paused` names it, else
    /// not (0).
    pub fn set_paused<'a>(&self, project: &Project, paused: impl IntoIterator<Item = &'a str>) {
        let paused: std::collections::HashSet<&str> = paused.into_iter().collect();
        for (id, plan) in &project.flows {
            let t = &plan.trigger;
            if t.manual || t.schedule.is_some() || t.rest.is_some() || paused.contains(id.as_str())
            {
                self.paused
                    .get_or_create(&labels(&[("flow", id.as_str())]))
                    .set(i64::from(paused.contains(id.as_str())));
            }
        }
    }

    /// Counts a request refused for wrong credentials on `route`.
    pub fn auth_failure(&self, route: &str) {
        self.auth_failures
            .get_or_create(&labels(&[("route", route)]))
            .inc();
    }

    /// Counts a finished run.
    pub fn observe_run(&self, report: &RunReport) {
        let flow = report.flow.as_str();
        let outcome = name_of(report.outcome);
        self.runs
            .get_or_create(&labels(&[("flow", flow), ("outcome", &outcome)]))
            .inc();
        let f = labels(&[("flow", flow)]);
        self.files
            .get_or_create(&f)
            .inc_by(report.files_moved() as u64);
        self.bytes.get_or_create(&f).inc_by(report.bytes_moved());
        self.records
            .get_or_create(&f)
            .inc_by(report.requests_ok() as u64);
        if let Some(e) = &report.error {
            let kind = name_of(e.kind);
            self.errors
                .get_or_create(&labels(&[("flow", flow), ("kind", &kind)]))
                .inc();
        }
    }

    /// Counts a reload of the flow directory, valid (`ok`) or not.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "invalid" };
        self.reloads
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Counts a skipped tick.
    pub fn skipped_tick(&self, flow: &str) {
        self.skipped_ticks
            .get_or_create(&labels(&[("flow", flow)]))
            .inc();
    }

    /// Counts a trigger request.
    pub fn delivery(&self, flow: &str, status: u16) {
        self.deliveries
            .get_or_create(&labels(&[("flow", flow), ("status", &status.to_string())]))
            .inc();
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

impl StepObserver for Metrics {
    fn step_finished(&self, flow: &str, kind: &str, elapsed: Duration, ok: bool) {
        self.steps
            .get_or_create(&labels(&[
                ("flow", flow),
                ("kind", kind),
                ("result", if ok { "ok" } else { "failed" }),
            ]))
            .observe(elapsed.as_secs_f64());
    }

    // `drop`: the label set is made at zero; the guard get_or_create returns is let go
    fn flows_loaded(&self, project: &Project) {
        for (id, plan) in &project.flows {
            let flow = id.as_str();
            let trigger = &plan.trigger;
            if trigger.manual || trigger.schedule.is_some() || trigger.rest.is_some() {
                for outcome in OUTCOMES {
                    drop(
                        self.runs.get_or_create(&labels(&[
                            ("flow", flow),
                            ("outcome", &name_of(outcome)),
                        ])),
                    );
                }
                let f = labels(&[("flow", flow)]);
                drop(self.files.get_or_create(&f));
                drop(self.paused.get_or_create(&f));
                drop(self.bytes.get_or_create(&f));
                drop(self.records.get_or_create(&f));
                for kind in ERROR_KINDS {
                    drop(
                        self.errors
                            .get_or_create(&labels(&[("flow", flow), ("kind", &name_of(kind))])),
                    );
                }
            }
            if trigger.schedule.is_some() {
                drop(self.skipped_ticks.get_or_create(&labels(&[("flow", flow)])));
            }
            if trigger.rest.is_some() {
                drop(
                    self.deliveries
                        .get_or_create(&labels(&[("flow", flow), ("status", "202")])),
                );
            }
            let mut kinds = std::collections::BTreeSet::new();
            step_kinds(&plan.steps, &mut kinds);
            // `ok` only: a histogram is a dozen lines, and failures are counted in errors
            for kind in kinds {
                drop(self.steps.get_or_create(&labels(&[
                    ("flow", flow),
                    ("kind", kind),
                    ("result", "ok"),
                ])));
            }
        }
    }
}
