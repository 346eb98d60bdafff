//! The HTTP API: REST triggers declared by flows, ferry's JSON API, the OIC-compatible
//! paths, health, readiness and metrics.
//!
//! Errors are JSON: `{"error": {"code": "...", "message": "..."}}` with a fitting status.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use super::Server;
use super::app::StartError;
use super::auth::{Denied, Role, check_one};
use crate::history::{
    EventFilter, HistoryError, MAX_PAGE, Outcome, PAGE, ResubmitError, RunFilter,
};
use crate::model::PartKind;

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds a client should wait before trying again (`Retry-After`).
    retry_after: Option<u64>,
}

/// How long a sender is asked to wait before delivering again to a paused flow's REST
/// trigger (`Retry-After`, seconds).
pub const PAUSED_RETRY_AFTER_SECS: u64 = 60;

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same answer, asking the client to try again after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The error code (`paused`, `unknown_flow`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ferry\", charset=\"UTF-8\""),
            );
        }
        r
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> ApiError {
        let (status, code) = match &e {
            StartError::UnknownFlow(_) => (StatusCode::NOT_FOUND, "unknown_flow"),
            StartError::NotAllowed { .. } => (StatusCode::CONFLICT, "not_allowed"),
            StartError::Busy { .. } => (StatusCode::CONFLICT, "flow_running"),
            StartError::Input(_) => (StatusCode::BAD_REQUEST, "bad_input"),
            StartError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            StartError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            StartError::Resubmit(ResubmitError::History(HistoryError::UnknownRun(_))) => {
                (StatusCode::NOT_FOUND, "unknown_run")
            }
            StartError::Resubmit(ResubmitError::StillRunning(_)) => {
                (StatusCode::CONFLICT, "still_running")
            }
            // nothing was kept to run again: not worth a retry
            StartError::Resubmit(ResubmitError::Abandoned { .. }) => {
                (StatusCode::GONE, "abandoned")
            }
            // kept bytes that are gone or changed do not come back: not worth a retry
            StartError::Resubmit(ResubmitError::History(HistoryError::InputGone { .. })) => {
                (StatusCode::GONE, "input_gone")
            }
            StartError::Resubmit(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            StartError::Paused(_) => (StatusCode::CONFLICT, "paused"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> ApiError {
        match e {
            HistoryError::UnknownRun(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_run", e.to_string())
            }
            HistoryError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
        }
    }
}

fn denied(d: Denied) -> ApiError {
    match d {
        Denied::Missing => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "HTTP Basic credentials are required",
        ),
        Denied::Wrong => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong user name or password",
        ),
        Denied::Forbidden => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this user may only read (the operator role may run and resubmit)",
        ),
    }
}

/// Checks the caller has at least `need`.
pub fn authorize(server: &Server, headers: &HeaderMap, need: Role) -> Result<(), ApiError> {
    match server.users.check(headers).map_err(denied)? {
        None => Ok(()),
        Some(role) if role >= need => Ok(()),
        Some(_) => Err(denied(Denied::Forbidden)),
    }
}

/// The API routes.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/flows/{flow}/runs", post(run_now))
        .route("/api/v1/flows/{flow}/pause", post(pause))
        .route("/api/v1/flows/{flow}/resume", post(resume))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/events", get(run_events))
        .route("/api/v1/runs/{id}/resubmit", post(resubmit))
        .route("/api/v1/ticks", get(ticks))
        .route(
            "/ic/api/integration/v1/integrations/{code}/schedule/jobs",
            post(oic_schedule_jobs),
        )
        .route(
            "/ic/api/integration/v1/integrations/{code}/schedule/pause",
            post(oic_schedule_pause),
        )
        .route(
            "/ic/api/integration/v1/integrations/{code}/schedule/resume",
            post(oic_schedule_resume),
        )
        .route(
            "/ic/api/integration/v1/monitoring/errors/{id}/resubmit",
            post(oic_resubmit),
        )
        .route(
            "/ic/api/integration/v1/monitoring/errors/resubmit",
            post(oic_bulk_resubmit),
        )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the run history: it answers within a second, whatever the
