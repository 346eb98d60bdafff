//! HTTP Basic authentication of the server's API and of REST triggers.
//!
//! API users come from the environment: `FERRY_OPERATOR_USER` with `FERRY_OPERATOR_PASSWORD`
//! (or `FERRY_OPERATOR_PASSWORD_FILE`) may read and act (run now, resubmit);
//! `FERRY_VIEWER_USER` with `FERRY_VIEWER_PASSWORD` (or `…_FILE`) may only read. A REST
//! trigger takes the credentials its flow names (`trigger.rest.basic_auth`), or the
//! operator's. Passwords are compared in constant time and never logged.
//!
//! Wrong credentials cost the one who sends them ([`Failures`], [`throttle`]): each failure
//! is counted (`ferry_auth_failures_total{route}`), each address that failed is logged once
//! a minute with its count, and an address with [`MAX_FAILURES`] failures within
//! [`FAILURE_WINDOW`] gets `429` with `Retry-After` until that minute is over; other
//! addresses are not affected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::connectors::Secret;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read runs, flows and metrics.
    Viewer,
    /// Also run now and resubmit.
    Operator,
}

/// One API user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name.
    pub name: String,
    password: Secret,
    /// Role.
    pub role: Role,
}

impl User {
    /// A user.
    pub fn new(name: impl Into<String>, password: Secret, role: Role) -> User {
        User {
            name: name.into(),
            password,
            role,
        }
    }
}

/// Why the API users could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A user without a password, or the reverse.
    #[error("{0}")]
    Incomplete(String),
    /// A password file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The API users.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<User>,
}

impl Users {
    /// These users.
    pub fn new(users: Vec<User>) -> Users {
        Users { users }
    }

    /// Reads the users from the environment (see the module documentation).
    pub fn from_env() -> Result<Users, AuthConfigError> {
        let mut users = Vec::new();
        for (prefix, role) in [
            ("FERRY_OPERATOR", Role::Operator),
            ("FERRY_VIEWER", Role::Viewer),
        ] {
            let name = std::env::var(format!("{prefix}_USER")).ok();
            let password = match std::env::var(format!("{prefix}_PASSWORD")) {
                Ok(p) => Some(p),
                Err(_) => match std::env::var(format!("{prefix}_PASSWORD_FILE")) {
                    Ok(path) => Some(
                        std::fs::read_to_string(&path)
                            .map_err(|source| AuthConfigError::File {
                                path: path.clone(),
                                source,
                            })?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                    ),
                    Err(_) => None,
                },
            };
            match (name, password) {
                (Some(name), Some(password)) if !name.is_empty() && !password.is_empty() => {
                    users.push(User::new(name, Secret::new(password), role));
                }
                (None, None) => {}
                _ => {
                    return Err(AuthConfigError::Incomplete(format!(
                        "{prefix}_USER and {prefix}_PASSWORD (or {prefix}_PASSWORD_FILE) go together, both non-empty"
                    )));
                }
            }
        }
        Ok(Users { users })
    }

    /// Whether no user is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The role of the caller whose `Authorization` header is in `headers`: `Ok(None)`
    /// when no user is configured, `Err` when the credentials are missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Role>, Denied> {
        if self.users.is_empty() {
            return Ok(None);
        }
        let (name, password) = basic_credentials(headers).ok_or(Denied::Missing)?;
        // every user is compared, name and password, so the time says nothing of which
        // part was wrong
        let mut role = None;
        for u in &self.users {
            if same(&u.name, &name) & same(u.password.expose(), &password) {
                role = Some(u.role);
            }
        }
        role.map(Some).ok_or(Denied::Wrong)
    }

    /// Who the caller is, for the record (a pause's `paused_by`): the Basic user name,
    /// or `anonymous` when no user is configured (call after [`Users::check`]).
    pub fn caller(&self, headers: &HeaderMap) -> String {
        if self.users.is_empty() {
            return "anonymous".into();
        }
        basic_credentials(headers).map_or_else(|| "anonymous".into(), |(name, _)| name)
    }

    /// The operator, if any (a REST trigger's default credentials).
    pub fn operator(&self) -> Option<&User> {
        self.users.iter().find(|u| u.role == Role::Operator)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No Basic credentials.
    Missing,
    /// Wrong user name or password.
    Wrong,
    /// Right credentials, role too low.
    Forbidden,
}

