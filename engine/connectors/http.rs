//! The HTTP connector: REST requests to one base URL.
//!
//! An [`HttpSpec`] names a base URL plus what every request to it shares (basic
//! authentication, timeout, extra CA certificates, headers); [`HttpConnector::new`] turns it
//! into a connector holding a rustls-based `reqwest` client. [`HttpConnector::send`] sends an
//! [`HttpRequest`] whose body is nothing, JSON, a file streamed from disk, or a multipart form
//! whose file parts are streamed too — files are never read whole into memory.
//!
//! At most `max_concurrency` requests (default [`DEFAULT_MAX_CONCURRENCY`]) are in flight
//! through one connector at a time, from sending to the end of the answer's body; further
//! requests wait for a slot (a semaphore, fair: first come, first served), so that loops
//! running items concurrently do not flood the endpoint. The connector lives as long as its
//! engine (`ferry run`: one run; `ferry serve`: until the flows are reloaded), so the bound
//! holds across every run the engine makes.
//!
//! Every HTTP status is an answer: `send` fails only when no response came (refused
//! connection, TLS failure, timeout, broken body), and the caller judges the status. Errors
//! name the URL without credentials or query string, and never contain the password.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Body, Client, Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::io::ReaderStream;

use super::{ConnectorError, Secret, expand_env};

/// Timeout when the spec gives none, in seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Upper bound on the time spent establishing a connection (TCP + TLS).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of a response body is kept.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Length of [`HttpResponse::message`] when it falls back to the body text.
const MESSAGE_CHARS: usize = 300;
/// Requests in flight through one connection when the spec does not say.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Largest `max_concurrency` accepted.
const MAX_MAX_CONCURRENCY: usize = 1024;

/// A REST endpoint, as written in a connections file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Base URL, e.g. `https://api.example.com:8443`; requests' paths are appended. May use
    /// `${VAR}` / `${VAR:-default}`. Must not contain credentials (use `basic_auth`).
    pub base_url: String,
    /// Basic auth; the password comes from the environment.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthSpec>,
    /// Seconds before a request is abandoned (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// PEM file of extra CA certificates to trust (on-premises certificates), in addition to
    /// the system's. May use `${VAR}`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Headers sent with every request; values may use `${VAR}`. A request's own headers
    /// override these.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests in flight through this connection at once, at most (default 8, up to
    /// 1024); further requests wait for one to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSpec {
    /// User name; may use `${VAR}`.
    pub username: String,
    /// Name of the environment variable holding the password.
    pub password_env: String,
}

/// An opened REST endpoint: a configured client plus the base URL.
pub struct HttpConnector {
    name: String,
    base_url: String,
    client: Client,
    auth: Option<(String, Secret)>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    max_concurrency: usize,
    /// The last path's URL, parsed, and as messages show it: a loop sending every record to
    /// one path parses and formats it once.
    last_url: std::sync::Mutex<Option<(String, Url, Arc<str>)>>,
}

impl fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnector")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("basic_auth_user", &self.auth.as_ref().map(|(user, _)| user))
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// One request to send. `path` is appended to the connector's base URL.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// HTTP method, e.g. `GET`, `POST` (case-insensitive).
    pub method: String,
    /// Path appended to the base URL, e.g. `/rest/v1/items`; may be empty.
    pub path: String,
    /// Query parameters, appended (URL-encoded) in order.
    pub query: Vec<(String, String)>,
    /// Headers for this request only; they override the connection's headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: HttpBody,
}

impl HttpRequest {
    /// A request with no query, no extra headers and no body.
    pub fn new(method: &str, path: &str) -> Self {
        HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: HttpBody::None,
        }
    }
}

/// The body of an [`HttpRequest`].
#[derive(Debug, Clone, Default)]
pub enum HttpBody {
    /// No body.
    #[default]
    None,
    /// A JSON document, sent as `application/json`.
    Json(serde_json::Value),
    /// A JSON document already serialized, sent as `application/json` (a value a template
    /// built, written straight to bytes without a [`serde_json::Value`] in between).
    JsonBytes(Vec<u8>),
    /// A file sent as the raw body, streamed from disk, with its `Content-Length`.
    File {
        /// The local file.
        path: PathBuf,
        /// Its media type, e.g. `text/csv`.
        content_type: String,
    },
    /// A `multipart/form-data` form.
    Multipart(Vec<Part>),
}

