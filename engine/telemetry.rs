//! Logs and traces: the `tracing` subscriber of the binary (plain or JSON lines on stderr)
//! and, with an OTLP endpoint, the export of the executor's `run`, `step` and `child_flow`
//! spans to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! Spans, named for what they are: `run FLOW` — `flow`, `run_id`, `dry_run`, `outcome`;
//! `STEP_ID (KIND)` — `id`, `kind`, `file` (the file a step listed, fetched, put or renamed,
//! or the loop item's name), `record` (the loop item's record number), `outcome` (`ok`,
//! `failed`, `skipped`); `child FLOW` — `flow`. A failed step, and a failed or partial run,
//! has status ERROR with the error's message. The resource names `service.name` `ferry` and
//! `service.version`; no attributes of the tracing library (source file, thread, busy time).
//!
//! Every run event ([`crate::run::Event`]) is also a log event on target `ferry::run` whose
//! message is its kind, with typed fields (`event = "put"`, `connection`, `location`, `name`,
//! `bytes` …): a failure, a failing request that was not tolerated, a skipped file and an
//! email that could not be sent are warnings. Each run logs "run started" and "run finished"
//! (its outcome, duration and counters; an error when the run failed).
//!
//! Export runs on the OpenTelemetry SDK's batch thread; its HTTP requests go through the
//! engine's own `reqwest` client on the tokio runtime ([`ReqwestOnTokio`]), each bounded by
//! [`EXPORT_TIMEOUT`] and an answer of at most [`MAX_ANSWER_BYTES`]. An unreachable
//! collector never fails or slows a run: spans are dropped once the SDK's queue (2,048
//! spans) is full.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::run::Event;

/// How long one export request may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest collector answer read.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The endpoint is not an http(s) URL.
    #[error("--otlp-endpoint '{0}' is not an http:// or https:// URL")]
    Endpoint(String),
    /// The exporter could not be built.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    /// A subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// The installed telemetry; [`Telemetry::shutdown`] sends the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued (waits at most [`EXPORT_TIMEOUT`]).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("warning: trace export: {e}");
        }
    }
}

/// The traces URL for an OTLP endpoint: a base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT` is)
/// gets `/v1/traces`; a URL that already ends so is kept.
pub fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let e = endpoint.trim();
    if !(e.starts_with("http://") || e.starts_with("https://")) {
        return Err(TelemetryError::Endpoint(endpoint.to_string()));
    }
    let e = e.trim_end_matches('/');
    Ok(if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    })
}

