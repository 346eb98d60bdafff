//! The in-process HTTP server that answers a test's REST requests from its stubs and
//! records every request. Each REST connection of the project under test points at
//! `http://127.0.0.1:PORT/_c/<connection>`, so the server knows which connection a request
//! was sent on and the path the flow wrote.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::model::Stub;

/// A request the stub server received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    /// The connection it was sent on.
    pub connection: String,
    /// Method.
    pub method: String,
    /// Path below the connection's base URL (without the query).
    pub path: String,
    /// The body, when it is JSON.
    pub json: Option<Value>,
    /// The body as text (lossy), for `body_contains`.
    #[serde(skip)]
    pub body: String,
    /// The status answered.
    pub status: u16,
    /// Headers (lowercase names), except authorization.
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
struct Inner {
    stubs: Vec<(Stub, usize)>,
    received: Vec<Received>,
}

/// The most a stubbed request body may hold (bigger bodies are answered 413).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// A running stub server.
#[derive(Debug)]
pub struct StubServer {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl StubServer {
    /// Binds a free port on 127.0.0.1 and serves `stubs` until dropped.
    pub async fn start(stubs: Vec<Stub>) -> std::io::Result<StubServer> {
        let inner = Arc::new(Mutex::new(Inner {
            stubs: stubs.into_iter().map(|s| (s, 0)).collect(),
            received: Vec::new(),
        }));
        let app = Router::new()
            .fallback(answer)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        // no delayed-ACK stall on a response written in two segments
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(StubServer {
            inner,
            base_url,
            stop: Some(tx),
        })
    }

    /// What it received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner
            .lock()
            .map(|i| i.received.clone())
            .unwrap_or_default()
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full = uri.path();
    let rest = full.strip_prefix("/_c/").unwrap_or(full);
    let (connection, path) = match rest.split_once('/') {
        Some((c, p)) => (c.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/".to_string()),
    };
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let json: Option<Value> = if is_json {
        serde_json::from_slice(&body).ok()
    } else {
        None
    };
    let Ok(mut inner) = inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let found = inner.stubs.iter_mut().find(|(s, _)| {
        s.connection.as_ref().is_none_or(|c| *c == connection)
            && s.method.eq_ignore_ascii_case(method.as_str())
            && s.path == path
            && s.json.as_ref().is_none_or(|want| {
                json.as_ref()
                    .is_some_and(|got| super::contains_json(got, want))
            })
    });
    let (status, reply_json, reply_text) = match found {
        Some((stub, used)) => {
            let a = match stub.answers.len() {
                0 => None,
                n => stub.answers.get((*used).min(n - 1)).cloned(),
            };
            *used += 1;
            match a {
                None => (200, Some(Value::Object(Default::default())), None),
                Some(a) => (a.status, a.json, a.text),
            }
        }
        None => (
            404,
            Some(serde_json::json!({
                "error": format!("no stub answers {method} {path} on connection '{connection}'")
            })),
            None,
        ),
    };
    inner.received.push(Received {
        connection,
        method: method.to_string(),
        path,
        json,
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
        headers: headers
            .iter()
            .filter(|(k, _)| *k != axum::http::header::AUTHORIZATION)
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match (reply_json, reply_text) {
        (Some(j), _) => (code, axum::Json(j)).into_response(),
        (None, Some(t)) => (code, t).into_response(),
        (None, None) => code.into_response(),
    }
}