/// database does.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

async fn readyz(State(server): State<Arc<Server>>) -> Response {
    if server.app.is_stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    match tokio::time::timeout(READY_TIMEOUT, server.app.store().schema_version()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("run history unreachable: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "run history unreachable: no answer within {} ms\n",
                READY_TIMEOUT.as_millis()
            ),
        )
            .into_response(),
    }
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    // pauses live in the history (`ferry pause`, another instance): read at each scrape; when
    // the history cannot answer, the last values stay
    if let Ok(pauses) = server.app.store().pauses().await {
        server.app.metrics().set_paused(
            &server.app.project(),
            pauses.iter().map(|p| p.flow.as_str()),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.app.metrics().render(),
    )
        .into_response()
}

async fn status(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Viewer)?;
    let loaded = server.app.loaded();
    let instances = server.app.store().instances().await?;
    let active: Vec<Value> = server
        .app
        .active_runs()
        .into_iter()
        .map(|(run, flow)| json!({ "run_id": run, "flow": flow }))
        .collect();
    Ok(Json(json!({
        "instance": server.app.settings().instance,
        // the runtime's threads (`--workers`, FERRY_WORKERS)
        "workers": tokio::runtime::Handle::current().metrics().num_workers(),
        "generation": loaded.generation,
        "loaded_at": loaded.loaded_at,
        "flows": loaded.engine.project().flows.len(),
        "reload_failure": server.app.reload_failure(),
        "active_runs": active,
        "instances": instances,
        "stopping": server.app.is_stopping(),
    })))
}

/// One flow as the API shows it.
pub fn flow_json(plan: &crate::compile::FlowPlan) -> Value {
    let next = plan
        .schedule
        .as_ref()
        .and_then(|s| s.next_after(chrono::Utc::now()))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({
        "id": plan.id,
        "name": plan.name,
        "version": plan.version,
        "manual": plan.trigger.manual,
        "schedule": plan.trigger.schedule.as_ref().map(|s| json!({
            "cron": s.cron,
            "timezone": s.timezone.as_deref().unwrap_or("UTC"),
            "next": next,
        })),
        "rest": plan.trigger.rest.as_ref().map(|r| json!({
            "method": r.method,
            "path": r.path,
        })),
    })
}

async fn flows(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Viewer)?;
    let project = server.app.project();
    let pauses = server.app.store().pauses().await?;
    let flows: Vec<Value> = project
        .flows
        .values()
        .map(|p| {
            let mut v = flow_json(p);
            let pause = pauses.iter().find(|x| x.flow == p.id);
            if let Some(o) = v.as_object_mut() {
                o.extend(pause_fields(pause));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "flows": flows })))
}

/// A flow's pause state as the API shows it: `paused`, and while paused `paused_at`,
/// `paused_by` and `reason`.
pub fn pause_fields(pause: Option<&crate::history::Pause>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("paused".into(), Value::Bool(pause.is_some()));
    if let Some(p) = pause {
        m.insert("paused_at".into(), json!(p.paused_at));
        m.insert("paused_by".into(), json!(p.paused_by));
        m.insert("reason".into(), json!(p.reason));
    }
    m
}

/// Body of `POST /api/v1/flows/{id}/pause` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why (kept with the pause, shown to operators).
    pub reason: Option<String>,
}

async fn pause(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
    body: Option<Json<PauseBody>>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let by = server.users.caller(&headers);
    let reason = body.and_then(|Json(b)| b.reason);
    let p = server.app.pause(&flow, &by, reason.as_deref()).await?;
    let mut v = serde_json::Map::new();
    v.insert("flow".into(), json!(flow));
    v.extend(pause_fields(Some(&p)));
    Ok(Json(Value::Object(v)))
}

