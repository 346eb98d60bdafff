//! The monitoring page: server-rendered HTML over the run history, for people.
//!
//! - `GET /` redirects to `GET /ui`, the dashboard: the failed runs of the last 24 hours per
//!   flow, runs per flow and outcome over the last 24 hours and 7 days (SVG bars drawn
//!   here), the top-level flows with their triggers and next scheduled tick, the child flows
//!   (no trigger; called by others) with their callers, runs under way, the last failed
//!   reload, recent skipped ticks.
//! - `GET /ui/runs` lists runs, newest first, filtered by flow, outcome and start time.
//! - `GET /ui/runs/{id}` shows one run with everything recorded about it.
//! - `POST /ui/runs/{id}/resubmit` and `POST /ui/flows/{flow}/run` start a run and answer
//!   `303 See Other` to its page.
//!
//! Times show relative to the page's rendering (`3 min ago`, `yesterday 14:05`) with the
//! exact UTC time as their title, durations in human units (`3 min 05 s`). One small script
//! of this server's, `GET /ui/app.js`, says the times again in the browser's time zone; the
//! pages are complete without it.
//!
//! The pages are protected like the JSON API (HTTP Basic; the viewer role reads, the operator
//! role runs and resubmits): templates under `ui/` are embedded, rendered with minijinja's
//! HTML auto-escaping, and served with a Content-Security-Policy that allows only this
//! server's stylesheet and script (no inline script). Form posts from another site are
//! refused (`Sec-Fetch-Site`, else `Origin`), since a browser sends remembered Basic
//! credentials with them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use minijinja::{Environment, context};
use serde::Serialize;
use serde_json::Value;

use super::Server;
use super::api::{ApiError, EventsQuery, RunsQuery, authorize, flow_json};
use super::app::StartError;
use super::auth::Role;
use crate::compile::Project;
use crate::history::{HistoryError, Outcome, RunFilter, RunSummary, TickStatus};
use crate::steps::{Block, StepKind, invoke::InvokePlan};

/// The page's routes.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(dashboard))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/style.css", get(stylesheet))
        .route("/ui/favicon.svg", get(favicon))
        .route("/ui/app.js", get(script))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/resubmit", post(resubmit))
        .route("/ui/flows/{flow}/run", post(run_now))
        .route("/ui/flows/{flow}/pause", post(pause))
        .route("/ui/flows/{flow}/resume", post(resume))
}

/// Outcomes in the order the bars stack them, bottom up.
const OUTCOMES: [Outcome; 7] = [
    Outcome::Succeeded,
    Outcome::NoFiles,
    Outcome::Partial,
    Outcome::Failed,
    Outcome::Interrupted,
    Outcome::Abandoned,
    Outcome::Running,
];

/// How many runs the dashboard counts at most (over the last 7 days).
const DASHBOARD_RUNS: u32 = 10_000;

/// How many failed runs of the last 24 hours the dashboard counts at most.
const DASHBOARD_FAILURES: u32 = 10_000;

/// The pages' Content-Security-Policy: this server's stylesheet, images and script only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page that could not be shown: its status and why, rendered as HTML.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError::new(e.status(), e.message())
    }
}

impl From<HistoryError> for UiError {
    fn from(e: HistoryError) -> UiError {
        ApiError::from(e).into()
    }
}

impl From<StartError> for UiError {
    fn from(e: StartError) -> UiError {
        ApiError::from(e).into()
    }
}

impl From<minijinja::Error> for UiError {
    fn from(e: minijinja::Error) -> UiError {
        tracing::error!(error = %e, "monitoring page template");
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be rendered (see the server log)",
        )
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let ctx = context! { status => self.status.as_u16(), reason => self.status.canonical_reason(), message => self.message };
        let mut r = match render("error.html", ctx) {
            Ok(html) => page(self.status, html),
            Err(_) => (self.status, self.message).into_response(),
        };
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ferry\", charset=\"UTF-8\""),
            );
        }
        r
    }
}

/// The templates, parsed once. They are part of the binary, so a failure here is a bug that
/// the unit tests catch; it is reported as a page error rather than a panic.
static TEMPLATES: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("ui/layout.html")),
        ("macros.html", include_str!("ui/macros.html")),
        ("flows.html", include_str!("ui/flows.html")),
        ("dashboard.html", include_str!("ui/dashboard.html")),
        ("runs.html", include_str!("ui/runs.html")),
        ("run.html", include_str!("ui/run.html")),
        ("error.html", include_str!("ui/error.html")),
    ] {
        env.add_template(name, text)
            .map_err(|e| format!("{name}: {e:#}"))?;
    }
    env.add_filter("duration", duration);
    env.add_filter("ago", |t: &str, now: &str| {
        match (instant(t), instant(now)) {
            (Some(t), Some(now)) => relative(t, now),
            _ => t.to_string(),
        }
    });
    env.add_filter("utc", |t: &str| {
        instant(t).map_or_else(
            || t.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    });
    env.add_filter("urlencode", |s: &str| url_component(s));
    Ok(env)
});

fn render(name: &str, ctx: minijinja::Value) -> Result<String, UiError> {
    let env = TEMPLATES.as_ref().map_err(|e| {
        tracing::error!(error = %e, "monitoring page templates");
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be rendered (see the server log)",
        )
    })?;
    Ok(env.get_template(name)?.render(ctx)?)
}

/// A duration for people: `850 ms`, `1.2 s`, `42 s`, `3 min 05 s`, `1 h 02 min`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{s}.{} s", (ms % 1000) / 100)
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s / 60) % 60)
    }
}

/// `t` as the pages pass it to templates (RFC 3339, UTC, whole seconds).
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A stored time (RFC 3339), or `None` if it is not one.
fn instant(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `t` said relative to `now`: `just now`, `40 s ago`, `3 min ago`, `2 h ago` (the same
/// day), `yesterday 14:05`, `Tue 14:05` (within a week), `2026-11-20 14:05`; ahead, `in 40 s`,
/// `in 12 min`, `in 3 h`, `tomorrow 02:00`. Days are UTC's here; `ui/app.js` says the same
/// with the browser's days and clock.
fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let days = (now.date_naive() - t.date_naive()).num_days();
    let n = secs.unsigned_abs();
    let ahead = secs < 0;
    let hm = t.format("%H:%M");
    let (count, unit) = match n {
        0..60 => (n, "s"),
        60..3600 => (n / 60, "min"),
        _ => (n / 3600, "h"),
    };
    if !ahead && n < 5 {
        "just now".into()
    } else if n < 3600 || days == 0 {
        if ahead {
            format!("in {count} {unit}")
        } else {
            format!("{count} {unit} ago")
        }
    } else if days == 1 {
        format!("yesterday {hm}")
    } else if days == -1 {
        format!("tomorrow {hm}")
    } else if days.abs() < 7 {
        format!("{} {hm}", t.format("%a"))
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// `s` as one URL path segment or query value: every byte but the unreserved ones
/// (RFC 3986 `A-Z a-z 0-9 - . _ ~`) percent-encoded.
fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTML answer with the page's security headers.
fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        Html(html),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("ui/style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("ui/app.js"),
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("ui/favicon.svg"),
    )
        .into_response()
}

/// Checks the caller has at least `need`; tells whether it may also run and resubmit.
fn allow(server: &Server, headers: &HeaderMap, need: Role) -> Result<bool, UiError> {
    authorize(server, headers, need)?;
    Ok(matches!(
        server.users.check(headers),
        Ok(None | Some(Role::Operator))
    ))
}

/// Refuses a form post that another site made the browser send (with the Basic credentials
/// it remembers): by `Sec-Fetch-Site` where the browser sends it, else by `Origin`.
fn same_origin(headers: &HeaderMap) -> Result<(), UiError> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = || {
        UiError::new(
            StatusCode::FORBIDDEN,
            "a form posted from another site is refused; use the buttons of this page",
        )
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(refused()),
        };
    }
    if let Some(origin) = text(header::ORIGIN) {
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        if origin_host.is_none() || origin_host != text(header::HOST) {
            return Err(refused());
        }
    }
    Ok(())
}