/// Installs the global subscriber: `filter` (a `tracing` filter, as `FERRY_LOG` holds)
/// decides what is logged on stderr, as JSON lines when `json`; with `otlp_endpoint`, the
/// executor's spans are exported whatever the log level. Call from within a tokio runtime.
pub fn init(
    filter: tracing_subscriber::EnvFilter,
    json: bool,
    ansi: bool,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (otel, provider) = match otlp_endpoint.filter(|e| !e.trim().is_empty()) {
        None => (None, None),
        Some(endpoint) => {
            let url = traces_url(endpoint)?;
            let client = ReqwestOnTokio::new()?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(url)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("ferry")
                        .with_attribute(opentelemetry::KeyValue::new(
                            "service.version",
                            env!("CARGO_PKG_VERSION"),
                        ))
                        .build(),
                )
                .build();
            let tracer = provider.tracer("ferry");
            // the executor's spans, whatever FERRY_LOG says
            let spans = tracing_subscriber::filter::Targets::new()
                .with_target("ferry", tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // what the run did, not where in ferry's code: no source locations, threads,
                // busy/idle times or targets
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
                .with_filter(spans)
                .boxed();
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// The OTLP exporter's HTTP client: the SDK exports from its own thread, outside the tokio
/// runtime, so each request is spawned on the runtime that set telemetry up.
#[derive(Debug)]
pub struct ReqwestOnTokio {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ReqwestOnTokio {
    fn new() -> Result<ReqwestOnTokio, TelemetryError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Ok(ReqwestOnTokio { client, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestOnTokio {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut req = client
                .request(parts.method, parts.uri.to_string())
                .body(body);
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let mut answer = req.send().await?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let mut bytes = Vec::new();
            while let Some(chunk) = answer.chunk().await? {
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    break;
                }
                bytes.extend_from_slice(&chunk);
            }
            let mut response = opentelemetry_http::Response::builder().status(status);
            for (name, value) in &headers {
                response = response.header(name, value);
            }
            Ok::<_, opentelemetry_http::HttpError>(
                response.body(opentelemetry_http::Bytes::from(bytes))?,
            )
        });
        task.await?
    }
}

/// Logs one run event with typed fields (and names the file on the current step span).
pub fn log_event(e: &Event) {
    let span = tracing::Span::current();
    match e {
        Event::Listed {
            connection,
            location,
            prefix,
            count,
        } => tracing::info!(
            target: "ferry::run",
            event = "listed",
            connection = %connection,
            location = %location,
            prefix = %prefix,
            count = *count as u64,
            "listed"
        ),
        Event::Fetched {
            connection,
            location,
            name,
            bytes,
        }
        | Event::Put {
            connection,
            location,
            name,
            bytes,
        } => {
            span.record("file", name.as_str());
            if matches!(e, Event::Put { .. }) {
                tracing::info!(
                    target: "ferry::run",
                    event = "put",
                    connection = %connection,
                    location = %location,
                    name = %name,
                    bytes = *bytes,
                    "put"
                )
            } else {
                tracing::info!(
                    target: "ferry::run",
                    event = "fetched",
                    connection = %connection,
                    location = %location,
                    name = %name,
                    bytes = *bytes,
                    "fetched"
                )
            }
        }
        Event::Renamed {
            connection,
            location,
            from,
            to,
        } => {
            span.record("file", from.as_str());
            tracing::info!(
                target: "ferry::run",
                event = "renamed",
                connection = %connection,
                location = %location,
                from = %from,
                to = %to,
                "renamed"
            )
        }
        Event::Skipped {
            connection,
            location,
            name,
            reason,
        } => tracing::warn!(
            target: "ferry::run",
            event = "skipped",
            connection = %connection,
            location = %location,
            name = %name.escape_debug(),
            reason = %reason,
            "skipped"
        ),
        Event::Request {
            connection,
            method,
            url,
            status,
            suppressed,
            record,
            message,
            attempts,
            rejected,
            key,
        } => {
            // a failing answer that was not tolerated is a warning; a dry run's has no status
            let failing =
                status.is_some_and(|s| !*suppressed && (*rejected || !(200..300).contains(&s)));
            macro_rules! request {
                ($level:ident) => {
                    tracing::$level!(
                        target: "ferry::run",
                        event = "request",
                        connection = %connection,
                        method = %method,
                        url = %url,
                        status = status.map(u64::from),
                        suppressed = *suppressed,
                        record = *record,
                        answer = message.as_deref(),
                        attempts = u64::from(*attempts),
                        rejected = *rejected,
                        key = key.as_deref(),
                        "request"
                    )
                };
            }
            if failing {
                request!(warn)
            } else {
                request!(info)
            }
        }
        Event::Emailed { to, subject } => tracing::info!(
            target: "ferry::run",
            event = "emailed",
            to = %to.join(", "),
            subject = %subject,
            "emailed"
        ),
        Event::EmailFailed {
            to,
            subject,
            message,
        } => tracing::warn!(
            target: "ferry::run",
            event = "email_failed",
            to = %to.join(", "),
            subject = %subject,
            error = %message,
            "email_failed"
        ),
        Event::Body { of, text } => tracing::debug!(
            target: "ferry::run",
            event = "body",
            of = %of,
            bytes = text.len() as u64,
            "body"
        ),
        Event::Failed { step, message } => tracing::warn!(
            target: "ferry::run",
            event = "failed",
            step = %step,
            error = %message,
            "failed"
        ),
    }
}

/// Names on a step span the loop item it runs for: `file` from an item with a `name`,
/// `record` from one with a `number` (the innermost loop variable wins).
pub fn annotate_step(
    span: &tracing::Span,
    vars: &std::collections::BTreeMap<String, minijinja::Value>,
) {
    const ROOTS: [&str; 5] = ["input", "params", "steps", "run", "error"];
    // no subscriber records the span (no trace export, a log level above it): nothing to name
    if span.is_disabled() {
        return;
    }
    for (k, v) in vars {
        if ROOTS.contains(&k.as_str()) {
            continue;
        }
        if let Ok(name) = v.get_attr("name")
            && let Some(name) = name.as_str()
        {
            span.record("file", name);
        }
        if let Ok(n) = v.get_attr("number")
            && let Ok(n) = u64::try_from(n)
        {
            span.record("record", n);
        }
    }
}

/// Records a step's outcome on its span: `ok`, `failed` (with status ERROR and the error's
/// message), or `skipped` (its condition was false).
pub fn step_outcome<T>(span: &tracing::Span, result: &Result<Option<T>, crate::run::StepError>) {
    span.record(
        "outcome",
        match result {
            Ok(Some(_)) => "ok",
            Ok(None) => "skipped",
            Err(_) => "failed",
        },
    );
    if let Err(e) = result {
        failed(span, &e.message);
    }
}

/// Marks a span failed: OpenTelemetry status ERROR with `message` (the span must declare
/// `otel.status_code` and `otel.status_description`).
fn failed(span: &tracing::Span, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message);
}

/// Logs "run started" (INFO) for the run of `span`.
pub fn run_started(span: &tracing::Span, flow: &str, run_id: &str, dry_run: bool) {
    tracing::info!(
        target: "ferry::run",
        parent: span,
        event = "run_started",
        flow,
        run_id,
        dry_run,
        "run started"
    );
}

/// Records a run's outcome on its span (status ERROR with the error for a failed or partial
/// run) and logs "run finished" with its counters: INFO when it succeeded or found no files,
/// ERROR otherwise.
pub fn run_finished(
    span: &tracing::Span,
    (flow, run_id): (&str, &str),
    outcome: crate::run::Outcome,
    error: Option<&crate::run::RunError>,
    c: &crate::run::Counters,
    took: Duration,
) {
    span.record("outcome", outcome.to_string());
    let error = error.map(|e| format!("step '{}': {}", e.step, e.message));
    macro_rules! finished {
        ($level:ident) => {
            tracing::$level!(
                target: "ferry::run",
                parent: span,
                event = "run_finished",
                flow,
                run_id,
                outcome = %outcome,
                duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                files_put = c.files_put,
                bytes_put = c.bytes_put,
                records_ok = c.requests_ok,
                records_tolerated = c.tolerated,
                records_failed = c.requests_failed,
                emails = c.emails,
                error = error.as_deref(),
                "run finished"
            )
        };
    }
    match &error {
        Some(message) => {
            failed(span, message);
            finished!(error);
        }
        None => finished!(info),
    }
}
