//! What one request and one connection may cost, and which requests are refused before any
//! handler runs.
//!
//! - [`Limits`]: timeouts, connection count, body and JSON sizes (the defaults are listed in
//!   the README's "Security" section).
//! - [`guard`]: a middleware over every route that refuses a request whose `Host` is not
//!   one of the allowed hosts (DNS rebinding), and a state-changing request (`POST`, `PUT`,
//!   `PATCH`, `DELETE`) that a browser sent from another site (`Sec-Fetch-Site`, else
//!   `Origin`): a logged-in browser sends remembered Basic credentials with those. Clients
//!   that send neither header (curl, scripts, OIC tooling) are not affected.
//!   It also refuses a request with two `Host` headers, anything but a probe on a connection
//!   over the connection limit ([`super::http::ProbeOnly`]), bounds the time from a
//!   request's head to the last byte of its body ([`Limits::request_timeout`], `408`), and
//!   marks every JSON answer `Cache-Control: no-store`.
//! - [`read_json`]: a JSON body read after the credentials were checked, with a size and a
//!   depth cap.

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::api::ApiError;
use super::http::ProbeOnly;

/// Default: seconds a client has to send a request's headers (from the moment the server
/// waits for them).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default: seconds a request body may stay silent between two of its chunks.
pub const DEFAULT_BODY_IDLE_TIMEOUT_SECS: u64 = 30;
/// Default: seconds an idle keep-alive connection (no bytes either way) stays open.
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 5;
/// Default: connections served at once; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default: connections served at once from one client address (an IPv6 address counts
/// by its /64 network).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Connections kept apart for `GET /healthz` and `GET /readyz` once
/// [`Limits::max_connections`] are open: a probe is answered while the other places are
/// taken (anything else on such a connection is a `503`).
pub const PROBE_CONNECTIONS: usize = 8;
/// Default: seconds from a request's head to the last byte of its body.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 300;
/// Default: KiB of one JSON part of a REST trigger, or of a JSON body of the API.
pub const DEFAULT_MAX_JSON_KIB: u64 = 1024;
/// Default: nesting depth of a JSON value (arrays and objects).
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Bytes of the JSON parts of REST deliveries held in memory at once to be checked, across
/// every request; a part that would go over it is a `503` (try again).
pub const JSON_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Bytes a multipart body may hold before its first boundary (a preamble); over it the body
/// is refused, not buffered while the boundary is looked for.
pub const MAX_MULTIPART_PREAMBLE: usize = 16 * 1024;
/// Default: KiB of one flow, lookup or connections file.
pub const DEFAULT_MAX_FILE_KIB: u64 = 4096;
/// Default: KiB of a delivery's body held in memory and kept in the history database
/// ([`crate::history::HELD_DELIVERY_BYTES`], also the most it may be set to).
pub const DEFAULT_HELD_DELIVERY_KIB: u64 = 256;

/// What a request and a connection may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to send a request's headers; also bounds a connection on which nothing is sent.
    pub header_timeout: Duration,
    /// Time a request body may stay silent between chunks.
    pub body_idle_timeout: Duration,
    /// Time an idle keep-alive connection stays open.
    pub keepalive_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one client address.
    pub max_connections_per_address: usize,
    /// Time from a request's head to the last byte of its body.
    pub request_timeout: Duration,
    /// Bytes of one JSON trigger part or API body.
    pub max_json_bytes: usize,
    /// Nesting depth of JSON.
    pub max_json_depth: usize,
    /// Hosts a request may name in `Host` (`name` or `name:port`; `*` allows any). Empty:
    /// the listen address, `localhost`, `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Vec<String>,
    /// The largest delivery body (by its `Content-Length`) held in memory and kept in the
    /// history database with its run's record; a larger one is staged as files. 0: every
    /// delivery is staged as files. At most [`crate::history::HELD_DELIVERY_BYTES`].
    pub held_delivery_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            body_idle_timeout: Duration::from_secs(DEFAULT_BODY_IDLE_TIMEOUT_SECS),
            keepalive_timeout: Duration::from_secs(DEFAULT_KEEPALIVE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            max_json_bytes: kib(DEFAULT_MAX_JSON_KIB),
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            allowed_hosts: Vec::new(),
            held_delivery_bytes: crate::history::HELD_DELIVERY_BYTES,
        }
    }
}