async fn resume(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let by = server.users.caller(&headers);
    let ended = server.app.resume(&flow, &by).await?;
    Ok(Json(json!({
        "flow": flow,
        "paused": false,
        "was_paused": ended.is_some(),
    })))
}

async fn run_now(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let run_id = server.app.run_now(&flow).await?;
    Ok(accepted(json!({ "run_id": run_id, "flow": flow })))
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Query of `GET /api/v1/runs`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    /// Only this flow (empty: all).
    pub flow: Option<String>,
    /// Only this outcome (empty: all).
    pub outcome: Option<String>,
    /// Only runs started since: RFC 3339 or an age like `24h` (empty: any time).
    pub since: Option<String>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Only runs found by this text: a file name containing it, or a tracked value,
    /// record number or record key equal to it (empty: all).
    pub search: Option<String>,
    /// Only runs after this one in the listing (the `next` cursor of the page before).
    pub before: Option<String>,
}

impl RunsQuery {
    /// The store filter it means.
    pub fn filter(&self) -> Result<RunFilter, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
        Ok(RunFilter {
            flow: self.flow.clone().filter(|f| !f.is_empty()),
            outcome: match self.outcome.as_deref().filter(|o| !o.is_empty()) {
                Some(o) => Some(o.parse::<Outcome>().map_err(bad)?),
                None => None,
            },
            since: match self.since.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => Some(crate::history::text::parse_since(s).map_err(bad)?),
                None => None,
            },
            limit: Some(self.limit.unwrap_or(50).clamp(1, 1000)),
            search: match self.search.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(s) => Some(crate::history::check_search(s).map_err(|e| bad(e.to_string()))?),
                None => None,
            },
            before: self.before.clone().filter(|b| !b.is_empty()),
        })
    }
}

async fn list_runs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Viewer)?;
    let filter = q.filter()?;
    let runs = server.app.store().list(&filter).await?;
    // a full page may have more after it
    let next = (runs.len() == filter.limit.unwrap_or(50) as usize)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({ "runs": runs, "next": next })))
}

async fn show_run(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Viewer)?;
    match server.app.store().get(&id).await? {
        Some(d) => Ok(Json(json!(d))),
        None => Err(HistoryError::UnknownRun(id).into()),
    }
}

/// Query of `GET /api/v1/runs/{id}/events` (and the run page's event list): strings, so
/// that a bad value gets a JSON error that says which.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// `all` (default), `failed`, `tolerated`, `files`, `requests`, `emails`.
    pub status: Option<String>,
    /// The cursor: events after this one (default 0, the start).
    pub after: Option<String>,
    /// Events per page (default [`crate::history::PAGE`], at most
    /// [`crate::history::MAX_PAGE`]).
    pub limit: Option<String>,
}

/// A page request, checked.
#[derive(Debug, Clone, Copy)]
pub struct EventsPage {
    /// Which events.
    pub filter: EventFilter,
    /// After this event.
    pub after: i64,
    /// At most this many.
    pub limit: u32,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl EventsQuery {
    /// The page it asks for; a bad value is a 400 naming the parameter.
    pub fn page(&self) -> Result<EventsPage, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
        let filter = match given(&self.status) {
            Some(s) => s
                .parse::<EventFilter>()
                .map_err(|e| bad(format!("status: {e}")))?,
            None => EventFilter::All,
        };
        let after =
            match given(&self.after) {
                Some(a) => a.parse::<i64>().ok().filter(|a| *a >= 0).ok_or_else(|| {
                    bad(format!("after: '{a}' is not an event number (0 or more)"))
                })?,
                None => 0,
            };
        let limit = match given(&self.limit) {
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| {
                    bad(format!(
                        "limit: '{l}' is not a number of events from 1 to {MAX_PAGE}"
                    ))
                })?,
            None => PAGE,
        };
        Ok(EventsPage {
            filter,
            after,
            limit,
        })
    }
}