/// One part of a multipart form.
#[derive(Debug, Clone)]
pub enum Part {
    /// A JSON document, as a part of type `application/json`.
    Json {
        /// The form field name.
        name: String,
        /// The document.
        value: serde_json::Value,
    },
    /// A plain text field.
    Text {
        /// The form field name.
        name: String,
        /// Its value.
        value: String,
    },
    /// A file, streamed from disk, with its length.
    File {
        /// The form field name.
        name: String,
        /// The local file.
        path: PathBuf,
        /// The file name announced to the server.
        file_name: String,
        /// Its media type, e.g. `text/csv`.
        content_type: String,
    },
}

/// What the server answered.
#[derive(Debug, Clone, Serialize)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Body as text, at most 1 MiB kept.
    pub text: String,
    /// Body parsed as JSON when it is JSON.
    pub json: Option<serde_json::Value>,
}

impl HttpResponse {
    /// A short message for errors: the JSON body's `message`/`detail`/`error`/`title` field if
    /// present, else the text truncated to 300 chars.
    pub fn message(&self) -> String {
        if let Some(serde_json::Value::Object(obj)) = &self.json {
            for key in ["message", "detail", "error", "title"] {
                match obj.get(key) {
                    Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                        return truncate_chars(s.trim(), MESSAGE_CHARS);
                    }
                    Some(serde_json::Value::Object(inner)) => {
                        // e.g. {"error": {"message": "..."}}
                        if let Some(serde_json::Value::String(s)) = inner.get("message") {
                            return truncate_chars(s.trim(), MESSAGE_CHARS);
                        }
                    }
                    _ => {}
                }
            }
        }
        let text = self.text.trim();
        if text.is_empty() {
            format!("HTTP {} with an empty body", self.status)
        } else {
            truncate_chars(text, MESSAGE_CHARS)
        }
    }
}

impl HttpConnector {
    /// Opens the endpoint: expands `${VAR}` in the spec's strings, reads the password from
    /// its environment variable, loads `ca_file`, and builds the client. Does not touch the
    /// network.
    pub fn new(name: &str, spec: &HttpSpec) -> Result<Self, ConnectorError> {
        let ctx = |msg: String| ConnectorError::Config(format!("connection '{name}': {msg}"));
        let in_ctx = |e: ConnectorError| match e {
            ConnectorError::Config(msg) => ctx(msg),
            other => other,
        };

        let base_url = expand_env(&spec.base_url).map_err(in_ctx)?;
        let parsed = Url::parse(&base_url).map_err(|e| {
            ctx(format!(
                "base_url '{}' is not a valid URL: {e}",
                base_url.escape_debug()
            ))
        })?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(ctx(format!(
                "base_url must start with http:// or https://, not {}://",
                parsed.scheme()
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ctx(format!(
                "base_url {} contains credentials; use basic_auth with password_env instead",
                display_url(&parsed)
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ctx(format!(
                "base_url {} must not have a query string or fragment (requests add their own query)",
                display_url(&parsed)
            )));
        }
        let base_url = base_url.trim_end_matches('/').to_string();

        let auth = match &spec.basic_auth {
            Some(a) => {
                let user = expand_env(&a.username).map_err(in_ctx)?;
                let password = Secret::from_env(&a.password_env)
                    .map_err(|e| ctx(format!("basic_auth.password_env: {}", config_text(e))))?;
                Some((user, password))
            }
            None => None,
        };

        let secs = spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if secs == 0 {
            return Err(ctx("timeout_secs must be at least 1".to_string()));
        }
        let timeout = Duration::from_secs(secs);
        let max_concurrency = spec.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if !(1..=MAX_MAX_CONCURRENCY).contains(&max_concurrency) {
            return Err(ctx(format!(
                "max_concurrency is {max_concurrency}; it must be between 1 and {MAX_MAX_CONCURRENCY}"
            )));
        }

        let mut headers = HeaderMap::new();
        for (key, value) in &spec.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                ctx(format!(
                    "headers: '{}' is not a valid header name",
                    key.escape_debug()
                ))
            })?;
            let value = expand_env(value).map_err(in_ctx)?;
            // The value may carry a token from the environment: never echo it.
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ctx(format!(
                    "headers: the value of '{key}' is not a valid header value"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }

        let mut builder = Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT));
        let mut ca_path = None;
        if let Some(ca_file) = &spec.ca_file {
            let path = expand_env(ca_file).map_err(in_ctx)?;
            let certs = load_ca_certificates(Path::new(&path)).map_err(in_ctx)?;
            builder = builder.tls_certs_merge(certs);
            ca_path = Some(path);
        }
        let client = builder.build().map_err(|e| {
            let detail = error_chain(&e);
            match &ca_path {
                // With extra roots, the certificates are what can fail here.
                Some(path) => ctx(format!(
                    "ca_file '{path}' holds a certificate that cannot be used: {detail}"
                )),
                None => ctx(format!("cannot set up the HTTP client: {detail}")),
            }
        })?;

        Ok(HttpConnector {
            name: name.to_string(),
            base_url,
            client,
            auth,
            timeout,
            slots: Arc::new(Semaphore::new(max_concurrency)),
            max_concurrency,
            last_url: std::sync::Mutex::new(None),
        })
    }