/// The options of `ferry serve` that set [`Limits`] (durations in seconds).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Hosts that requests may name in `Host`, comma-separated (`name` allows every port,
    /// `name:port` one; `*` any). Default: the listen address, localhost, 127.0.0.1, [::1].
    #[arg(
        long,
        env = "FERRY_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOSTS"
    )]
    pub allowed_hosts: Vec<String>,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "FERRY_HEADER_TIMEOUT", value_name = "SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout: u64,
    /// Seconds a request body may stay silent between two chunks.
    #[arg(long, env = "FERRY_BODY_IDLE_TIMEOUT", value_name = "SECS", default_value_t = DEFAULT_BODY_IDLE_TIMEOUT_SECS)]
    pub body_idle_timeout: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "FERRY_KEEPALIVE_TIMEOUT", value_name = "SECS", default_value_t = DEFAULT_KEEPALIVE_TIMEOUT_SECS)]
    pub keepalive_timeout: u64,
    /// Connections served at once (more are closed on accept).
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections served at once from one client address (an IPv6 address counts by its
    /// /64 network); more are closed on accept.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,
    /// Seconds from a request's head to the last byte of its body (`408` after it).
    #[arg(long, env = "FERRY_REQUEST_TIMEOUT", value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS)]
    pub request_timeout: u64,
    /// KiB of one JSON part of a REST trigger, or of a JSON body of the API.
    #[arg(long, env = "FERRY_MAX_JSON_KIB", value_name = "KIB", default_value_t = DEFAULT_MAX_JSON_KIB)]
    pub max_json_kib: u64,
    /// KiB of one flow, lookup or connections file.
    #[arg(long, env = "FERRY_MAX_FILE_KIB", value_name = "KIB", default_value_t = DEFAULT_MAX_FILE_KIB)]
    pub max_file_kib: u64,
    /// KiB of a REST delivery's body, at most, held in memory and kept in the run history's
    /// database with its run (no file created before the `202`); larger bodies are staged
    /// as files. 0: all are staged as files. At most 256.
    #[arg(long, env = "FERRY_HELD_DELIVERY_KIB", value_name = "KIB", default_value_t = DEFAULT_HELD_DELIVERY_KIB)]
    pub held_delivery_kib: u64,
}

impl LimitArgs {
    /// The limits these options set.
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout.max(1)),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout.max(1)),
            max_connections: self.max_connections.max(1),
            max_connections_per_address: self.max_connections_per_address.max(1),
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            max_json_bytes: kib(self.max_json_kib),
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            // `FERRY_ALLOWED_HOSTS=` (empty) or `a,,b`: no empty name, so the default stays
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .filter(|h| !h.trim().is_empty())
                .cloned()
                .collect(),
            held_delivery_bytes: kib(self.held_delivery_kib)
                .min(crate::history::HELD_DELIVERY_BYTES),
        }
    }

    /// The largest flow, lookup or connections file, in bytes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_kib.saturating_mul(1024)
    }
}

/// `n` KiB in bytes.
pub fn kib(n: u64) -> usize {
    usize::try_from(n.saturating_mul(1024)).unwrap_or(usize::MAX)
}

/// The limits as the handlers see them (an extension of every request).
#[derive(Debug)]
pub struct Guard {
    /// The limits.
    pub limits: Limits,
    /// Allowed `Host` values, lower case; `None`: any.
    hosts: Option<Vec<String>>,
    /// Credential failures by client address.
    pub failures: Arc<super::auth::Failures>,
    /// What is left of [`JSON_BUDGET_BYTES`] (one permit a byte).
    pub json_budget: Arc<tokio::sync::Semaphore>,
    /// What is left of [`crate::history::HELD_BUDGET_BYTES`]: the bodies of small
    /// deliveries held in memory until their record commits (one permit a byte).
    pub held_budget: Arc<tokio::sync::Semaphore>,
}