async fn run_events(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Viewer)?;
    let p = q.page()?;
    let store = server.app.store();
    let page = store.events_page(&id, p.filter, p.after, p.limit).await?;
    let previous = store.events_before(&id, p.filter, p.after, p.limit).await?;
    Ok(Json(json!({
        "run_id": id,
        "events": page.events,
        "next": page.next,
        "previous": previous,
    })))
}

async fn resubmit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let run_id = server.app.resubmit(&id).await?;
    Ok(accepted(json!({ "run_id": run_id, "resubmit_of": id })))
}

#[derive(Debug, Deserialize)]
struct TicksQuery {
    flow: Option<String>,
    limit: Option<u32>,
}

async fn ticks(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<TicksQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Viewer)?;
    let ticks = server
        .app
        .store()
        .ticks(q.flow.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "ticks": ticks })))
}

/// `POST /ic/api/integration/v1/integrations/{CODE}|{VERSION}/schedule/jobs` with
/// `{"action":"NOW"}`: OIC's "submit now".
async fn oic_schedule_jobs(
    State(server): State<Arc<Server>>,
    Path(code): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    authorize(&server, req.headers(), Role::Operator)?;
    let limits = super::limits::of(req.extensions());
    let (parts, body) = req.into_parts();
    let body = super::limits::read_json(body, &parts.headers, &limits).await?;
    let action = body
        .as_ref()
        .and_then(|v| v.get("action"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !action.eq_ignore_ascii_case("NOW") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("only {{\"action\":\"NOW\"}} is supported, got action '{action}'"),
        ));
    }
    let flow = oic_flow(&server, &code)?;
    let run_id = server.app.run_now(&flow).await?;
    Ok(accepted(json!({
        "id": run_id,
        "integration": flow,
        "status": "SUBMITTED",
    })))
}

/// The flow of an OIC integration code, `CODE|VERSION` or `CODE` (a version must match).
fn oic_flow(server: &Server, code: &str) -> Result<String, ApiError> {
    let (flow, version) = match code.split_once('|') {
        Some((f, v)) => (f.to_string(), Some(v.to_string())),
        None => (code.to_string(), None),
    };
    if let Some(v) = &version {
        let project = server.app.project();
        if let Some(plan) = project.flows.get(&flow)
            && !version_matches(&plan.version, v)
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_version",
                format!("flow '{flow}' is at version {}, not {v}", plan.version),
            ));
        }
    }
    Ok(flow)
}

/// `POST /ic/api/integration/v1/integrations/{CODE}|{VERSION}/schedule/pause`: OIC's
/// "pause schedule", here a pause of the flow (`ferry pause`).
async fn oic_schedule_pause(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let flow = oic_flow(&server, &code)?;
    let by = server.users.caller(&headers);
    server
        .app
        .pause(&flow, &by, Some("paused by OIC's schedule/pause"))
        .await?;
    Ok(Json(json!({ "integration": flow, "status": "PAUSED" })))
}

/// `POST /ic/api/integration/v1/integrations/{CODE}|{VERSION}/schedule/resume`: OIC's
/// "resume schedule" (`ferry resume`).
async fn oic_schedule_resume(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let flow = oic_flow(&server, &code)?;
    let by = server.users.caller(&headers);
    server.app.resume(&flow, &by).await?;
    Ok(Json(json!({ "integration": flow, "status": "ACTIVATED" })))
}

/// OIC writes versions both as `01.23.2000` and `1.23.2000`.
fn version_matches(ours: &str, theirs: &str) -> bool {
    let norm = |v: &str| -> Vec<String> {
        v.split('.')
            .map(|p| p.trim_start_matches('0').to_string())
            .collect()
    };
    ours == theirs || norm(ours) == norm(theirs)
}

async fn oic_resubmit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&server, &headers, Role::Operator)?;
    let run_id = server.app.resubmit(&id).await?;
    Ok(accepted(
        json!({ "id": run_id, "resubmittedFrom": id, "status": "SUBMITTED" }),
    ))
}

#[derive(Debug, Deserialize)]
struct BulkResubmit {
    ids: Vec<String>,
}

