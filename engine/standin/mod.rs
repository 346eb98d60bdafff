//! Stand-ins for two proprietary utility APIs that ferry's shipped flows call:
//! the DACS sync-request update, and the DERMS load reduction forecast upload
//! plus its deviceOutcomeAck callback.
//!
//! They exist for rehearsal (`ferry stand-in`, `ferry demo`) and for tests, which
//! start them in-process. They are **not** a real DACS or DERMS: they model just
//! enough behaviour for flows to be exercised end to end — duplicate sync request
//! ids are rejected with 400 like the real DACS does, failures can be injected on
//! demand, and what they received is recorded for inspection, both through the
//! [`StandIn`] methods and over HTTP under `/_standin/` (the latest
//! [`StandInConfig::keep`] of each kind, [`DEFAULT_KEEP`] unless configured).
//!
//! Endpoints:
//!
//! | Method | Path | Purpose |
//! |--------|------|---------|
//! | POST | `/rest/apis/cross/syncRequests/update` | DACS sync request update |
//! | POST | `/nms-drms/rest/v1/loadReductionForecasts` | DERMS forecast upload (multipart `file` part, or raw body + `X-File-Name`) |
//! | POST | `/device-outcome-ack` | DERMS deviceOutcomeAck |
//! | GET | `/_standin/journal`, `/_standin/sync-requests`, `/_standin/forecasts`, `/_standin/outcome-acks` | inspection |
//! | POST | `/_standin/reset`, `/_standin/fail`, `/_standin/forecast-ack` | configuration |
//! | GET | `/healthz` | liveness, answers `ok` |
//!
//! When [`StandInConfig::basic_auth`] is set, the three API endpoints require HTTP
//! basic authentication; the admin endpoints and `/healthz` never do.

mod auth;
mod handlers;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Path of the DACS sync request update endpoint.
pub const SYNC_REQUESTS_PATH: &str = "/rest/apis/cross/syncRequests/update";
/// Path of the DERMS load reduction forecast upload endpoint.
pub const FORECASTS_PATH: &str = "/nms-drms/rest/v1/loadReductionForecasts";
/// Path of the DERMS deviceOutcomeAck endpoint.
pub const OUTCOME_ACKS_PATH: &str = "/device-outcome-ack";
/// Largest forecast upload accepted, in bytes (256 MiB).
pub const MAX_FORECAST_BYTES: usize = 256 * 1024 * 1024;

/// The `ackType` the forecast upload answers with until configured otherwise.
const DEFAULT_FORECAST_ACK: &str = "SUCCESS";
/// Prefix of every admin endpoint; requests under it are not journaled.
const ADMIN_PREFIX: &str = "/_standin/";
/// How long [`StandInHandle::stop`] waits for in-flight requests before aborting.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many of each kind of thing received the stand-ins keep for inspection until
/// configured otherwise ([`StandInConfig::keep`]).
pub const DEFAULT_KEEP: usize = 100_000;

/// The most bytes of forecast files the stand-ins keep for inspection, whatever
/// [`StandInConfig::keep`] says (the oldest go first).
pub const MAX_KEPT_FORECAST_BYTES: usize = 2 * MAX_FORECAST_BYTES;

/// Configuration of the stand-ins.
#[derive(Clone)]
pub struct StandInConfig {
    /// `(user, password)` required as HTTP basic authentication on the API
    /// endpoints; `None` disables the check.
    pub basic_auth: Option<(String, String)>,
    /// How many of each kind of thing received (sync request bodies, forecast files,
    /// outcome acks, journal entries) are kept for inspection: the latest ones, the
    /// oldest dropped first. The ids of accepted sync requests are all kept (a repeat is
    /// refused, as DACS refuses it), at the cost of one string each.
    pub keep: usize,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            basic_auth: None,
            keep: DEFAULT_KEEP,
        }
    }
}

impl StandInConfig {
    /// A configuration requiring the given basic-auth credentials.
    pub fn with_basic_auth(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            basic_auth: Some((user.into(), password.into())),
            ..Self::default()
        }
    }
}