impl Guard {
    /// The guard of a server listening on `listen` (`None`: not known, the defaults
    /// without it).
    pub fn new(limits: Limits, listen: Option<SocketAddr>) -> Guard {
        let mut hosts: Vec<String> = if limits.allowed_hosts.is_empty() {
            let mut h = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
            if let Some(addr) = listen
                && !addr.ip().is_unspecified()
            {
                h.push(match addr {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                });
            }
            h
        } else {
            limits
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect()
        };
        hosts.dedup();
        let any = hosts.iter().any(|h| h == "*");
        Guard {
            limits,
            hosts: (!any).then_some(hosts),
            failures: Arc::default(),
            json_budget: Arc::new(tokio::sync::Semaphore::new(JSON_BUDGET_BYTES)),
            held_budget: Arc::new(tokio::sync::Semaphore::new(
                crate::history::HELD_BUDGET_BYTES,
            )),
        }
    }

    /// Whether `host` (a `Host` header value) is allowed: an entry without a port allows
    /// every port of that name.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let host = host.trim().to_ascii_lowercase();
        let name = strip_port(&host);
        hosts.iter().any(|h| *h == host || *h == name)
    }
}

/// `name` of `name:port` (`[v6]` of `[v6]:port`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Refuses requests for another host and state-changing requests from another site (and
/// the rest of the module documentation); JSON answers are not to be stored by caches.
pub async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let mut response = check(guard, req, next).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if json {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn check(guard: Arc<Guard>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // probes and scrapers reach a pod by its address; these answers hold no secret and
    // change nothing
    let probe = req.method() == Method::GET && matches!(path, "/healthz" | "/readyz" | "/metrics");
    if req.extensions().get::<ProbeOnly>().is_some()
        && !(req.method() == Method::GET && matches!(path, "/healthz" | "/readyz"))
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "the server has as many connections as it serves ({}); only /healthz and /readyz are answered on this one",
                guard.limits.max_connections
            ),
        )
        .retry_after(1)
        .into_response();
    }
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "host_repeated",
            "the request has more than one Host header",
        )
        .into_response();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !probe {
        match host.as_deref() {
            Some(h) if guard.host_allowed(h) => {}
            Some(h) => {
                return ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "host_not_allowed",
                    format!(
                        "this server does not answer for host '{}' (see --allowed-hosts)",
                        h.escape_debug()
                    ),
                )
                .into_response();
            }
            None => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "host_missing",
                    "the request has no Host header",
                )
                .into_response();
            }
        }
    }
    let changes_state = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if changes_state && let Err(why) = same_site(req.headers(), host.as_deref()) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross_site", why).into_response();
    }
    let deadline = Deadline {
        at: tokio::time::Instant::now() + guard.limits.request_timeout,
        after: guard.limits.request_timeout,
    };
    req.extensions_mut().insert(deadline);
    let req = req.map(|body| Body::new(DeadlineBody::new(body, deadline)));
    let mut req = req;
    req.extensions_mut().insert(guard.clone());
    next.run(req).await
}

/// The boundary of a `multipart/form-data` content type, if it names one.
pub fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// A multipart body that fails when its first boundary (`--<boundary>`) is not within its
/// first [`MAX_MULTIPART_PREAMBLE`] bytes: a multipart reader keeps everything before it.
pub struct PreambleLimited {
    inner: Body,
    needle: Vec<u8>,
    /// The bytes seen before the boundary was found (at most the limit and the needle);
    /// `None` once it was.
    seen: Option<Vec<u8>>,
}

impl PreambleLimited {
    /// `inner`, whose boundary is `boundary`.
    pub fn new(inner: Body, boundary: &str) -> PreambleLimited {
        PreambleLimited {
            inner,
            needle: format!("--{boundary}").into_bytes(),
            seen: Some(Vec::new()),
        }
    }
}

/// A multipart body without its boundary where it should be.
#[derive(Debug, thiserror::Error)]
#[error("no multipart boundary within the first {MAX_MULTIPART_PREAMBLE} bytes of the body")]
pub struct NoBoundary;