async fn oic_bulk_resubmit(
    State(server): State<Arc<Server>>,
    req: Request,
) -> Result<Response, ApiError> {
    authorize(&server, req.headers(), Role::Operator)?;
    let limits = super::limits::of(req.extensions());
    let (parts, body) = req.into_parts();
    let value = super::limits::read_json(body, &parts.headers, &limits).await?;
    let body: BulkResubmit = serde_json::from_value(value.unwrap_or(Value::Null)).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"ids\": [run ids]}}: {e}"),
        )
    })?;
    const MAX_IDS: usize = 1000;
    if body.ids.len() > MAX_IDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("at most {MAX_IDS} run ids at once, got {}", body.ids.len()),
        ));
    }
    let mut results = Vec::new();
    for id in body.ids {
        match server.app.resubmit(&id).await {
            Ok(run_id) => {
                results.push(json!({ "id": id, "resubmittedAs": run_id, "status": "SUBMITTED" }))
            }
            Err(e) => {
                let e = ApiError::from(e);
                results.push(
                    json!({ "id": id, "status": "FAILED", "code": e.code, "message": e.message }),
                );
            }
        }
    }
    Ok((StatusCode::OK, Json(json!({ "results": results }))).into_response())
}

/// Every request no other route took: a REST trigger of a flow, or 404.
pub async fn trigger(State(server): State<Arc<Server>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let project = server.app.project();
    let found = project.flows.values().find(|p| {
        p.trigger.rest.as_ref().is_some_and(|r| {
            r.path == path && Method::from_bytes(r.method.as_bytes()).ok() == Some(method.clone())
        })
    });
    let Some(plan) = found.cloned() else {
        let allowed = project
            .flows
            .values()
            .any(|p| p.trigger.rest.as_ref().is_some_and(|r| r.path == path));
        return if allowed {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not accepted at {path}"),
            )
            .into_response()
        } else {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("nothing at {path}"),
            )
            .into_response()
        };
    };
    let status_of = |r: &Response| r.status().as_u16();
    let response = match deliver(&server, &plan, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    server
        .app
        .metrics()
        .delivery(&plan.id, status_of(&response));
    response
}