impl fmt::Debug for StandInConfig {
    // Never print the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self.basic_auth.as_ref().map(|_| "<redacted>");
        f.debug_struct("StandInConfig")
            .field("basic_auth", &auth)
            .field("keep", &self.keep)
            .finish()
    }
}

/// Injected failures for one endpoint: let `after` further calls succeed, then
/// answer `times` calls with `status` (`usize::MAX` = forever), then behave
/// normally again.
///
/// Every call that passes authentication counts, whatever its body. A failed
/// call is not recorded as accepted, so a later resend can succeed. A `status`
/// that is not a valid HTTP status code is answered as 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePlan {
    /// Number of further calls to let through before failing.
    pub after: usize,
    /// HTTP status answered by the failing calls (4xx or 5xx).
    pub status: u16,
    /// Number of calls to fail; `usize::MAX` fails forever.
    pub times: usize,
}

impl FailurePlan {
    /// Fails every call from now on with `status`.
    pub fn always(status: u16) -> Self {
        Self {
            after: 0,
            status,
            times: usize::MAX,
        }
    }

    /// Consumes one call: `Some(status)` if this call must fail.
    fn take(slot: &mut Option<Self>) -> Option<StatusCode> {
        let plan = slot.as_mut()?;
        if plan.after > 0 {
            plan.after -= 1;
            return None;
        }
        if plan.times == 0 {
            *slot = None;
            return None;
        }
        if plan.times != usize::MAX {
            plan.times -= 1;
        }
        let status = StatusCode::from_u16(plan.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if plan.times == 0 {
            *slot = None;
        }
        Some(status)
    }
}

/// A forecast file received by the DERMS upload stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedFile {
    /// The `forecastId` answered for this upload (`LRF-<n>`).
    pub forecast_id: String,
    /// File name from the multipart part, or from the `X-File-Name` header.
    pub file_name: String,
    /// The file's exact bytes.
    pub bytes: Vec<u8>,
    /// Content type of the part (or of the raw body), if one was sent.
    pub content_type: Option<String>,
}

/// One request as seen by the stand-ins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path, without the query string.
    pub path: String,
    /// Status code answered.
    pub status: u16,
}

/// Everything the stand-ins remember; guarded by one mutex.
struct Inner {
    /// Accepted sync request bodies, as received (each a JSON object); the latest
    /// [`StandInConfig::keep`].
    sync_requests: VecDeque<Box<[u8]>>,
    accepted_sync_ids: std::collections::HashSet<String>,
    forecasts: VecDeque<ReceivedFile>,
    /// The bytes of the files in `forecasts`.
    forecast_bytes: usize,
    forecast_counter: u64,
    forecast_ack: String,
    outcome_acks: VecDeque<serde_json::Value>,
    journal: VecDeque<JournalEntry>,
    in_flight: usize,
    max_in_flight: usize,
    delay: Duration,
    sync_failures: Option<FailurePlan>,
    forecast_failures: Option<FailurePlan>,
    outcome_ack_failures: Option<FailurePlan>,
    /// Sync request ids answered with a status instead of being accepted.
    failing_sync_ids: std::collections::HashMap<String, u16>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            sync_requests: VecDeque::new(),
            accepted_sync_ids: std::collections::HashSet::new(),
            forecasts: VecDeque::new(),
            forecast_bytes: 0,
            forecast_counter: 0,
            forecast_ack: DEFAULT_FORECAST_ACK.to_owned(),
            outcome_acks: VecDeque::new(),
            journal: VecDeque::new(),
            in_flight: 0,
            max_in_flight: 0,
            delay: Duration::ZERO,
            sync_failures: None,
            forecast_failures: None,
            outcome_ack_failures: None,
            failing_sync_ids: std::collections::HashMap::new(),
        }
    }
}

/// Which endpoint a [`FailurePlan`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    SyncRequests,
    Forecasts,
    OutcomeAcks,
}

