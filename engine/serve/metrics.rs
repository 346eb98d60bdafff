//! Prometheus metrics of a serving instance (`GET /metrics`, OpenMetrics text).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::run::{RunReport, StepObserver};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
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
        registry.register(
            "auth_failures",
            "Requests refused for wrong credentials, by route",
            auth_failures.clone(),
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
        let outcome = serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
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
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            self.errors
                .get_or_create(&labels(&[("flow", flow), ("kind", &kind)]))
                .inc();
        }
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
}