    /// Requests allowed in flight at once (`max_concurrency`).
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The base URL, after `${VAR}` expansion and without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request. Any HTTP status is Ok (the caller decides); Err only when no response
    /// came (connect refused, TLS failure, timeout, broken body) — the error says which and
    /// names the URL (without credentials).
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let method = match req.method.trim() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "HEAD" => Method::HEAD,
            other => Method::from_bytes(other.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ConnectorError::Config(format!(
                    "'{}' is not an HTTP method",
                    req.method.escape_debug()
                ))
            })?,
        };
        let (url, url_shown) = self.url_for(&req.path, &req.query)?;
        // formatted only for a message or a log line
        let shown = Shown(&method, &url_shown);

        let mut builder = self.client.request(method.clone(), url);
        for (key, value) in &req.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                ConnectorError::Config(format!(
                    "'{}' is not a valid header name",
                    key.escape_debug()
                ))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                ConnectorError::Config(format!(
                    "the value of header '{key}' is not a valid header value"
                ))
            })?;
            builder = builder.header(header, value);
        }
        if let Some((user, password)) = &self.auth {
            builder = builder.basic_auth(user, Some(password.expose()));
        }
        builder = match req.body {
            HttpBody::None => builder,
            HttpBody::Json(value) => builder.json(&value),
            HttpBody::JsonBytes(bytes) => {
                // as `json` does: a content type the request gives is kept
                let typed = req
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(CONTENT_TYPE.as_str()));
                let builder = if typed {
                    builder
                } else {
                    builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                };
                builder.body(bytes)
            }
            HttpBody::File { path, content_type } => {
                let content_type = HeaderValue::from_str(&content_type).map_err(|_| {
                    ConnectorError::Config(format!(
                        "'{}' is not a valid content type",
                        content_type.escape_debug()
                    ))
                })?;
                let (body, len) = file_body(&path).await?;
                builder
                    .header(CONTENT_TYPE, content_type)
                    .header(CONTENT_LENGTH, len)
                    .body(body)
            }
            HttpBody::Multipart(parts) => builder.multipart(multipart_form(parts).await?),
        };

        // Held until the answer's body is read; the semaphore is never closed.
        let _slot = self.slots.acquire().await.map_err(|_| {
            ConnectorError::Config(format!("connection '{}' is shut down", self.name))
        })?;
        tracing::debug!(connection = %self.name, request = %shown, "sending HTTP request");
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.map_error(&shown, &e))?;
        let status = response.status().as_u16();
        let is_json_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.starts_with("application/json") || ct.contains("+json")
            });

        let mut bytes = Vec::with_capacity(
            response
                .content_length()
                .map_or(0, |n| usize::try_from(n).unwrap_or(MAX_BODY_BYTES))
                .min(MAX_BODY_BYTES),
        );
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.map_error(&shown, &e))?
        {
            let room = MAX_BODY_BYTES - bytes.len();
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        if truncated {
            tracing::warn!(connection = %self.name, request = %shown, "response body longer than 1 MiB; the rest was dropped");
        }

        let json = if truncated {
            None
        } else {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if is_json_type || matches!(first, Some(b'{' | b'[')) {
                serde_json::from_slice(&bytes).ok()
            } else {
                None
            }
        };
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        tracing::debug!(connection = %self.name, request = %shown, status, "HTTP response");
        Ok(HttpResponse { status, text, json })
    }

    /// Reaches the base URL (any HTTP answer counts as reachable; 401/403 →
    /// [`ConnectorError::Auth`]); returns a short description ("HTTP 200 from https://..").
    pub async fn check(&self) -> Result<String, ConnectorError> {
        let response = self.send(HttpRequest::new("GET", "")).await?;
        let shown = match Url::parse(&self.base_url) {
            Ok(url) => display_url(&url),
            Err(_) => self.base_url.clone(),
        };
        match response.status {
            401 | 403 => Err(ConnectorError::Auth(format!(
                "HTTP {} from {shown}: {}",
                response.status,
                response.message()
            ))),
            status => Ok(format!("HTTP {status} from {shown}")),
        }
    }

    /// The base URL with `path` appended and `query` added.
    /// Returns it with its text as messages show it (without credentials or query).
    fn url_for(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<(Url, Arc<str>), ConnectorError> {
        let (mut url, shown) = self.path_url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok((url, shown))
    }

    /// The base URL with `path` appended (the last one parsed is reused).
    fn path_url(&self, path: &str) -> Result<(Url, Arc<str>), ConnectorError> {
        let mut last = self.last_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, url, shown)) = last.as_ref()
            && p == path
        {
            return Ok((url.clone(), shown.clone()));
        }
        let joined = if path.is_empty() {
            self.base_url.clone()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}/{path}", self.base_url)
        };
        let url = Url::parse(&joined).map_err(|e| {
            ConnectorError::Config(format!(
                "path '{}' does not make a valid URL: {e}",
                path.escape_debug()
            ))
        })?;
        let shown: Arc<str> = display_url(&url).into();
        *last = Some((path.to_string(), url.clone(), shown.clone()));
        Ok((url, shown))
    }

    /// Maps a failed exchange to the error saying what happened.
    fn map_error(&self, shown: &Shown<'_>, e: &reqwest::Error) -> ConnectorError {
        let detail = error_chain(e);
        if e.is_timeout() {
            ConnectorError::Timeout(format!(
                "{shown}: no answer within {} s ({detail})",
                self.timeout.as_secs()
            ))
        } else if e.is_connect() {
            ConnectorError::Connect(format!("{shown}: cannot connect: {detail}"))
        } else if e.is_body() || e.is_decode() {
            ConnectorError::Connect(format!("{shown}: the body broke off: {detail}"))
        } else {
            ConnectorError::Connect(format!("{shown}: {detail}"))
        }
    }
}