/// One segment of a stacked bar.
#[derive(Debug, Serialize)]
struct Segment {
    outcome: &'static str,
    count: usize,
    y: f64,
    h: f64,
}

/// One bar: the runs started in one bucket of time.
#[derive(Debug, Serialize)]
struct Bar {
    x: f64,
    w: f64,
    label: String,
    total: usize,
    segments: Vec<Segment>,
}

/// Runs per outcome over time, as stacked bars.
#[derive(Debug, Serialize)]
struct Chart {
    width: f64,
    height: f64,
    max: usize,
    bars: Vec<Bar>,
    /// Labels under some bars: (x, text).
    ticks: Vec<(f64, String)>,
}

/// `runs` started in the `n` buckets of `bucket` ending with the one holding `now`.
fn chart(
    runs: &[&RunSummary],
    now: DateTime<Utc>,
    bucket: Duration,
    n: usize,
    size: (f64, f64),
) -> Chart {
    let (width, height) = size;
    let last = now.duration_trunc(bucket).unwrap_or(now);
    let steps = i32::try_from(n.saturating_sub(1)).unwrap_or(0);
    let start = last - bucket * steps;
    let mut counts = vec![BTreeMap::<&'static str, usize>::new(); n];
    for r in runs {
        let Ok(t) = DateTime::parse_from_rfc3339(&r.started_at) else {
            continue;
        };
        let t = t.with_timezone(&Utc);
        if t < start {
            continue;
        }
        let Some(i) = (t - start)
            .num_milliseconds()
            .checked_div(bucket.num_milliseconds())
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < n)
        else {
            continue;
        };
        *counts[i].entry(r.outcome.as_str()).or_default() += 1;
    }
    let max = counts
        .iter()
        .map(|c| c.values().sum::<usize>())
        .max()
        .unwrap_or(0);
    let slot = width / n.max(1) as f64;
    let label = |t: DateTime<Utc>| {
        if bucket >= Duration::days(1) {
            t.format("%m-%d").to_string()
        } else {
            t.format("%H:%M").to_string()
        }
    };
    let mut bars = Vec::with_capacity(n);
    let mut ticks = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        let from = start + bucket * i32::try_from(i).unwrap_or(0);
        let x = slot * i as f64;
        let mut y = height;
        let mut segments = Vec::new();
        for o in OUTCOMES {
            let count = c.get(o.as_str()).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            let h = (height * count as f64 / max.max(1) as f64).max(1.0);
            y -= h;
            segments.push(Segment {
                outcome: o.as_str(),
                count,
                y,
                h,
            });
        }
        let text = label(from);
        if n <= 8 || i % (n / 6).max(1) == 0 {
            ticks.push((x + slot / 2.0, text.clone()));
        }
        bars.push(Bar {
            x: x + slot * 0.1,
            w: slot * 0.8,
            label: format!("{} UTC", from.format("%Y-%m-%d %H:%M")),
            total: c.values().sum(),
            segments,
        });
    }
    Chart {
        width,
        height,
        max,
        bars,
        ticks,
    }
}