async fn deliver(
    server: &Arc<Server>,
    plan: &crate::compile::FlowPlan,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(rest) = plan.trigger.rest.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no trigger",
        ));
    };
    // credentials: the flow's own, else the operator's, else open (no users configured)
    match &rest.basic_auth {
        Some(env) => {
            let (Ok(name), Ok(password)) = (
                std::env::var(&env.username_env),
                std::env::var(&env.password_env),
            ) else {
                tracing::error!(
                    flow = %plan.id,
                    "the trigger's credentials are not set ({} / {}); refusing deliveries",
                    env.username_env,
                    env.password_env
                );
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "this trigger's credentials are not configured on the server",
                ));
            };
            if name.is_empty() || password.is_empty() {
                tracing::error!(
                    flow = %plan.id,
                    "the trigger's credentials are empty ({} / {}); refusing deliveries",
                    env.username_env,
                    env.password_env
                );
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "this trigger's credentials are not configured on the server",
                ));
            }
            check_one(req.headers(), &name, &password).map_err(denied)?;
        }
        None => authorize(server, req.headers(), Role::Operator)?,
    }
    // a paused flow accepts nothing it would not run: the sender keeps the delivery
    let pauses = match server.app.pauses_unless_paused(&plan.id).await {
        Ok(p) => p,
        Err(StartError::Paused(m)) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "paused", m)
                .retry_after(PAUSED_RETRY_AFTER_SECS));
        }
        Err(e) => return Err(delivery_error(e)),
    };
    let limit =
        usize::try_from(rest.max_body_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request body is over the trigger's limit of {} MiB",
                rest.max_body_mib
            ),
        )
    };
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = content_length
        && len > rest.max_body_mib.saturating_mul(1024 * 1024)
    {
        return Err(too_large());
    }
    let json_limits = super::limits::of(req.extensions());
    let guard = req.extensions().get::<Arc<super::limits::Guard>>().cloned();
    let json_budget = guard.as_ref().map(|g| g.json_budget.clone());
    // a small body (its length said) is held in memory, out of a budget shared by every
    // delivery, and kept with its run in the history database: no file before its `202`.
    // Any other is staged as files.
    let held_limit = content_length
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= json_limits.held_delivery_bytes);
    let held_permit = match (held_limit, &guard) {
        (Some(n), Some(g)) => u32::try_from(n)
            .ok()
            .and_then(|n| g.held_budget.clone().try_acquire_many_owned(n).ok()),
        _ => None,
    };
    let held_limit = held_limit.filter(|_| held_permit.is_some());
    // multer keeps what comes before the first boundary: a body without it is refused
    // before it is read (no boundary named) or within its first bytes (none found)
    let Some(boundary) = super::limits::multipart_boundary(req.headers()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected a multipart/form-data body with a boundary (Content-Type: multipart/form-data; boundary=…)",
        ));
    };
    let deadline = req.extensions().get::<super::limits::Deadline>().copied();
    // a body sent too slowly in all is a 408, whatever the reader made of its end
    let late = |e: ApiError| deadline.and_then(|d| d.passed()).unwrap_or(e);
    let (parts, body) = req.into_parts();
    let limited = Body::new(super::limits::PreambleLimited::new(
        Body::new(http_body_util::Limited::new(body, limit)),
        &boundary,
    ));
    let req = Request::from_parts(parts, limited);
    let mut multipart = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    // the staging folder of a delivery that is not held, made at its first part
    let mut incoming: Option<tempfile::TempDir> = None;
    let mut received: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    let mut held: Vec<crate::history::HeldPart> = Vec::new();
    let mut held_bytes = 0usize;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(late(multipart_error(e, &too_large))),
        };
        let name = field.name().unwrap_or("").to_string();
        let Some(spec) = rest.parts.get(&name) else {
            let expected: Vec<&str> = rest.parts.keys().map(String::as_str).collect();
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unexpected_part",
                format!(
                    "unexpected part '{name}' (this trigger takes: {})",
                    expected.join(", ")
                ),
            ));
        };
        if seen.contains(&name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "duplicate_part",
                format!("part '{name}' appears twice"),
            ));
        }
        seen.push(name.clone());
        let file_name = field.file_name().map(str::to_string);
        if spec.kind == PartKind::File {
            check_delivered_name(&name, file_name.as_deref())?;
        }
        let mut out = match held_limit {
            Some(_) => None,
            None => {
                let dir = match &incoming {
                    Some(d) => d.path().to_path_buf(),
                    None => {
                        let d = tempfile::Builder::new()
                            .prefix("ferry-delivery-")
                            .tempdir_in(server.incoming_dir())
                            .map_err(|e| spool_error(format!("cannot spool the delivery: {e}")))?;
                        let path = d.path().to_path_buf();
                        incoming = Some(d);
                        path
                    }
                };
                let path = dir.join(format!("part-{}", received.len()));
                let file = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| spool_error(format!("cannot spool part '{name}': {e}")))?;
                Some((file, path))
            }
        };
        let mut field = field;
        // a JSON part is kept in memory (at most max_json_bytes) to be checked; a file part
        // only streams to disk, unless the whole delivery is held
        let is_json = spec.kind == PartKind::Json;
        let mut bytes_held: Vec<u8> = Vec::new();
        // the bytes held for the check, out of a budget shared by every delivery
        let mut json_held: Option<tokio::sync::OwnedSemaphorePermit> = None;
        loop {
            match field.chunk().await {
                Ok(Some(bytes)) => {
                    if is_json && bytes_held.len() + bytes.len() > json_limits.max_json_bytes {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "too_large",
                            format!(
                                "part '{name}' is over the limit of {} KiB for a JSON part",
                                json_limits.max_json_bytes / 1024
                            ),
                        ));
                    }
                    match (&mut out, held_limit) {
                        (None, Some(limit)) => {
                            // the parts are within the body: never over its length
                            held_bytes += bytes.len();
                            if held_bytes > limit {
                                return Err(ApiError::new(
                                    StatusCode::BAD_REQUEST,
                                    "bad_request",
                                    "the body is longer than its Content-Length",
                                ));
                            }
                            bytes_held.extend_from_slice(&bytes);
                        }
                        (Some((file, _)), _) => {
                            if is_json {
                                hold_json(&json_budget, &mut json_held, bytes.len())?;
                                bytes_held.extend_from_slice(&bytes);
                            }
                            file.write_all(&bytes).await.map_err(|e| {
                                spool_error(format!("cannot spool part '{name}': {e}"))
                            })?
                        }
                        (None, None) => {}
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(late(multipart_error(e, &too_large))),
            }
        }
        if is_json
            && let Err(e) = super::limits::check_json(&bytes_held, json_limits.max_json_depth)
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("part '{name}' is not JSON: {e}"),
            ));
        }
        match out {
            Some((mut file, path)) => {
                file.flush()
                    .await
                    .map_err(|e| spool_error(format!("cannot spool part '{name}': {e}")))?;
                received.push((name, path, file_name));
            }
            None => held.push(crate::history::HeldPart {
                name,
                kind: spec.kind,
                bytes: bytes_held.into(),
                file_name,
            }),
        }
    }
    let missing: Vec<&str> = rest
        .parts
        .iter()
        .filter(|(n, s)| s.required && !seen.contains(n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_part",
            format!("missing part(s): {}", missing.join(", ")),
        ));
    }
    let mut req = crate::history::RunRequest::new(&plan.id, crate::history::Trigger::Rest);
    req.parts = received;
    // recorded (the parts kept in the run history) before it is acknowledged, in a task
    // of its own: a client that goes away now drops only this wait, not the recording or
    // the start of what it delivered (the task keeps the staged parts, or the memory held,
    // until recorded)
    let run_id = server
        .app
        .start_detached(req, held, Some(pauses), (incoming, held_permit))
        .await
        .map_err(delivery_error)?;
    Ok(accepted(json!({
        "run_id": run_id,
        "flow": plan.id,
        "status": "accepted",
    })))
}