/// Reads a PEM file of CA certificates; a clear [`ConnectorError::Config`] naming the file if
/// it cannot be read or holds no certificate.
pub(crate) fn load_ca_certificates(
    path: &Path,
) -> Result<Vec<reqwest::Certificate>, ConnectorError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| ConnectorError::Config(format!("ca_file '{shown}' cannot be read: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        ConnectorError::Config(format!(
            "ca_file '{shown}' is not a valid PEM file: {}",
            error_chain(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(ConnectorError::Config(format!(
            "ca_file '{shown}' holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks)"
        )));
    }
    Ok(certs)
}

/// A streamed body for the file at `path`, with its length.
async fn file_body(path: &Path) -> Result<(Body, u64), ConnectorError> {
    // named by its file name: the error may be sent outside, the server's path says nothing
    let name = format!(
        "the file '{}'",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| super::source_error("open", path, e).naming(path, &name))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| super::source_error("stat", path, e).naming(path, &name))?
        .len();
    Ok((Body::wrap_stream(ReaderStream::new(file)), len))
}

/// Builds a multipart form; file parts are streamed.
async fn multipart_form(parts: Vec<Part>) -> Result<reqwest::multipart::Form, ConnectorError> {
    use reqwest::multipart;
    let bad_type = |t: &str| {
        ConnectorError::Config(format!(
            "'{}' is not a valid content type",
            t.escape_debug()
        ))
    };
    let mut form = multipart::Form::new();
    for part in parts {
        form = match part {
            Part::Text { name, value } => form.text(name, value),
            Part::Json { name, value } => {
                let text = serde_json::to_string(&value).map_err(|e| {
                    ConnectorError::Config(format!("part '{name}' cannot be written as JSON: {e}"))
                })?;
                let p = multipart::Part::text(text)
                    .mime_str("application/json")
                    .map_err(|_| bad_type("application/json"))?;
                form.part(name, p)
            }
            Part::File {
                name,
                path,
                file_name,
                content_type,
            } => {
                let (body, len) = file_body(&path).await?;
                let p = multipart::Part::stream_with_length(body, len)
                    .file_name(file_name)
                    .mime_str(&content_type)
                    .map_err(|_| bad_type(&content_type))?;
                form.part(name, p)
            }
        };
    }
    Ok(form)
}