/// Runs per outcome: (outcome, count), in [`OUTCOMES`] order, without zeros.
fn tally(runs: &[&RunSummary]) -> Vec<(&'static str, usize)> {
    OUTCOMES
        .iter()
        .map(|o| (o.as_str(), runs.iter().filter(|r| r.outcome == *o).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Failed runs per flow: (flow, count), most first, then by flow.
fn failures_per_flow(failed: &[RunSummary]) -> Vec<(&str, usize)> {
    let mut per = BTreeMap::<&str, usize>::new();
    for r in failed.iter().filter(|r| r.outcome == Outcome::Failed) {
        *per.entry(r.flow.as_str()).or_default() += 1;
    }
    let mut per: Vec<(&str, usize)> = per.into_iter().collect();
    per.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    per
}

/// Who calls each flow: callee → (caller, how), `how` being `invoke` (an `invoke: {flow}`
/// step at any depth) or `on_error` (the caller's error handler).
fn callers(project: &Project) -> BTreeMap<&str, BTreeSet<(&str, &'static str)>> {
    fn walk<'p>(block: &'p Block, out: &mut Vec<&'p str>) {
        for step in &block.steps {
            if let StepKind::Invoke(InvokePlan::Flow { flow, .. }) = &step.kind {
                out.push(flow);
            }
            for (_, nested) in step.kind.children() {
                walk(nested, out);
            }
        }
    }
    let mut by_callee = BTreeMap::<&str, BTreeSet<(&str, &'static str)>>::new();
    for plan in project.flows.values() {
        let mut called = Vec::new();
        walk(&plan.steps, &mut called);
        for callee in called {
            by_callee
                .entry(callee)
                .or_default()
                .insert((plan.id.as_str(), "invoke"));
        }
        if let Some((handler, _)) = &plan.on_error {
            by_callee
                .entry(handler.as_str())
                .or_default()
                .insert((plan.id.as_str(), "on_error"));
        }
    }
    by_callee
}

async fn dashboard(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let can_operate = allow(&server, &headers, Role::Viewer)?;
    let now = Utc::now();
    let store = server.app.store();
    let recent = store
        .list(&RunFilter {
            since: Some(now - Duration::days(7)),
            limit: Some(DASHBOARD_RUNS),
            ..RunFilter::default()
        })
        .await?;
    let all: Vec<&RunSummary> = recent.iter().collect();
    let day: Vec<&RunSummary> = recent
        .iter()
        .filter(|r| {
            DateTime::parse_from_rfc3339(&r.started_at)
                .is_ok_and(|t| t.with_timezone(&Utc) >= now - Duration::hours(24))
        })
        .collect();
    let running = store
        .list(&RunFilter {
            outcome: Some(Outcome::Running),
            limit: Some(100),
            ..RunFilter::default()
        })
        .await?;
    let skipped: Vec<_> = store
        .ticks(None, 500)
        .await?
        .into_iter()
        .filter(|t| matches!(t.status, TickStatus::Skipped | TickStatus::Paused))
        .take(20)
        .collect();
    let pauses = store.pauses().await?;
    let failed = store
        .list(&RunFilter {
            outcome: Some(Outcome::Failed),
            since: Some(now - Duration::hours(24)),
            limit: Some(DASHBOARD_FAILURES),
            ..RunFilter::default()
        })
        .await?;
    let failures = failures_per_flow(&failed);
    let loaded = server.app.loaded();
    let project = loaded.engine.project();
    let called_by = callers(project);
    let (mut flows, mut children) = (Vec::new(), Vec::new());
    for plan in project.flows.values() {
        let mut v = flow_json(plan);
        let Some(o) = v.as_object_mut() else {
            continue;
        };
        let callers: Vec<Value> = called_by
            .get(plan.id.as_str())
            .into_iter()
            .flatten()
            .map(|(flow, how)| serde_json::json!({ "flow": flow, "how": how }))
            .collect();
        o.insert("called_by".into(), Value::Array(callers));
        o.insert(
            "pause".into(),
            serde_json::json!(pauses.iter().find(|p| p.flow == plan.id)),
        );
        let t = &plan.trigger;
        if !(t.manual || t.schedule.is_some() || t.rest.is_some()) {
            // a child flow: it runs inside its callers' runs and has none of its own
            o.insert(
                "params".into(),
                serde_json::json!(plan.params.keys().collect::<Vec<_>>()),
            );
            children.push(v);
            continue;
        }
        let mine: Vec<&RunSummary> = all.iter().copied().filter(|r| r.flow == plan.id).collect();
        o.insert(
            "runnable".into(),
            Value::Bool(t.manual || t.schedule.is_some()),
        );
        o.insert("last".into(), serde_json::json!(mine.first()));
        o.insert("week".into(), serde_json::json!(tally(&mine)));
        o.insert(
            "chart".into(),
            serde_json::json!(chart(&mine, now, Duration::days(1), 7, (140.0, 28.0))),
        );
        o.insert(
            "failed_24h".into(),
            serde_json::json!(
                failures
                    .iter()
                    .find(|(f, _)| *f == plan.id)
                    .map_or(0, |(_, n)| *n)
            ),
        );
        flows.push(v);
    }
    let html = render(
        "dashboard.html",
        context! {
            nav => "dashboard",
            can_operate,
            now => stamp(now),
            instance => server.app.settings().instance,
            workers => tokio::runtime::Handle::current().metrics().num_workers(),
            generation => loaded.generation,
            loaded_at => loaded.loaded_at,
            reload_failure => server.app.reload_failure(),
            day_chart => chart(&all, now, Duration::hours(1), 24, (720.0, 120.0)),
            week_chart => chart(&all, now, Duration::days(1), 7, (720.0, 120.0)),
            day_tally => tally(&day),
            week_tally => tally(&all),
            capped => (recent.len() >= DASHBOARD_RUNS as usize).then_some(DASHBOARD_RUNS),
            flows,
            children,
            failures,
            failures_capped => (failed.len() >= DASHBOARD_FAILURES as usize).then_some(DASHBOARD_FAILURES),
            running,
            skipped,
        },
    )?;
    Ok(page(StatusCode::OK, html))
}

/// The runs page's filter form. A browser sends every field of a GET form, so an empty
/// field means "any", the limit included (the API's query would refuse an empty number).
#[derive(Debug, serde::Deserialize)]
struct RunsForm {
    flow: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    search: Option<String>,
    before: Option<String>,
}

impl RunsForm {
    fn filter(&self) -> Result<RunFilter, ApiError> {
        let limit = match self
            .limit
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            None => None,
            Some(l) => Some(l.parse::<u32>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("'{l}' is not a number of runs"),
                )
            })?),
        };
        RunsQuery {
            flow: self.flow.clone(),
            outcome: self.outcome.clone(),
            since: self.since.clone(),
            limit,
            search: self.search.clone(),
            before: self.before.clone(),
        }
        .filter()
    }
}

async fn runs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<RunsForm>,
) -> Result<Response, UiError> {
    let can_operate = allow(&server, &headers, Role::Viewer)?;
    let (status, runs, error, next) = match q.filter() {
        Ok(filter) => {
            let runs = server.app.store().list(&filter).await?;
            // a full page may have more after it
            let next = (runs.len() == filter.limit.unwrap_or(50) as usize)
                .then(|| runs.last().map(|r| r.id.clone()))
                .flatten();
            (StatusCode::OK, runs, None, next)
        }
        Err(e) => (e.status(), Vec::new(), Some(e.message().to_string()), None),
    };
    let flows: Vec<String> = server.app.project().flows.keys().cloned().collect();
    let html = render(
        "runs.html",
        context! {
            nav => "runs",
            can_operate,
            now => stamp(Utc::now()),
            runs,
            error,
            flows,
            outcomes => OUTCOMES.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
            flow => q.flow,
            outcome => q.outcome,
            since => q.since,
            limit => q.limit,
            search => q.search,
            next,
        },
    )?;
    Ok(page(status, html))
}

/// The event filters the run page offers, in order.
const EVENT_FILTERS: [&str; 6] = ["all", "failed", "tolerated", "files", "requests", "emails"];

async fn run(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, UiError> {
    let can_operate = allow(&server, &headers, Role::Viewer)?;
    let p = q.page()?;
    let store = server.app.store();
    let Some(detail) = store.get(&id).await? else {
        return Err(HistoryError::UnknownRun(id).into());
    };
    // one page of events, never the whole list
    let events = store.events_page(&id, p.filter, p.after, p.limit).await?;
    let previous = store.events_before(&id, p.filter, p.after, p.limit).await?;
    let loops = store.loop_summaries(&detail.summary, &detail.loops).await?;
    let status = q
        .status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("all")
        .to_string();
    let html = render(
        "run.html",
        context! {
            nav => "runs",
            can_operate,
            now => stamp(Utc::now()),
            run => detail.summary,
            failure => detail.failure,
            files => detail.files,
            files_more => detail.files_next.is_some(),
            records => detail.records,
            records_more => detail.records_next.is_some(),
            emails => detail.emails,
            inputs => detail.inputs,
            resubmitted_as => detail.resubmitted_as,
            tracked => detail.tracked,
            loops,
            events => events.events,
            events_next => events.next,
            events_previous => previous,
            events_after => p.after,
            limit => (p.limit != crate::history::PAGE).then_some(p.limit),
            status,
            filters => EVENT_FILTERS,
        },
    )?;
    Ok(page(StatusCode::OK, html))
}

async fn resubmit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    allow(&server, &headers, Role::Operator)?;
    same_origin(&headers)?;
    let run_id = server.app.resubmit(&id).await?;
    Ok(Redirect::to(&format!("/ui/runs/{run_id}")).into_response())
}

async fn run_now(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
) -> Result<Response, UiError> {
    allow(&server, &headers, Role::Operator)?;
    same_origin(&headers)?;
    let run_id = server.app.run_now(&flow).await?;
    Ok(Redirect::to(&format!("/ui/runs/{run_id}")).into_response())
}

/// The pause form: why (optional).
#[derive(Debug, Default, serde::Deserialize)]
struct PauseForm {
    reason: Option<String>,
}

async fn pause(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
    axum::Form(form): axum::Form<PauseForm>,
) -> Result<Response, UiError> {
    allow(&server, &headers, Role::Operator)?;
    same_origin(&headers)?;
    let by = server.users.caller(&headers);
    server.app.pause(&flow, &by, form.reason.as_deref()).await?;
    Ok(Redirect::to("/ui").into_response())
}