/// Checks a request against one user name and password.
pub fn check_one(headers: &HeaderMap, name: &str, password: &str) -> Result<(), Denied> {
    let (n, p) = basic_credentials(headers).ok_or(Denied::Missing)?;
    if same(name, &n) & same(password, &p) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

/// Whether `a` and `b` are equal, in a time that depends on neither (their SHA-256 digests
/// are compared in constant time, so not even the length shows).
fn same(a: &str, b: &str) -> bool {
    let digest = |s: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let (a, b) = (digest(a), digest(b));
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

/// Credential failures from one address within [`FAILURE_WINDOW`] after which its requests
/// get `429` until the window is over.
pub const MAX_FAILURES: u32 = 20;
/// The window in which [`MAX_FAILURES`] are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failures are followed at once (about 4 MiB of memory at most).
pub const MAX_TRACKED: usize = 65_536;

/// Credential failures by client address (an IPv6 address by its /64 network; see the
/// module documentation).
#[derive(Debug, Default)]
pub struct Failures {
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u32,
    /// Failures not yet logged.
    unlogged: u32,
}

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds `ip` must wait before it may try credentials again, if it is throttled.
    pub fn throttled(&self, ip: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let map = self.lock();
        let w = map.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(now.duration_since(w.start))?;
        (w.count >= MAX_FAILURES && !left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Counts a failure of `ip`; whether this one throttles it. At most [`MAX_TRACKED`]
    /// addresses are followed at once (a new one beyond them is counted in the metric only).
    pub fn failed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, w| w.unlogged > 0 || now.duration_since(w.start) < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        let w = map.entry(ip).or_insert(Window {
            start: now,
            count: 0,
            unlogged: 0,
        });
        if now.duration_since(w.start) >= FAILURE_WINDOW {
            w.start = now;
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        w.unlogged = w.unlogged.saturating_add(1);
        w.count == MAX_FAILURES
    }

    /// The addresses that failed since the last report, with their counts (then forgets
    /// addresses whose window is over and that have nothing to report).
    pub fn report(&self) -> Vec<(IpAddr, u32)> {
        let now = Instant::now();
        let mut map = self.lock();
        let mut out: Vec<(IpAddr, u32)> = map
            .iter_mut()
            .filter(|(_, w)| w.unlogged > 0)
            .map(|(ip, w)| (*ip, std::mem::take(&mut w.unlogged)))
            .collect();
        map.retain(|_, w| w.unlogged > 0 || now.duration_since(w.start) < FAILURE_WINDOW);
        out.sort();
        out
    }
}

/// Logs the addresses whose credentials failed, one line per address per minute with the
/// count, until `stopping` fires.
pub async fn report_failures(
    failures: Arc<Failures>,
    stopping: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(FAILURE_WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => break,
            _ = tick.tick() => {}
        }
        for (ip, count) in failures.report() {
            tracing::warn!(address = %ip, failures = count, "wrong credentials from one address in the last minute");
        }
    }
}

/// The label of `path` in `ferry_auth_failures_total{route}`: `api`, `ui` or `trigger`.
pub fn route_label(path: &str) -> &'static str {
    if path.starts_with("/api/")
        || path.starts_with("/ic/api/integration/v1/integrations/")
        || path.starts_with("/ic/api/integration/v1/monitoring/")
    {
        "api"
    } else if path == "/" || path == "/ui" || path.starts_with("/ui/") {
        "ui"
    } else {
        "trigger"
    }
}

/// Counts the `401`s of requests that carried credentials, and answers `429` to an address
/// that failed too often (probes and `/metrics` excepted). Without the client's address
/// (a router served without [`super::http::serve`]) it only counts.
pub async fn throttle(
    State(server): State<Arc<super::Server>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if req.method() == Method::GET && matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    let route = route_label(path);
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| super::http::address_key(c.0.ip()));
    let failures = req
        .extensions()
        .get::<Arc<super::limits::Guard>>()
        .map(|g| g.failures.clone());
    if let (Some(ip), Some(failures)) = (ip, &failures)
        && let Some(secs) = failures.throttled(ip)
    {
        return super::api::ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!(
                "too many wrong credentials from this address ({MAX_FAILURES} within {} s); try again in {secs} s",
                FAILURE_WINDOW.as_secs()
            ),
        )
        .retry_after(secs)
        .into_response();
    }
    let tried = req
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION);
    let response = next.run(req).await;
    if tried && response.status() == StatusCode::UNAUTHORIZED {
        server.app.metrics().auth_failure(route);
        if let (Some(ip), Some(failures)) = (ip, failures)
            && failures.failed(ip)
        {
            tracing::warn!(address = %ip, route, max = MAX_FAILURES,
                "wrong credentials: the address is refused (429) for the rest of the minute");
        }
    }
    response
}

/// The user name and password of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn users() -> Users {
        Users::new(vec![
            User::new("op", Secret::new("s3cret".into()), Role::Operator),
            User::new("view", Secret::new("look".into()), Role::Viewer),
        ])
    }

    #[test]
    fn roles_by_credentials() {
        // op:s3cret, view:look, op:wrong
        assert_eq!(
            users().check(&header("Basic b3A6czNjcmV0")),
            Ok(Some(Role::Operator))
        );
        assert_eq!(
            users().check(&header("basic dmlldzpsb29r")),
            Ok(Some(Role::Viewer))
        );
        assert_eq!(
            users().check(&header("Basic b3A6d3Jvbmc=")),
            Err(Denied::Wrong)
        );
        assert_eq!(users().check(&HeaderMap::new()), Err(Denied::Missing));
        assert_eq!(
            users().check(&header("Bearer b3A6czNjcmV0")),
            Err(Denied::Missing)
        );
        assert_eq!(Users::default().check(&HeaderMap::new()), Ok(None));
        // right password, wrong name; a prefix of the password
        assert_eq!(
            users().check(&header("Basic dmlldzpzM2NyZXQ=")),
            Err(Denied::Wrong)
        );
        assert_eq!(
            check_one(&header("Basic b3A6czNj"), "op", "s3cret"),
            Err(Denied::Wrong)
        );
        assert_eq!(
            check_one(&header("Basic b3A6czNjcmV0"), "op", "s3cret"),
            Ok(())
        );
    }

    /// The 20th failure within the minute throttles the address; another is not affected;
    /// each address is reported once with its count.
    #[test]
    fn failures_throttle_one_address() {
        let f = Failures::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 1..MAX_FAILURES {
            assert!(!f.failed(a), "{i}");
            assert_eq!(f.throttled(a), None);
        }
        assert!(f.failed(a));
        let secs = f.throttled(a).unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
        assert!(!f.failed(b));
        assert_eq!(f.throttled(b), None);
        assert_eq!(f.report(), vec![(a, MAX_FAILURES), (b, 1)]);
        assert_eq!(f.report(), vec![]);
        assert_eq!(route_label("/api/v1/runs"), "api");
        assert_eq!(route_label("/ui/runs"), "ui");
        assert_eq!(
            route_label("/ic/api/integration/v1/flows/rest/X/1.0/y"),
            "trigger"
        );
    }
}