/// A request as messages show it: the method and [`display_url`] of its URL.
struct Shown<'a>(&'a Method, &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// The URL as shown in messages: no credentials, no query string (it may carry tokens).
fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The message of a `Config` error, or the error's display for other kinds.
fn config_text(e: ConnectorError) -> String {
    match e {
        ConnectorError::Config(msg) => msg,
        other => other.to_string(),
    }
}

/// An error and its causes, `: `-separated, without repeats and without reqwest's URL (the
/// callers name the URL themselves, without its query). Shared by every reqwest-based
/// connector.
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let text = err.to_string();
        // hyper-util's "client error (Connect)" only repeats what its cause says.
        let wrapper = text.starts_with("client error (") && err.source().is_some();
        if !wrapper && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        // No cause: describe the error itself, minus the URL it may carry.
        parts.push(
            if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection error"
            } else if e.is_body() {
                "body error"
            } else if e.is_builder() {
                "invalid configuration"
            } else {
                "request failed"
            }
            .to_string(),
        );
    }
    parts.join(": ")
}

/// The first `max` characters of `s`, with `…` when cut.
fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(base_url: &str) -> HttpSpec {
        HttpSpec {
            base_url: base_url.to_string(),
            basic_auth: None,
            timeout_secs: None,
            ca_file: None,
            headers: BTreeMap::new(),
            max_concurrency: None,
        }
    }

    #[test]
    fn paths_are_appended_to_the_base_url() {
        let c = HttpConnector::new("t", &spec("http://127.0.0.1:9/api/")).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:9/api");
        let q = vec![("a b".to_string(), "c&d".to_string())];
        assert_eq!(
            c.url_for("/v1/x", &q).unwrap().0.as_str(),
            "http://127.0.0.1:9/api/v1/x?a+b=c%26d"
        );
        assert_eq!(
            c.url_for("v1", &[]).unwrap().0.as_str(),
            "http://127.0.0.1:9/api/v1"
        );
        assert_eq!(
            c.url_for("", &[]).unwrap().0.as_str(),
            "http://127.0.0.1:9/api"
        );
    }

    #[test]
    fn base_url_env_is_expanded_and_credentials_refused() {
        let c = HttpConnector::new(
            "t",
            &spec("http://${FERRY_TEST_HTTP_UNSET_HOST:-127.0.0.1}:9"),
        )
        .unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:9");
        let err = HttpConnector::new("t", &spec("http://bob:hunter2@127.0.0.1:9")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConnectorError::Config(_)));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("basic_auth"), "{text}");
        assert!(matches!(
            HttpConnector::new("t", &spec("http://x/?a=1")),
            Err(ConnectorError::Config(_))
        ));
        assert!(matches!(
            HttpConnector::new("t", &spec("ftp://x")),
            Err(ConnectorError::Config(_))
        ));
    }

    #[test]
    fn message_prefers_json_fields() {
        let r = |text: &str| HttpResponse {
            status: 400,
            text: text.to_string(),
            json: serde_json::from_str(text).ok(),
        };
        assert_eq!(r(r#"{"detail":"bad id","title":"x"}"#).message(), "bad id");
        assert_eq!(r(r#"{"error":{"message":"nested"}}"#).message(), "nested");
        assert_eq!(r("  plain text ").message(), "plain text");
        assert_eq!(r("").message(), "HTTP 400 with an empty body");
        let long = "é".repeat(400);
        assert_eq!(r(&long).message().chars().count(), MESSAGE_CHARS + 1);
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let err =
            serde_json::from_str::<HttpSpec>(r#"{"base_url":"http://x","timeout":3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let c = HttpConnector {
            auth: Some(("bob".to_string(), Secret::new("hunter2".to_string()))),
            ..HttpConnector::new("t", &spec("http://127.0.0.1:9")).unwrap()
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("bob") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