impl Endpoint {
    /// Parses the names used by `POST /_standin/fail`.
    fn parse(name: &str) -> Option<Self> {
        match name {
            "sync-requests" => Some(Self::SyncRequests),
            "forecasts" => Some(Self::Forecasts),
            "outcome-acks" => Some(Self::OutcomeAcks),
            _ => None,
        }
    }
}

/// Appends `item` to `list`, dropping the oldest beyond `keep`.
fn keep_latest<T>(list: &mut VecDeque<T>, item: T, keep: usize) {
    list.push_back(item);
    while list.len() > keep {
        list.pop_front();
    }
}

impl Inner {
    /// Keeps `file` with the latest forecasts: at most `keep` of them, and at most
    /// `max_bytes` of their bytes ([`MAX_KEPT_FORECAST_BYTES`] when serving).
    fn keep_forecast(&mut self, file: ReceivedFile, keep: usize, max_bytes: usize) {
        self.forecast_bytes += file.bytes.len();
        self.forecasts.push_back(file);
        while self.forecasts.len() > keep || self.forecast_bytes > max_bytes {
            match self.forecasts.pop_front() {
                Some(old) => self.forecast_bytes -= old.bytes.len(),
                None => break,
            }
        }
    }

    fn plan_slot(&mut self, endpoint: Endpoint) -> &mut Option<FailurePlan> {
        match endpoint {
            Endpoint::SyncRequests => &mut self.sync_failures,
            Endpoint::Forecasts => &mut self.forecast_failures,
            Endpoint::OutcomeAcks => &mut self.outcome_ack_failures,
        }
    }
}

/// Shared, inspectable state of the stand-ins. Clones share the same state.
#[derive(Clone, Default)]
pub struct StandIn {
    config: Arc<StandInConfig>,
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandIn")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Creates stand-ins with empty state and the given configuration.
    pub fn new(config: StandInConfig) -> Self {
        Self {
            config: Arc::new(config),
            inner: Arc::default(),
        }
    }

    /// Locks the state; a poisoned lock is still usable (the state stays consistent
    /// because every critical section is a handful of pushes and assignments).
    fn state(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the axum router serving every stand-in endpoint.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route(SYNC_REQUESTS_PATH, post(handlers::sync_request_update))
            .route(
                FORECASTS_PATH,
                post(handlers::forecast_upload).layer(DefaultBodyLimit::max(MAX_FORECAST_BYTES)),
            )
            .route(OUTCOME_ACKS_PATH, post(handlers::outcome_ack))
            .route_layer(middleware::from_fn_with_state(
                self.clone(),
                auth::require_basic_auth,
            ));
        let admin = Router::new()
            .route("/_standin/journal", get(handlers::admin_journal))
            .route(
                "/_standin/sync-requests",
                get(handlers::admin_sync_requests),
            )
            .route("/_standin/forecasts", get(handlers::admin_forecasts))
            .route("/_standin/outcome-acks", get(handlers::admin_outcome_acks))
            .route("/_standin/reset", post(handlers::admin_reset))
            .route("/_standin/fail", post(handlers::admin_fail))
            .route("/_standin/forecast-ack", post(handlers::admin_forecast_ack));
        Router::new()
            .merge(api)
            .merge(admin)
            .route("/healthz", get(|| async { "ok" }))
            .fallback(handlers::not_found)
            .layer(middleware::from_fn_with_state(
                self.clone(),
                journal_requests,
            ))
            .with_state(self.clone())
    }