impl http_body::Body for PreambleLimited {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        let this = &mut *self;
        if let (Some(seen), Some(data)) = (this.seen.as_mut(), frame.data_ref()) {
            let room = MAX_MULTIPART_PREAMBLE + this.needle.len() - seen.len();
            seen.extend_from_slice(&data[..data.len().min(room)]);
            if seen.windows(this.needle.len()).any(|w| w == this.needle) {
                this.seen = None;
            } else if seen.len() >= MAX_MULTIPART_PREAMBLE + this.needle.len() {
                return Poll::Ready(Some(Err(axum::Error::new(NoBoundary))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// When the body of a request must have arrived ([`Limits::request_timeout`] after its
/// head); an extension of every request.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: tokio::time::Instant,
    after: Duration,
}

impl Deadline {
    /// The `408` of a request whose body was still arriving at the deadline, when it has
    /// passed.
    pub fn passed(&self) -> Option<ApiError> {
        (tokio::time::Instant::now() >= self.at).then(|| late(self.after.as_secs()))
    }
}

/// The `408` of a request still sending after `secs` seconds.
fn late(secs: u64) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request took longer than {secs} s to send (see --request-timeout)"),
    )
}

/// The deadline of a request (its extension), if it has passed: a `408`.
pub fn deadline_passed(ext: &axum::http::Extensions) -> Option<ApiError> {
    ext.get::<Deadline>().and_then(Deadline::passed)
}

/// The request body was still arriving at its [`Deadline`].
#[derive(Debug, thiserror::Error)]
#[error("the request body was still arriving after {0} s (see --request-timeout)")]
pub struct DeadlineError(u64);

/// A request body that fails once its [`Deadline`] has passed.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

impl DeadlineBody {
    fn new(inner: Body, deadline: Deadline) -> DeadlineBody {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline.at)),
            after: deadline.after,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            let secs = self.after.as_secs();
            return Poll::Ready(Some(Err(axum::Error::new(DeadlineError(secs)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the request was not sent by a browser on behalf of another site.
fn same_site(headers: &HeaderMap, host: Option<&str>) -> Result<(), String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site.trim().to_ascii_lowercase().as_str() {
            "same-origin" | "none" => Ok(()),
            other => Err(format!(
                "a request another site made the browser send is refused (Sec-Fetch-Site: {})",
                other.escape_debug()
            )),
        };
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let authority = origin
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/').to_ascii_lowercase());
        let host = host.map(str::to_ascii_lowercase);
        if authority.is_none() || authority != host {
            return Err(format!(
                "a request from another origin is refused (Origin: {})",
                origin.escape_debug()
            ));
        }
    }
    Ok(())
}

/// The limits of this request (the defaults when the router was built without a guard).
pub fn of(headers_ext: &axum::http::Extensions) -> Limits {
    headers_ext
        .get::<Arc<Guard>>()
        .map(|g| g.limits.clone())
        .unwrap_or_default()
}

/// Reads a JSON body of at most `limits.max_json_bytes`, nested at most
/// `limits.max_json_depth` deep: 413 over the size, 400 when it is not JSON. An empty body
/// is `None`.
pub async fn read_json(
    body: Body,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<Option<Value>, ApiError> {
    let max = limits.max_json_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the JSON body is over the limit of {} KiB", max / 1024),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        if let Some(secs) = find::<DeadlineError>(&e).map(|d| d.0) {
            late(secs)
        } else if is_length_limit(&e) {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request body could not be read: {e}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json(&bytes, limits.max_json_depth)
        .map(Some)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", m))
}

/// The error of type `T` in `e`'s chain.
fn find<T: std::error::Error + 'static>(e: &axum::Error) -> Option<&T> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<T>() {
            return Some(t);
        }
        source = s.source();
    }
    None
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Checks that `bytes` is JSON nested at most `max_depth` deep, without building it (a
/// value tree can take many times the bytes: an empty object is 3 bytes of text, dozens in
/// memory).
pub fn check_json(bytes: &[u8], max_depth: usize) -> Result<(), String> {
    if let Some(at) = too_deep(bytes, max_depth) {
        return Err(format!(
            "JSON nested deeper than {max_depth} levels (at byte {at})"
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parses `bytes` as JSON nested at most `max_depth` deep.
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<Value, String> {
    if let Some(at) = too_deep(bytes, max_depth) {
        return Err(format!(
            "JSON nested deeper than {max_depth} levels (at byte {at})"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The offset at which `bytes` (JSON) opens its `max + 1`th nested array or object.
fn too_deep(bytes: &[u8], max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hosts_with_and_without_ports() {
        let g = Guard::new(Limits::default(), Some("10.1.2.3:8080".parse().unwrap()));
        assert!(g.host_allowed("localhost:8080"));
        assert!(g.host_allowed("LOCALHOST"));
        assert!(g.host_allowed("127.0.0.1:1"));
        assert!(g.host_allowed("[::1]:8080"));
        assert!(g.host_allowed("10.1.2.3:8080"));
        assert!(!g.host_allowed("evil.example"));
        assert!(!g.host_allowed("evil.example:8080"));
        assert!(!g.host_allowed("localhost.evil.example"));
        let g = Guard::new(
            Limits {
                allowed_hosts: vec!["ferry.example:443".into()],
                ..Limits::default()
            },
            None,
        );
        assert!(g.host_allowed("ferry.example:443"));
        assert!(!g.host_allowed("ferry.example:80"));
        assert!(!g.host_allowed("localhost"));
        let g = Guard::new(
            Limits {
                allowed_hosts: vec!["*".into()],
                ..Limits::default()
            },
            None,
        );
        assert!(g.host_allowed("anything"));
    }

    /// `FERRY_ALLOWED_HOSTS=` in an environment file, as `--allowed-hosts ""`: the default
    /// hosts stay allowed (an empty name would have refused every request with 421).
    #[test]
    fn empty_allowed_hosts_keep_the_default() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            limits: LimitArgs,
        }
        for given in ["", ",", "ferry.example,,"] {
            let args =
                <Args as clap::Parser>::try_parse_from(["t", "--allowed-hosts", given]).unwrap();
            let limits = args.limits.limits();
            assert!(
                limits.allowed_hosts.iter().all(|h| !h.is_empty()),
                "{given:?}"
            );
            let g = Guard::new(limits, Some("127.0.0.1:8080".parse().unwrap()));
            assert_eq!(
                g.host_allowed("127.0.0.1:8080"),
                given.is_empty() || given == ","
            );
            assert_eq!(g.host_allowed("ferry.example"), given.starts_with("ferry"));
        }
    }

    #[test]
    fn cross_site_by_fetch_metadata_then_origin() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let host = Some("127.0.0.1:8080");
        assert!(same_site(&h(&[]), host).is_ok());
        assert!(same_site(&h(&[("sec-fetch-site", "same-origin")]), host).is_ok());
        assert!(same_site(&h(&[("sec-fetch-site", "cross-site")]), host).is_err());
        assert!(same_site(&h(&[("sec-fetch-site", "same-site")]), host).is_err());
        assert!(same_site(&h(&[("origin", "http://127.0.0.1:8080")]), host).is_ok());
        assert!(same_site(&h(&[("origin", "http://evil.example")]), host).is_err());
        assert!(same_site(&h(&[("origin", "null")]), host).is_err());
    }

    #[test]
    fn json_is_checked_without_a_tree() {
        assert_eq!(check_json(b"[{}, {\"a\": [1, 2]}]", 3), Ok(()));
        assert_eq!(
            check_json(b"[[[[1]]]]", 3),
            Err("JSON nested deeper than 3 levels (at byte 3)".into())
        );
        assert!(check_json(b"{\"a\": }", 3).is_err());
    }

    #[test]
    fn json_depth_is_capped_outside_strings() {
        assert!(parse_json(b"[[[1]]]", 3).is_ok());
        let e = parse_json(b"[[[[1]]]]", 3).unwrap_err();
        assert_eq!(e, "JSON nested deeper than 3 levels (at byte 3)");
        assert!(parse_json(br#"{"a": "[[[[[[\"[["}"#, 1).is_ok());
    }
}