/// Takes `n` more bytes out of the JSON budget into `held`: a `503` when the budget is spent
/// (deliveries with large JSON parts arrived at once; the sender tries again).
fn hold_json(
    budget: &Option<Arc<tokio::sync::Semaphore>>,
    held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    n: usize,
) -> Result<(), ApiError> {
    let Some(budget) = budget else {
        return Ok(());
    };
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let more = budget.clone().try_acquire_many_owned(n).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "the server is checking {} MiB of JSON parts already; try again",
                super::limits::JSON_BUDGET_BYTES / (1024 * 1024)
            ),
        )
        .retry_after(1)
    })?;
    match held {
        Some(h) => h.merge(more),
        None => *held = Some(more),
    }
    Ok(())
}

/// The longest file name a delivery may carry, in bytes (what file systems take).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Refuses a file part without a file name (`missing_filename`), and one whose name no
/// target could take or that ferry keeps for itself (`bad_filename`, naming the rule): a
/// path separator, `.` or `..`, a control character, over [`MAX_FILE_NAME_BYTES`], or the
/// prefix of ferry's temporary files.
fn check_delivered_name(part: &str, file_name: Option<&str>) -> Result<(), ApiError> {
    let Some(file_name) = file_name else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_filename",
            format!("part '{part}' is a file: its Content-Disposition needs a filename"),
        ));
    };
    let reason = if let Err(crate::connectors::ConnectorError::HostileName { reason, .. }) =
        crate::connectors::check_name(file_name)
    {
        reason.to_string()
    } else if file_name.len() > MAX_FILE_NAME_BYTES {
        format!(
            "it is {} bytes long, over {MAX_FILE_NAME_BYTES}",
            file_name.len()
        )
    } else if file_name.starts_with(crate::connectors::sweep::TMP_PREFIX) {
        format!(
            "names starting with '{}' are ferry's temporary files",
            crate::connectors::sweep::TMP_PREFIX
        )
    } else {
        return Ok(());
    };
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_filename",
        format!(
            "part '{part}': the file name '{}' is refused: {reason}",
            file_name.escape_debug()
        ),
    ))
}