    /// Serves the stand-ins on `listener` until `shutdown` resolves, then finishes
    /// in-flight requests and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // TCP_NODELAY, as production servers have it: without it a response written in two
        // segments waits for the client's delayed ACK (up to 40 ms a request)
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `127.0.0.1:0` and serves the stand-ins in a task on the current tokio
    /// runtime. The returned handle knows the base URL and stops the server when
    /// dropped or on [`StandInHandle::stop`].
    pub async fn spawn(self) -> std::io::Result<StandInHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let stand_in = self.clone();
        let task = tokio::spawn(self.serve(listener, async move {
            // Either an explicit stop or the sender being dropped ends the server.
            let _ = rx.await;
        }));
        Ok(StandInHandle {
            base_url: format!("http://{addr}"),
            addr,
            stand_in,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Makes the sync request update endpoint fail according to `plan`
    /// (replacing any previous plan for it).
    pub fn fail_sync_requests(&self, plan: FailurePlan) {
        self.set_plan(Endpoint::SyncRequests, plan);
    }

    /// Makes the sync request update answer `status` for the sync request ids `ids`,
    /// whenever and however often they come (a failure tied to a record, not to the order
    /// requests arrive in).
    pub fn fail_sync_request_ids<I, S>(&self, ids: I, status: u16)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut state = self.state();
        for id in ids {
            state.failing_sync_ids.insert(id.into(), status);
        }
    }

    /// Stops failing the sync request ids given to [`StandIn::fail_sync_request_ids`].
    pub fn clear_failing_sync_ids(&self) {
        self.state().failing_sync_ids.clear();
    }

    /// The status the sync request id `id` is made to fail with, if any.
    fn failing_sync_id(&self, id: &str) -> Option<u16> {
        self.state().failing_sync_ids.get(id).copied()
    }

    /// Sets the `ackType` the forecast upload answers with (`"SUCCESS"` by default).
    pub fn set_forecast_ack(&self, ack_type: &str) {
        ack_type.clone_into(&mut self.state().forecast_ack);
    }

    /// Makes the forecast upload endpoint fail according to `plan`.
    pub fn fail_forecast_uploads(&self, plan: FailurePlan) {
        self.set_plan(Endpoint::Forecasts, plan);
    }

    /// Makes the deviceOutcomeAck endpoint fail according to `plan`.
    pub fn fail_outcome_acks(&self, plan: FailurePlan) {
        self.set_plan(Endpoint::OutcomeAcks, plan);
    }

    fn set_plan(&self, endpoint: Endpoint, plan: FailurePlan) {
        *self.state().plan_slot(endpoint) = (plan.times > 0).then_some(plan);
    }

    /// Consumes one call against `endpoint`'s failure plan.
    fn injected_failure(&self, endpoint: Endpoint) -> Option<StatusCode> {
        FailurePlan::take(self.state().plan_slot(endpoint))
    }

    /// Makes every API request (not the admin endpoints) wait `delay` before it is handled,
    /// so that concurrent requests overlap (see [`StandIn::max_in_flight`]).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// The most API requests the stand-ins held at once (being handled, delay included).
    pub fn max_in_flight(&self) -> usize {
        self.state().max_in_flight
    }

    /// Accepted (2xx) sync request bodies, in arrival order.
    pub fn sync_requests(&self) -> Vec<serde_json::Value> {
        self.state()
            .sync_requests
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    /// Uploaded forecast files, in arrival order.
    pub fn forecasts(&self) -> Vec<ReceivedFile> {
        self.state().forecasts.iter().cloned().collect()
    }

    /// Accepted deviceOutcomeAck bodies, in arrival order.
    pub fn outcome_acks(&self) -> Vec<serde_json::Value> {
        self.state().outcome_acks.iter().cloned().collect()
    }

    /// Every request answered (method, path, status), in order; requests to the
    /// `/_standin/` admin endpoints are left out so they do not blur what a flow did.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state().journal.iter().cloned().collect()
    }

    /// Forgets everything received, the journal, failure plans and the configured
    /// forecast `ackType`; the [`StandInConfig`] is kept.
    pub fn reset(&self) {
        *self.state() = Inner::default();
    }
}

/// Middleware recording every non-admin request in the journal, with a debug log.
/// Logs method, path and status only: never headers (credentials) or bodies.
async fn journal_requests(State(stand_in): State<StandIn>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let api = !path.starts_with(ADMIN_PREFIX);
    let delay = if api {
        let mut state = stand_in.state();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.delay
    } else {
        Duration::ZERO
    };
    // Counted out again even if the client goes away mid-request (the future is dropped).
    let _held = InFlight(api.then(|| stand_in.clone()));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = next.run(req).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "stand-in request");
    if !path.starts_with(ADMIN_PREFIX) {
        let entry = JournalEntry {
            method,
            path,
            status,
        };
        keep_latest(&mut stand_in.state().journal, entry, stand_in.config.keep);
    }
    response
}