async fn resume(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
) -> Result<Response, UiError> {
    allow(&server, &headers, Role::Operator)?;
    same_origin(&headers)?;
    let by = server.users.caller(&headers);
    server.app.resume(&flow, &by).await?;
    Ok(Redirect::to("/ui").into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;
    use std::time::Duration as StdDuration;

    use reqwest::{Client, StatusCode as Status};

    use super::*;
    use crate::compile::{Inputs, load};
    use crate::connectors::Secret;
    use crate::history::{NewRun, Store, Trigger};
    use crate::serve::app::{App, AppSettings};
    use crate::serve::auth::{User, Users};

    /// A scheduled flow of the shipped project that allows "run now" (the first by id; the
    /// engine names no shipped flow, so it is found, not written here). Every such flow
    /// starts by listing a local directory, so it fails in the fixture's empty data dir.
    fn file_flow(server: &Server) -> String {
        let project = server.app.project();
        project
            .flows
            .values()
            .find(|p| p.trigger.manual && p.schedule.is_some())
            .map(|p| p.id.clone())
            .unwrap()
    }

    /// A server over the shipped flows, its local directories in a temp dir that does not
    /// hold them yet (so file flows fail), on a free port.
    struct Fixture {
        _dir: tempfile::TempDir,
        server: Arc<Server>,
        base: String,
        client: Client,
    }

    impl Fixture {
        async fn start(users: Users) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
            let conns = std::fs::read_to_string(repo.join("flows/connections.yaml"))
                .unwrap()
                .replace(
                    "${FERRY_DATA:-./ferry-data}",
                    &dir.path().join("data").display().to_string(),
                );
            let conns_path = dir.path().join("connections.yaml");
            std::fs::write(&conns_path, conns).unwrap();
            Fixture::over(dir, users, repo.join("flows"), conns_path).await
        }

        /// A server over the flow files `flows` (name → YAML) and no connection.
        async fn with_flows(flows: &[(&str, &str)]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let flows_dir = dir.path().join("flows");
            std::fs::create_dir_all(&flows_dir).unwrap();
            for (name, yaml) in flows {
                std::fs::write(flows_dir.join(name), yaml).unwrap();
            }
            let conns_path = dir.path().join("connections.yaml");
            std::fs::write(&conns_path, "connections: {}\n").unwrap();
            Fixture::over(dir, Users::default(), flows_dir, conns_path).await
        }

        async fn over(
            dir: tempfile::TempDir,
            users: Users,
            flows: std::path::PathBuf,
            conns_path: std::path::PathBuf,
        ) -> Fixture {
            let (project, diags) = load(&Inputs {
                paths: vec![flows],
                lookups: None,
                connections: Some(conns_path),
            });
            let project = project.unwrap_or_else(|| panic!("the flows load: {diags:?}"));
            let store = Store::open_sqlite(&dir.path().join("state")).await.unwrap();
            let spool = dir.path().join("spool");
            let incoming = dir.path().join("incoming");
            std::fs::create_dir_all(&spool).unwrap();
            std::fs::create_dir_all(&incoming).unwrap();
            let app = App::new(
                Arc::new(project),
                store,
                AppSettings {
                    instance: "ui-test".into(),
                    lease_ttl: StdDuration::from_secs(30),
                    spool_dir: Some(spool),
                },
            );
            let server = Arc::new(Server {
                app,
                users,
                incoming,
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let router = crate::serve::router(server.clone());
            tokio::spawn(async move { axum::serve(listener, router).await });
            let client = Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            Fixture {
                _dir: dir,
                server,
                base,
                client,
            }
        }

        async fn open() -> Fixture {
            Fixture::start(Users::default()).await
        }

        async fn with_users() -> Fixture {
            Fixture::start(Users::new(vec![
                User::new("op", Secret::new("op-secret".into()), Role::Operator),
                User::new("viewer", Secret::new("look".into()), Role::Viewer),
            ]))
            .await
        }

        fn get(&self, path: &str) -> reqwest::RequestBuilder {
            self.client.get(format!("{}{path}", self.base))
        }

        fn post(&self, path: &str) -> reqwest::RequestBuilder {
            self.client.post(format!("{}{path}", self.base))
        }

        async fn page(&self, path: &str) -> String {
            let r = self.get(path).send().await.unwrap();
            assert_eq!(r.status(), Status::OK, "GET {path}");
            r.text().await.unwrap()
        }

        /// Records a run of `flow` as begun (`running`).
        async fn begin(&self, flow: &str, flow_name: &str, trigger: Trigger) -> String {
            let run = NewRun {
                flow,
                flow_name,
                trigger,
                input_summary: None,
                resubmit_of: None,
                dry_run: false,
            };
            self.server.app.store().begin(&run).await.unwrap()
        }

        /// Records a run of `flow` that could not start, with `message`.
        async fn failed_run(&self, flow: &str, flow_name: &str, message: &str) -> String {
            let id = self.begin(flow, flow_name, Trigger::Manual).await;
            self.server.app.store().abandon(&id, message).await.unwrap();
            id
        }

        /// Waits until run `id` has ended; returns its outcome.
        async fn finished(&self, id: &str) -> Outcome {
            for _ in 0..200 {
                let d = self.server.app.store().get(id).await.unwrap().unwrap();
                if d.summary.outcome != Outcome::Running {
                    return d.summary.outcome;
                }
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            panic!("run {id} did not end");
        }
    }

    /// The status and body of the answer to `r`.
    async fn answer(r: reqwest::RequestBuilder) -> (Status, String) {
        let r = r.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// The run id a `303 See Other` to a run page names.
    fn redirected_run(r: &reqwest::Response) -> String {
        assert_eq!(r.status(), Status::SEE_OTHER);
        let to = r.headers()[header::LOCATION].to_str().unwrap();
        to.strip_prefix("/ui/runs/").unwrap().to_string()
    }

    /// The run ids of a runs page's rows, in order.
    fn row_ids(html: &str) -> Vec<String> {
        html.split("data-run-id=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn url_components_are_percent_encoded() {
        assert_eq!(url_component("FLOW-A_x.1~"), "FLOW-A_x.1~");
        assert_eq!(url_component("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }

    #[test]
    fn templates_parse() {
        assert!(TEMPLATES.is_ok(), "{:?}", TEMPLATES.as_ref().err());
    }

    #[tokio::test]
    async fn root_redirects_to_the_dashboard() {
        let f = Fixture::open().await;
        let r = f.get("/").send().await.unwrap();
        assert_eq!(r.status(), Status::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/ui");
        let css = f.get("/ui/style.css").send().await.unwrap();
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn pages_ask_for_credentials_when_users_are_configured() {
        let f = Fixture::with_users().await;
        for path in ["/ui", "/ui/runs", "/ui/runs/nope"] {
            let r = f.get(path).send().await.unwrap();
            assert_eq!(r.status(), Status::UNAUTHORIZED, "{path}");
            assert!(
                r.headers()[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic realm=\"ferry\""),
                "{path}"
            );
            assert!(r.text().await.unwrap().contains("credentials are required"));
        }
        let wrong = f
            .get("/ui")
            .basic_auth("op", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), Status::UNAUTHORIZED);
        let body = wrong.text().await.unwrap();
        assert!(!body.contains("op-secret"), "no secret in pages");
        let viewer = f
            .get("/ui")
            .basic_auth("viewer", Some("look"))
            .send()
            .await
            .unwrap();
        assert_eq!(viewer.status(), Status::OK);
        let html = viewer.text().await.unwrap();
        assert!(html.contains("read only"));
        assert!(
            !html.contains("data-testid=\"run-now\""),
            "no buttons for viewers"
        );
        let op = f
            .get("/ui")
            .basic_auth("op", Some("op-secret"))
            .send()
            .await;
        let html = op.unwrap().text().await.unwrap();
        assert!(html.contains("data-testid=\"run-now\""));
    }

    #[tokio::test]
    async fn viewer_cannot_resubmit_or_run_now() {
        let f = Fixture::with_users().await;
        let id = f
            .failed_run(&file_flow(&f.server), "enrollment", "boom")
            .await;
        let page = f
            .get(&format!("/ui/runs/{id}"))
            .basic_auth("viewer", Some("look"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), Status::OK);
        assert!(
            !page
                .text()
                .await
                .unwrap()
                .contains("data-testid=\"resubmit\"")
        );
        for path in [
            format!("/ui/runs/{id}/resubmit"),
            format!("/ui/flows/{}/run", file_flow(&f.server)),
        ] {
            let r = f
                .post(&path)
                .basic_auth("viewer", Some("look"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), Status::FORBIDDEN, "{path}");
            assert!(r.text().await.unwrap().contains("operator role"));
        }
        let runs = f.server.app.store().list(&RunFilter::default()).await;
        assert_eq!(runs.unwrap().len(), 1, "no run was started");
    }

    #[tokio::test]
    async fn an_operator_pauses_and_resumes_a_flow_from_the_dashboard() {
        let f = Fixture::with_users().await;
        let flow = file_flow(&f.server);
        let op = |r: reqwest::RequestBuilder| r.basic_auth("op", Some("op-secret"));
        let viewer = |r: reqwest::RequestBuilder| r.basic_auth("viewer", Some("look"));
        let row = |html: &str| {
            part(
                html,
                &format!("data-testid=\"flow-row\" data-flow=\"{flow}\""),
                "</tr>",
            )
            .to_string()
        };
        let (_, html) = answer(op(f.get("/ui"))).await;
        assert!(row(&html).contains("data-testid=\"pause\""));
        // a viewer sees no button and may not press it
        let (_, html) = answer(viewer(f.get("/ui"))).await;
        assert!(!row(&html).contains("data-testid=\"pause\""));
        let r = viewer(f.post(&format!("/ui/flows/{flow}/pause")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("reason=x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::FORBIDDEN);

        let r = op(f.post(&format!("/ui/flows/{flow}/pause")))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("reason=DACS+%3Cmaintenance%3E")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/ui");
        let p = f.server.app.store().pause_of(&flow).await.unwrap().unwrap();
        assert_eq!(
            (p.paused_by.as_str(), p.reason.as_deref()),
            ("op", Some("DACS <maintenance>"))
        );
        let (_, html) = answer(op(f.get("/ui"))).await;
        let paused = row(&html);
        assert!(paused.contains("class=\" flow-paused\""), "{paused}");
        assert!(paused.contains("<span class=\"badge outcome-interrupted\">paused</span>"));
        assert!(
            paused.contains("by <span class=\"mono\">op</span>"),
            "{paused}"
        );
        assert!(
            paused.contains(
                "<span class=\"small\" data-testid=\"pause-reason\">DACS &lt;maintenance&gt;</span>"
            ),
            "{paused}"
        );
        assert!(
            paused.contains("data-testid=\"resume\"")
                && !paused.contains("data-testid=\"run-now\"")
        );
        // run now is refused while paused, and says why
        let r = op(f.post(&format!("/ui/flows/{flow}/run")))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::CONFLICT);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains(&format!("flow &#x27;{flow}&#x27; is paused (by op at "))
        );
        assert!(
            f.server
                .app
                .store()
                .list(&RunFilter::default())
                .await
                .unwrap()
                .is_empty()
        );

        let r = op(f.post(&format!("/ui/flows/{flow}/resume")))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::SEE_OTHER);
        assert_eq!(f.server.app.store().pause_of(&flow).await.unwrap(), None);
        let (_, html) = answer(op(f.get("/ui"))).await;
        assert!(row(&html).contains("data-testid=\"run-now\""));
        // a form posted from another site pauses nothing
        let r = op(f.post(&format!("/ui/flows/{flow}/pause")))
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::FORBIDDEN);
        assert_eq!(f.server.app.store().pause_of(&flow).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_runs_list_searches_by_file_name_and_pages() {
        let f = Fixture::open().await;
        let flow = file_flow(&f.server);
        let first = f.failed_run(&flow, "enrollment", "boom").await;
        let second = f.failed_run(&flow, "enrollment", "boom").await;
        // what a run handled is found by a part of its name
        let mut report = crate::run::RunReport {
            run_id: crate::run::new_run_id(),
            flow: flow.clone(),
            flow_name: "enrollment".into(),
            outcome: crate::run::Outcome::Succeeded,
            dry_run: false,
            started_at: crate::run::now(),
            finished_at: crate::run::now(),
            error: None,
            counters: Default::default(),
            events: vec![crate::run::Event::Fetched {
                connection: "c".into(),
                location: "l".into(),
                name: "INBOUND_20230210_0100.csv".into(),
                bytes: 1,
            }],
            events_omitted: 0,
            tracked: Default::default(),
        };
        report.tracked.insert("eventId".into(), "EV00042".into());
        f.server
            .app
            .store()
            .record(&report, Trigger::Manual)
            .await
            .unwrap();
        let html = f
            .page("/ui/runs?search=bound_20230210&flow=&outcome=&since=&limit=")
            .await;
        assert_eq!(row_ids(&html), [report.run_id.clone()]);
        assert!(
            html.contains("value=\"bound_20230210\""),
            "the box keeps the text"
        );
        let html = f.page("/ui/runs?search=EV00042").await;
        assert_eq!(row_ids(&html), [report.run_id.clone()]);
        let html = f.page(&format!("/ui/runs/{}", report.run_id)).await;
        assert!(html.contains("<dt>Tracked by</dt><dd data-testid=\"tracked\">eventId <span class=\"mono\">EV00042</span></dd>"), "{html}");
        // pages: a full page links to the runs before its last
        let html = f.page("/ui/runs?limit=2").await;
        assert_eq!(row_ids(&html), [report.run_id.clone(), second.clone()]);
        let next = html
            .split("data-testid=\"next-page\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .replace("&amp;", "&");
        assert!(next.ends_with(&format!("before={second}")), "{next}");
        assert_eq!(row_ids(&f.page(&next).await), [first]);
        let (status, html) = answer(f.get(&format!("/ui/runs?search={}", "x".repeat(300)))).await;
        assert_eq!(status, Status::BAD_REQUEST);
        assert!(html.contains("longer than 256 characters"));
    }

    #[tokio::test]
    async fn run_now_and_resubmit_redirect_to_the_new_run() {
        let f = Fixture::with_users().await;
        let auth = |r: reqwest::RequestBuilder| r.basic_auth("op", Some("op-secret"));
        let r = auth(f.post(&format!("/ui/flows/{}/run", file_flow(&f.server))))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        let first = redirected_run(&r);
        // the source directory does not exist
        assert_eq!(f.finished(&first).await, Outcome::Failed);
        let (_, html) = answer(auth(f.get(&format!("/ui/runs/{first}")))).await;
        assert!(html.contains("data-outcome=\"failed\""));
        assert!(html.contains("data-testid=\"run-failure\""));
        assert!(html.contains("not found: directory"), "{html}");
        assert!(html.contains("data-testid=\"resubmit\""));

        let r = auth(f.post(&format!("/ui/runs/{first}/resubmit")))
            .send()
            .await
            .unwrap();
        let second = redirected_run(&r);
        assert_ne!(second, first);
        f.finished(&second).await;
        let d = f.server.app.store().get(&second).await.unwrap().unwrap();
        assert_eq!(d.summary.resubmit_of.as_deref(), Some(first.as_str()));
        let (_, html) = answer(auth(f.get(&format!("/ui/runs/{second}")))).await;
        assert!(html.contains(&format!(
            "<dt>Resubmitted from</dt><dd data-testid=\"resubmit-of\">\
             <a class=\"mono\" href=\"/ui/runs/{first}\">{first}</a></dd>"
        )));
        let (_, html) = answer(auth(f.get(&format!("/ui/runs/{first}")))).await;
        assert!(html.contains(&format!(
            "<dt>Resubmitted as</dt><dd data-testid=\"resubmitted-as\">\
             <a class=\"mono\" href=\"/ui/runs/{second}\">{second}</a></dd>"
        )));
        assert!(
            !html.contains("Resubmitted from"),
            "the first run resubmits none"
        );

        // what cannot start: the error, not a redirect
        let (status, html) = answer(auth(f.post("/ui/flows/NO_SUCH_FLOW/run"))).await;
        assert_eq!(status, Status::NOT_FOUND);
        assert!(html.contains("unknown flow &#x27;NO_SUCH_FLOW&#x27;"));
        let (status, html) = answer(auth(f.post("/ui/runs/no-such-run/resubmit"))).await;
        assert_eq!(status, Status::NOT_FOUND);
        assert!(html.contains("no run &#x27;no-such-run&#x27;"));
    }

    #[tokio::test]
    async fn cross_site_form_posts_are_refused() {
        let f = Fixture::open().await;
        let id = f
            .failed_run(&file_flow(&f.server), "enrollment", "boom")
            .await;
        let path = format!("/ui/runs/{id}/resubmit");
        let r = f
            .post(&path)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::FORBIDDEN);
        let r = f
            .post(&path)
            .header(header::ORIGIN, "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::FORBIDDEN);
        let runs = f.server.app.store().list(&RunFilter::default()).await;
        assert_eq!(runs.unwrap().len(), 1, "no run was started");
        let origin = f.base.clone();
        let r = f
            .post(&path)
            .header(header::ORIGIN, origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Status::SEE_OTHER);
    }

    #[tokio::test]
    async fn runs_list_filters_by_flow_outcome_and_since() {
        let f = Fixture::open().await;
        let a1 = f.failed_run("FLOW_A", "A", "a1").await;
        let b1 = f.failed_run("FLOW_B", "B", "b1").await;
        let running = f.begin("FLOW_A", "A", Trigger::Schedule).await;

        let all = row_ids(&f.page("/ui/runs").await);
        assert_eq!(
            all,
            vec![running.clone(), b1.clone(), a1.clone()],
            "newest first"
        );
        let html = f.page("/ui/runs?flow=FLOW_A&outcome=&since=").await;
        assert_eq!(row_ids(&html), vec![running.clone(), a1.clone()]);
        assert!(html.contains("<option value=\"FLOW_A\"") || html.contains("value=\"\""));
        let html = f.page("/ui/runs?outcome=failed").await;
        assert_eq!(row_ids(&html), vec![b1.clone(), a1.clone()]);
        assert!(
            html.contains("class=\"run outcome-failed bad\""),
            "failed rows are marked"
        );
        assert!(html.contains("<option value=\"failed\" selected>"));
        let html = f.page("/ui/runs?flow=FLOW_A&outcome=running").await;
        assert_eq!(row_ids(&html), vec![running]);
        assert_eq!(row_ids(&f.page("/ui/runs?since=1h").await).len(), 3);
        let html = f.page("/ui/runs?since=2999-01-01T00:00:00Z").await;
        assert!(row_ids(&html).is_empty());
        assert!(html.contains("data-testid=\"no-runs\""));
        assert_eq!(row_ids(&f.page("/ui/runs?limit=1").await).len(), 1);

        // what a browser sends when the form's fields are left empty
        let html = f.page("/ui/runs?flow=&outcome=&since=&limit=").await;
        assert_eq!(row_ids(&html).len(), 3);
        let (status, html) = answer(f.get("/ui/runs?limit=many")).await;
        assert_eq!(status, Status::BAD_REQUEST);
        assert!(html.contains("&#x27;many&#x27; is not a number of runs"));

        let r = f.get("/ui/runs?outcome=exploded").send().await.unwrap();
        assert_eq!(r.status(), Status::BAD_REQUEST);
        let html = r.text().await.unwrap();
        assert!(html.contains("data-testid=\"filter-error\""));
        assert!(
            html.contains("unknown outcome &#x27;exploded&#x27;"),
            "{html}"
        );
    }

    #[tokio::test]
    async fn hostile_names_and_messages_are_escaped() {
        // a flow id, name and error message that carry markup must show as text
        let f = Fixture::open().await;
        let id = f
            .failed_run(
                "<script>alert('flow')</script>",
                "<img src=x onerror=alert(1)>",
                "</pre><script>alert(\"msg\")</script>",
            )
            .await;
        f.server.app.reload_failed(vec![
            "flows/x.yaml:1:1: <b onmouseover=alert(2)>bad</b>".into(),
        ]);
        for path in [
            "/ui/runs".to_string(),
            format!("/ui/runs/{id}"),
            "/ui".into(),
        ] {
            let html = f.page(&path).await;
            for raw in ["<script>alert", "<img src=x", "<b onmouseover"] {
                assert!(!html.contains(raw), "{path} lets {raw} through:\n{html}");
            }
        }
        let list = f.page("/ui/runs").await;
        assert!(
            list.contains("&lt;script&gt;alert(&#x27;flow&#x27;)&lt;&#x2f;script&gt;"),
            "{list}"
        );
        let detail = f.page(&format!("/ui/runs/{id}")).await;
        assert!(detail.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(detail.contains("&lt;&#x2f;pre&gt;&lt;script&gt;alert(&quot;msg&quot;)"));
        let dash = f.page("/ui").await;
        assert!(dash.contains("data-testid=\"reload-failure\""));
        assert!(dash.contains("&lt;b onmouseover=alert(2)&gt;bad"));
    }

    #[tokio::test]
    async fn pages_allow_only_this_servers_stylesheet_and_script() {
        let f = Fixture::open().await;
        let id = f.failed_run("FLOW_A", "A", "boom").await;
        for path in [
            "/ui".to_string(),
            "/ui/runs".into(),
            format!("/ui/runs/{id}"),
            "/ui/runs/nope".into(),
        ] {
            let r = f.get(&path).send().await.unwrap();
            assert_eq!(
                r.headers()[header::CONTENT_SECURITY_POLICY],
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                "{path}"
            );
            let html = r.text().await.unwrap();
            // one script, this server's, and no inline script or handler
            assert_eq!(html.matches("<script").count(), 1, "{path}");
            assert!(html.contains("<script src=\"/ui/app.js\" defer></script>"));
            assert!(!html.contains(" onclick=") && !html.contains("javascript:"));
        }
        let js = f.get("/ui/app.js").send().await.unwrap();
        assert_eq!(js.status(), Status::OK);
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(js.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let js = js.text().await.unwrap();
        assert!(js.contains("Intl.DateTimeFormat"));
        assert!(
            !js.contains("http://") && !js.contains("https://"),
            "loads nothing"
        );
    }

    #[tokio::test]
    async fn dashboard_shows_flows_runs_and_charts() {
        let f = Fixture::open().await;
        let id = f
            .failed_run(&file_flow(&f.server), "enrollment", "boom")
            .await;
        let html = f.page("/ui").await;
        // the runtime's threads (this test's runtime has one)
        assert!(
            html.contains("<span data-testid=\"workers\">1 worker thread</span>"),
            "{html}"
        );
        // the flow's last run: its outcome, when (a link to it) and how long it took
        let last = part(&html, "<td data-testid=\"last-run\">", "</td>");
        assert!(last.contains(
            "<span class=\"badge outcome-failed\" data-testid=\"outcome\">failed</span>"
        ));
        assert!(last.contains(&format!(
            "<a href=\"/ui/runs/{id}\" data-testid=\"last-run-link\"><time datetime="
        )));
        assert!(
            last.contains("data-time=\"ago\">just now</time></a>"),
            "{last}"
        );
        assert!(last.contains("<span class=\"muted nowrap\">took 0 ms</span>"));
        let project = f.server.app.project();
        // every flow once: those with a trigger in the flows table, the others as children
        let triggered = |p: &crate::compile::FlowPlan| {
            p.trigger.manual || p.trigger.schedule.is_some() || p.trigger.rest.is_some()
        };
        let (top, child): (Vec<_>, Vec<_>) = project.flows.values().partition(|p| triggered(p));
        assert!(
            !top.is_empty() && !child.is_empty(),
            "the shipped flows have both"
        );
        assert_eq!(html.matches("data-testid=\"flow-row\"").count(), top.len());
        assert_eq!(
            html.matches("data-testid=\"child-flow-row\"").count(),
            child.len()
        );
        for p in child {
            let row = format!("<tr data-testid=\"child-flow-row\" data-flow=\"{}\">", p.id);
            assert!(html.contains(&row), "{} is a child flow", p.id);
        }
        assert!(html.contains(&format!("data-flow=\"{}\"", file_flow(&f.server))));
        assert!(html.contains("0 0 * * * *"), "the flow's schedule");
        assert!(html.contains("data-testid=\"run-now\""));
        // the failed run, in both charts, the flow's sparkline and its tallies
        assert!(html.matches("class=\"bar outcome-failed\"").count() >= 3);
        assert!(html.contains("1 failed"));
        assert!(!html.contains("data-testid=\"reload-failure\""));
        assert!(html.contains("<p class=\"muted\" data-testid=\"skipped-ticks\">"));
    }

    #[test]
    fn durations_read_in_human_units() {
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1_234), "1.2 s");
        assert_eq!(duration(9_999), "9.9 s");
        assert_eq!(duration(42_700), "42 s");
        assert_eq!(duration(65_000), "1 min 05 s");
        assert_eq!(duration(185_400), "3 min 05 s");
        assert_eq!(duration(3_725_000), "1 h 02 min");
        assert_eq!(duration(26 * 3_600_000), "26 h 00 min");
    }

    #[test]
    fn times_read_relative_to_now() {
        let t = |s: &str| instant(s).unwrap();
        // a Monday afternoon
        let now = t("2026-12-07T15:00:00Z");
        for (at, says) in [
            ("2026-12-07T14:59:58Z", "just now"),
            ("2026-12-07T14:59:20Z", "40 s ago"),
            ("2026-12-07T14:56:40Z", "3 min ago"),
            ("2026-12-07T12:30:00Z", "2 h ago"),
            ("2026-12-07T00:10:00Z", "14 h ago"),
            ("2026-12-06T14:05:00Z", "yesterday 14:05"),
            ("2026-12-04T09:15:00Z", "Fri 09:15"),
            ("2026-11-27T14:05:00Z", "2026-11-27 14:05"),
            ("2026-12-07T15:00:40Z", "in 40 s"),
            ("2026-12-07T15:12:00Z", "in 12 min"),
            ("2026-12-07T18:00:00Z", "in 3 h"),
            ("2026-12-08T02:00:00Z", "tomorrow 02:00"),
            ("2026-12-10T02:00:00Z", "Thu 02:00"),
        ] {
            assert_eq!(relative(t(at), now), says, "{at}");
        }
        // just after midnight, 40 minutes back is still minutes, not "yesterday"
        let now = t("2026-12-07T00:30:00Z");
        assert_eq!(relative(t("2026-12-06T23:50:00Z"), now), "40 min ago");
        assert_eq!(relative(t("2026-12-06T22:00:00Z"), now), "yesterday 22:00");
    }

    #[tokio::test]
    async fn times_show_relative_with_the_exact_time_as_title() {
        let f = Fixture::open().await;
        let id = f.failed_run("FLOW_A", "A", "boom").await;
        let started = f
            .server
            .app
            .store()
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .started_at;
        let exact = instant(&started)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string();
        // the run started a moment ago: the list says so, with the time as its title
        let list = f.page("/ui/runs").await;
        let time = format!(
            "<time datetime=\"{started}\" title=\"{exact}\" data-time=\"ago\">just now</time>"
        );
        assert!(list.contains(&time), "{list}");
        assert!(list.contains("<th>Started</th>"));
        assert!(list.contains("data-testid=\"time-zone\""));
        assert!(list.contains(">times in UTC</span>"));
        // the run page says it relative, then exactly
        let detail = f.page(&format!("/ui/runs/{id}")).await;
        assert!(detail.contains(&time), "{detail}");
        assert!(detail.contains(&format!(
            "<time datetime=\"{started}\" title=\"{exact}\" data-time=\"at\">{exact}</time>"
        )));
        assert!(detail.contains("<dd data-testid=\"took\">0 ms</dd>"));
    }

    /// A run summary of `flow` as the history lists it, started at `started_at`.
    async fn summary(f: &Fixture, flow: &str, started_at: &str, ms: i64) -> RunSummary {
        let id = f.failed_run(flow, flow, "boom").await;
        let mut r = f
            .server
            .app
            .store()
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .summary;
        r.started_at = started_at.into();
        r.duration_ms = Some(ms);
        r
    }

    #[tokio::test]
    async fn runs_list_says_durations_and_older_times_for_people() {
        // the list's template over runs of a chosen age and length
        let f = Fixture::open().await;
        let runs = vec![
            summary(&f, "FLOW_A", "2026-12-07T12:59:00.250Z", 65_000).await,
            summary(&f, "FLOW_A", "2026-12-06T14:05:09.000Z", 3_725_000).await,
        ];
        let html = render(
            "runs.html",
            context! { nav => "runs", now => "2026-12-07T15:00:00Z", runs, flows => ["FLOW_A"] },
        )
        .unwrap();
        assert!(html.contains(
            "<time datetime=\"2026-12-07T12:59:00.250Z\" title=\"2026-12-07 12:59:00 UTC\" \
             data-time=\"ago\">2 h ago</time>"
        ));
        assert!(html.contains(
            "<time datetime=\"2026-12-06T14:05:09.000Z\" title=\"2026-12-06 14:05:09 UTC\" \
             data-time=\"ago\">yesterday 14:05</time>"
        ));
        assert!(html.contains("<td>1 min 05 s</td>"), "{html}");
        assert!(html.contains("<td>1 h 02 min</td>"));
        // the header stands apart from the table, with the filters in it
        let head = html.find("data-testid=\"runs-header\"").unwrap();
        assert!(head < html.find("data-testid=\"filters\"").unwrap());
        assert!(html.find("</form>\n</div>").unwrap() < html.find("data-testid=\"runs\"").unwrap());
    }

    const PARENT: &str = r#"
id: PARENT
name: Parent
version: "1"
trigger:
  manual: true
steps:
  - id: each
    for_each:
      items: "[1, 2]"
      steps:
        - id: call
          invoke:
            flow: CHILD
            with:
              x: "{{ item }}"
on_error:
  flow: HANDLER
"#;

    const OTHER: &str = r#"
id: OTHER
name: Other
version: "1"
trigger:
  manual: true
steps:
  - id: call
    invoke:
      flow: CHILD
      with:
        x: "1"
"#;

    const CHILD: &str = r#"
id: CHILD
name: Child
version: "2"
params:
  x: { description: a value }
steps:
  - id: t
    transform:
      value: "{{ params.x }}"
"#;

    const HANDLER: &str = r#"
id: HANDLER
name: Handler
version: "3"
steps:
  - id: t
    transform:
      value: "{{ error.message }}"
"#;

    async fn family() -> Fixture {
        Fixture::with_flows(&[
            ("parent.yaml", PARENT),
            ("other.yaml", OTHER),
            ("child.yaml", CHILD),
            ("handler.yaml", HANDLER),
        ])
        .await
    }

    /// The text from `open` to the next `close`.
    fn part<'h>(html: &'h str, open: &str, close: &str) -> &'h str {
        let at = html
            .find(open)
            .unwrap_or_else(|| panic!("no {open} in\n{html}"));
        let rest = &html[at..];
        &rest[..rest.find(close).unwrap()]
    }

    /// The text of the table row that opens with `open`.
    fn row<'h>(html: &'h str, open: &str) -> &'h str {
        part(html, open, "</tr>")
    }

    #[tokio::test]
    async fn child_flows_have_their_own_section_with_their_callers() {
        let f = family().await;
        let html = f.page("/ui").await;
        let flows = html.find("<table data-testid=\"flows\">").unwrap();
        let children = html.find("<table data-testid=\"child-flows\">").unwrap();
        assert!(flows < children, "top-level flows first");
        let top = &html[flows..children];
        let below = &html[children..];
        for id in ["PARENT", "OTHER"] {
            assert!(top.contains(&format!("data-testid=\"flow-row\" data-flow=\"{id}\"")));
            assert!(!below.contains(&format!("data-flow=\"{id}\"")));
        }
        assert_eq!(below.matches("data-testid=\"child-flow-row\"").count(), 2);
        let child = row(
            below,
            "<tr data-testid=\"child-flow-row\" data-flow=\"CHILD\">",
        );
        // called from inside PARENT's loop, and by OTHER
        assert!(child.contains(
            "<td data-testid=\"called-by\"><a class=\"mono\" href=\"/ui/runs?flow=OTHER\">OTHER</a><br>\
             <a class=\"mono\" href=\"/ui/runs?flow=PARENT\">PARENT</a></td>"
        ), "{child}");
        assert!(child.contains("Child · v2"));
        assert!(child.contains("<td class=\"mono small\">x</td>"));
        let handler = row(
            below,
            "<tr data-testid=\"child-flow-row\" data-flow=\"HANDLER\">",
        );
        assert!(handler.contains(
            "<a class=\"mono\" href=\"/ui/runs?flow=PARENT\">PARENT</a> <span class=\"muted\">(on error)</span>"
        ), "{handler}");
        assert!(!top.contains("data-flow=\"CHILD\"") && !top.contains("data-flow=\"HANDLER\""));
    }

    #[tokio::test]
    async fn dashboard_counts_each_flows_failures_of_the_last_24_hours() {
        let f = family().await;
        let mut failed = Vec::new();
        for _ in 0..2 {
            failed.push(f.failed_run("PARENT", "Parent", "boom").await);
        }
        f.begin("PARENT", "Parent", Trigger::Manual).await; // running: not a failure
        f.failed_run("OTHER", "Other", "bang").await;
        let html = f.page("/ui").await;
        let link = |flow: &str, n: usize| {
            format!(
                "<a class=\"fail-count\" href=\"/ui/runs?flow={flow}&amp;outcome=failed&amp;since=24h\" \
                 data-testid=\"failed-24h\" data-flow=\"{flow}\" data-count=\"{n}\">{n} failed</a>"
            )
        };
        // at a glance, most first, and in each flow's row
        let glance = part(
            &html,
            "<section class=\"glance alert\" data-testid=\"failures-24h\">",
            "</section>",
        );
        let (parent, other) = (link("PARENT", 2), link("OTHER", 1));
        assert!(
            glance.find(&parent).unwrap() < glance.find(&other).unwrap(),
            "{glance}"
        );
        let parent_row = row(
            &html,
            "<tr data-testid=\"flow-row\" data-flow=\"PARENT\" class=\"bad\">",
        );
        assert!(
            parent_row.contains(&format!("<td>{parent}</td>")),
            "{parent_row}"
        );
        let other_row = row(
            &html,
            "<tr data-testid=\"flow-row\" data-flow=\"OTHER\" class=\"bad\">",
        );
        assert!(other_row.contains(&format!("<td>{other}</td>")));
        // the link lists exactly those runs
        failed.reverse();
        let list = f
            .page("/ui/runs?flow=PARENT&outcome=failed&since=24h")
            .await;
        assert_eq!(row_ids(&list), failed);

        // with none, the dashboard says so
        let f = family().await;
        let html = f.page("/ui").await;
        assert!(html.contains(
            "<p class=\"ok\" data-testid=\"no-failures\">None: no run failed in the last 24 hours.</p>"
        ));
        let parent_row = row(&html, "<tr data-testid=\"flow-row\" data-flow=\"PARENT\">");
        assert!(parent_row.contains(
            "<td><span class=\"muted\" data-testid=\"failed-24h\" data-flow=\"PARENT\" data-count=\"0\">none</span></td>"
        ));
    }
}