/// How long a sender is asked to wait before delivering again when the run history could
/// not record its delivery (`Retry-After`, seconds).
pub const STORE_RETRY_AFTER_SECS: u64 = 5;

/// A delivery that did not start, as answered: a history that cannot record asks the
/// sender to come back (`503` with `Retry-After`).
fn delivery_error(e: StartError) -> ApiError {
    let unavailable = matches!(e, StartError::Store(_));
    let answer = ApiError::from(e);
    if unavailable {
        answer.retry_after(STORE_RETRY_AFTER_SECS)
    } else {
        answer
    }
}

/// The delivery could not be written to (or read back from) the server's disk.
fn spool_error(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "spool_unavailable",
        message,
    )
}

fn multipart_error(
    e: axum::extract::multipart::MultipartError,
    too_large: &dyn Fn() -> ApiError,
) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(cause) = source {
        if let Some(no) = cause.downcast_ref::<super::limits::NoBoundary>() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_multipart",
                format!("the multipart body is malformed: {no}"),
            );
        }
        source = cause.source();
    }
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_multipart",
            format!("the multipart body is malformed: {}", e.body_text()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{check_delivered_name, hold_json, version_matches};
    use std::sync::Arc;

    /// JSON parts held at once share one budget: over it a 503 with Retry-After; bytes held
    /// come back when the part is done.
    #[test]
    fn json_parts_share_a_budget() {
        let budget = Some(Arc::new(tokio::sync::Semaphore::new(10)));
        let mut a = None;
        hold_json(&budget, &mut a, 4).expect("room");
        hold_json(&budget, &mut a, 2).expect("room");
        let mut b = None;
        let e = hold_json(&budget, &mut b, 5).expect_err("over the budget");
        assert_eq!((e.status().as_u16(), e.code()), (503, "busy"));
        assert_eq!(e.retry_after, Some(1));
        drop(a);
        hold_json(&budget, &mut b, 10).expect("room again");
        hold_json(&None, &mut None, usize::MAX).expect("no budget, no bound");
    }

    #[test]
    fn delivered_file_names() {
        let refused = |n: Option<&str>| {
            let e = check_delivered_name("file", n).expect_err("refused");
            (e.code(), e.message().to_string())
        };
        assert!(check_delivered_name("file", Some("event_outcome.csv")).is_ok());
        assert!(check_delivered_name("file", Some(&"a".repeat(255))).is_ok());
        assert_eq!(
            refused(None),
            (
                "missing_filename",
                "part 'file' is a file: its Content-Disposition needs a filename".into()
            )
        );
        for (name, rule) in [
            ("", "it is empty"),
            ("..", "it names a directory"),
            ("a/b.csv", "it contains a path separator"),
            ("a\\b.csv", "it contains a path separator"),
            ("a\nb.csv", "it contains a control character"),
            (
                ".ferry-tmp-1-a.csv",
                "names starting with '.ferry-tmp-' are ferry's temporary files",
            ),
        ] {
            let (code, message) = refused(Some(name));
            assert_eq!(code, "bad_filename");
            assert!(message.ends_with(rule), "{message}");
        }
        let (_, message) = refused(Some(&"a".repeat(256)));
        assert!(
            message.ends_with("it is 256 bytes long, over 255"),
            "{message}"
        );
    }

    #[test]
    fn oic_versions() {
        assert!(version_matches("01.23.2000", "01.23.2000"));
        assert!(version_matches("01.23.2000", "1.23.2000"));
        assert!(!version_matches("01.23.2000", "01.24.2000"));
    }
}