/// One API request being handled; counts itself out when dropped.
struct InFlight(Option<StandIn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(stand_in) = &self.0 {
            let mut state = stand_in.state();
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

/// A running stand-in server started by [`StandIn::spawn`]. Dropping it stops the
/// server (in the background); [`StandInHandle::stop`] stops it and waits.
#[derive(Debug)]
pub struct StandInHandle {
    base_url: String,
    addr: SocketAddr,
    stand_in: StandIn,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl StandInHandle {
    /// Base URL of the server, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The served stand-in state (same state as the [`StandIn`] that was spawned).
    pub fn stand_in(&self) -> &StandIn {
        &self.stand_in
    }

    /// Stops the server and waits for it to finish (at most a few seconds for
    /// in-flight requests; the task is aborted after that).
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(std::io::Error::other(join_error)),
            Err(_elapsed) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for StandInHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(plan: FailurePlan, calls: usize) -> Vec<Option<u16>> {
        let mut slot = Some(plan);
        (0..calls)
            .map(|_| FailurePlan::take(&mut slot).map(|s| s.as_u16()))
            .collect()
    }

    #[test]
    fn forecasts_kept_drop_the_oldest_beyond_the_byte_budget() {
        let mut inner = Inner::default();
        let file = |name: &str, len: usize| ReceivedFile {
            forecast_id: name.to_string(),
            file_name: name.to_string(),
            bytes: vec![0; len],
            content_type: None,
        };
        inner.keep_forecast(file("a", 40), 10, 100);
        inner.keep_forecast(file("b", 40), 10, 100);
        inner.keep_forecast(file("c", 40), 10, 100);
        let names: Vec<&str> = inner
            .forecasts
            .iter()
            .map(|f| f.file_name.as_str())
            .collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(inner.forecast_bytes, 80);
        // one file larger than the budget is not kept at all
        inner.keep_forecast(file("d", 101), 10, 100);
        assert!(inner.forecasts.is_empty());
        assert_eq!(inner.forecast_bytes, 0);
    }

    #[test]
    fn failure_plan_lets_calls_through_then_fails_then_recovers() {
        let plan = FailurePlan {
            after: 2,
            status: 500,
            times: 2,
        };
        assert_eq!(
            outcomes(plan, 6),
            [None, None, Some(500), Some(500), None, None]
        );
    }

    #[test]
    fn failure_plan_forever_and_invalid_status() {
        assert_eq!(outcomes(FailurePlan::always(503), 4), [Some(503); 4]);
        let bogus = FailurePlan {
            after: 0,
            status: 42,
            times: 1,
        };
        assert_eq!(outcomes(bogus, 2), [Some(500), None]);
    }

    #[test]
    fn config_debug_redacts_credentials() {
        let shown = format!("{:?}", StandInConfig::with_basic_auth("user", "hunter2"));
        assert!(
            !shown.contains("hunter2") && !shown.contains("user"),
            "{shown}"
        );
    }

    #[test]
    fn reset_restores_defaults() {
        let stand_in = StandIn::default();
        stand_in.set_forecast_ack("FAILURE");
        stand_in.fail_sync_requests(FailurePlan::always(500));
        stand_in.reset();
        assert_eq!(stand_in.state().forecast_ack, DEFAULT_FORECAST_ACK);
        assert_eq!(stand_in.injected_failure(Endpoint::SyncRequests), None);
    }
}
