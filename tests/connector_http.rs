//! Tests for the HTTP connector (`ferry::connectors::http`) against real servers on
//! 127.0.0.1: an in-process axum server that records what it receives, and — for the
//! `ca_file` test — `openssl s_server` with a certificate from a CA generated on the spot.
#![allow(clippy::unwrap_used)]

#[path = "support/process.rs"]
mod process;
#[path = "support/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use ferry::connectors::ConnectorError;
use ferry::connectors::http::{
    BasicAuthSpec, HttpBody, HttpConnector, HttpRequest, HttpSpec, Part,
};
use process::rerun_with_env;
use serde_json::json;
use tls::{make_certificates, openssl_available};

/// One request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// One multipart part as the test server saw it.
#[derive(Debug, Clone)]
struct SeenPart {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

#[derive(Clone, Default)]
struct Log {
    requests: Arc<Mutex<Vec<Seen>>>,
    parts: Arc<Mutex<Vec<SeenPart>>>,
}

impl Log {
    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }
}

async fn record(State(log): State<Log>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let len = body.len();
    log.requests.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    });
    axum::Json(json!({"ok": true, "received": len})).into_response()
}

async fn multipart(State(log): State<Log>, headers: HeaderMap, mut form: Multipart) -> Response {
    log.requests.lock().unwrap().push(Seen {
        method: "POST".into(),
        path: "/multipart".into(),
        query: None,
        headers,
        body: Vec::new(),
    });
    while let Some(field) = form.next_field().await.unwrap() {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(str::to_string);
        let bytes = field.bytes().await.unwrap().to_vec();
        log.parts.lock().unwrap().push(SeenPart {
            name,
            file_name,
            content_type,
            bytes,
        });
    }
    StatusCode::CREATED.into_response()
}

/// Starts the recording server; returns its base URL and what it saw.
async fn start_server() -> (String, Log) {
    let log = Log::default();
    let app = Router::new()
        .route("/multipart", post(multipart))
        .route(
            "/fail",
            any(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"message": "database on fire", "code": 17})),
                )
            }),
        )
        .route(
            "/maintenance",
            any(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "  down for maintenance until 6pm\n",
                )
            }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/big",
            get(|| async { Body::from(vec![b'x'; 3 * 1024 * 1024]) }),
        )
        .route(
            "/locked",
            any(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "bad credentials"})),
                )
            }),
        )
        .fallback(record)
        .layer(DefaultBodyLimit::disable())
        .with_state(log.clone());
    (format!("http://{}", serve(app).await), log)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

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

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Writes `len` bytes of a recognisable, non-repeating-per-chunk pattern.
fn pattern_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| ((i * 31 + i / 7919) % 251) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[tokio::test]
async fn a_serialized_json_body_arrives_as_is_typed_json_unless_the_request_types_it() {
    let (base, log) = start_server().await;
    let conn = HttpConnector::new("rest", &spec(&base)).unwrap();
    let bytes = br#"{"b":1,"a":"Zo\u00eb"}"#.to_vec();
    let mut req = HttpRequest::new("POST", "/items");
    req.body = HttpBody::JsonBytes(bytes.clone());
    assert_eq!(conn.send(req).await.unwrap().status, 200);
    let mut req = HttpRequest::new("POST", "/items");
    req.headers = vec![("content-type".into(), "application/vnd.x+json".into())];
    req.body = HttpBody::JsonBytes(bytes.clone());
    assert_eq!(conn.send(req).await.unwrap().status, 200);
    let seen = log.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, bytes);
    assert_eq!(header(&seen[0], "content-type"), Some("application/json"));
    assert_eq!(header(&seen[0], "content-length"), Some("22"));
    assert_eq!(seen[1].body, bytes);
    assert_eq!(
        seen[1].headers.get_all("content-type").iter().count(),
        1,
        "one content type"
    );
    assert_eq!(
        header(&seen[1], "content-type"),
        Some("application/vnd.x+json")
    );
}

#[tokio::test]
async fn json_body_query_and_headers_arrive_exactly() {
    let (base, log) = start_server().await;
    let mut s = spec(&format!("{base}/api/"));
    s.headers.insert(
        "X-Tenant".into(),
        "${FERRY_TEST_HTTP_UNSET_TENANT:-north}".into(),
    );
    s.headers
        .insert("X-Override".into(), "from-connection".into());
    let conn = HttpConnector::new("rest", &s).unwrap();
    assert_eq!(conn.base_url(), format!("{base}/api"));

    let doc = json!({"id": 42, "name": "Zoë", "tags": ["a", "b"], "nested": {"ok": true}});
    let mut req = HttpRequest::new("post", "/items");
    req.query = vec![
        ("since".into(), "2024-01-01 00:00".into()),
        ("kind".into(), "a&b".into()),
    ];
    req.headers = vec![("X-Override".into(), "from-request".into())];
    req.body = HttpBody::Json(doc.clone());
    let resp = conn.send(req).await.unwrap();

    assert_eq!(resp.status, 200);
    let seen = log.requests();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/items");
    assert_eq!(
        seen.query.as_deref(),
        Some("since=2024-01-01+00%3A00&kind=a%26b")
    );
    assert_eq!(header(seen, "content-type"), Some("application/json"));
    assert_eq!(header(seen, "x-tenant"), Some("north"));
    assert_eq!(header(seen, "x-override"), Some("from-request"));
    assert!(header(seen, "authorization").is_none());
    assert!(header(seen, "user-agent").unwrap().starts_with("ferry/"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap(),
        doc
    );
    // The response is kept as text and parsed JSON.
    assert_eq!(
        resp.json,
        Some(json!({"ok": true, "received": seen.body.len()}))
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&resp.text).unwrap(),
        resp.json.clone().unwrap()
    );
}

const BASIC_PW_VAR: &str = "FERRY_TEST_HTTP_BASIC_PW_5B21";

#[tokio::test]
async fn basic_auth_sends_the_password_from_the_environment() {
    if std::env::var_os(BASIC_PW_VAR).is_none() {
        rerun_with_env(
            "basic_auth_sends_the_password_from_the_environment",
            &[(BASIC_PW_VAR, "pa:ss wörd")],
        )
        .await;
        return;
    }
    let (base, log) = start_server().await;
    let mut s = spec(&base);
    s.basic_auth = Some(BasicAuthSpec {
        username: "${FERRY_TEST_HTTP_UNSET_USER:-alice}".into(),
        password_env: BASIC_PW_VAR.into(),
    });
    let conn = HttpConnector::new("rest", &s).unwrap();
    assert!(!format!("{conn:?}").contains("wörd"));

    let resp = conn.send(HttpRequest::new("GET", "/whoami")).await.unwrap();
    assert_eq!(resp.status, 200);
    let seen = log.requests();
    // base64("alice:pa:ss wörd")
    assert_eq!(
        header(&seen[0], "authorization"),
        Some("Basic YWxpY2U6cGE6c3Mgd8O2cmQ=")
    );
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/whoami");
}

#[tokio::test]
async fn file_body_is_streamed_byte_exact_with_length_and_type() {
    let (base, log) = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = pattern_file(dir.path(), "big.csv", 3 * 1024 * 1024);
    let conn = HttpConnector::new("rest", &spec(&base)).unwrap();

    let mut req = HttpRequest::new("PUT", "/upload/big.csv");
    req.body = HttpBody::File {
        path,
        content_type: "text/csv".into(),
    };
    let resp = conn.send(req).await.unwrap();

    assert_eq!(resp.status, 200);
    assert_eq!(resp.json.as_ref().unwrap()["received"], json!(bytes.len()));
    let seen = log.requests();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(header(&seen[0], "content-type"), Some("text/csv"));
    assert_eq!(header(&seen[0], "content-length"), Some("3145728"));
    assert!(header(&seen[0], "transfer-encoding").is_none());
    assert!(seen[0].body == bytes, "body differs from the file");
}

#[tokio::test]
async fn missing_upload_file_is_not_found() {
    let conn = HttpConnector::new("rest", &spec("http://127.0.0.1:9")).unwrap();
    let mut req = HttpRequest::new("PUT", "/x");
    req.body = HttpBody::File {
        path: "/nonexistent/ferry-test.csv".into(),
        content_type: "text/csv".into(),
    };
    let err = conn.send(req).await.unwrap_err();
    // named by its file name: the message may travel outside, the server path stays in
    assert!(
        matches!(&err, ConnectorError::NotFound(p) if p == "the file 'ferry-test.csv'"),
        "{err}"
    );
    assert!(!err.to_string().contains("/nonexistent"), "{err}");
}

#[tokio::test]
async fn multipart_carries_json_text_and_file_parts() {
    let (base, log) = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = pattern_file(dir.path(), "forecast.csv", 1_500_000);
    let conn = HttpConnector::new("rest", &spec(&base)).unwrap();

    let meta = json!({"program": "peak-saver", "rows": 3});
    let mut req = HttpRequest::new("POST", "/multipart");
    req.body = HttpBody::Multipart(vec![
        Part::Json {
            name: "meta".into(),
            value: meta.clone(),
        },
        Part::Text {
            name: "note".into(),
            value: "hello, world".into(),
        },
        Part::File {
            name: "file".into(),
            path,
            file_name: "forecast 2024-06.csv".into(),
            content_type: "text/csv".into(),
        },
    ]);
    let resp = conn.send(req).await.unwrap();

    assert_eq!(resp.status, 201);
    let seen = log.requests();
    assert!(
        header(&seen[0], "content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    // Every part's length is known, so the whole form is sent with a Content-Length.
    let length: usize = header(&seen[0], "content-length").unwrap().parse().unwrap();
    assert!(length > bytes.len());
    let parts = log.parts.lock().unwrap().clone();
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(parts[0].name, "meta");
    assert_eq!(parts[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&parts[0].bytes).unwrap(),
        meta
    );
    assert_eq!(parts[1].name, "note");
    assert_eq!(parts[1].file_name, None);
    assert_eq!(parts[1].bytes, b"hello, world");
    assert_eq!(parts[2].name, "file");
    assert_eq!(parts[2].file_name.as_deref(), Some("forecast 2024-06.csv"));
    assert_eq!(parts[2].content_type.as_deref(), Some("text/csv"));
    assert!(parts[2].bytes == bytes, "file part differs from the file");
}

#[tokio::test]
async fn error_status_is_an_answer_with_its_message() {
    let (base, _log) = start_server().await;
    let conn = HttpConnector::new("rest", &spec(&base)).unwrap();

    let resp = conn.send(HttpRequest::new("POST", "/fail")).await.unwrap();
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.json,
        Some(json!({"message": "database on fire", "code": 17}))
    );
    assert_eq!(resp.message(), "database on fire");

    let resp = conn
        .send(HttpRequest::new("GET", "/maintenance"))
        .await
        .unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json, None);
    assert_eq!(resp.message(), "down for maintenance until 6pm");
}

#[tokio::test]
async fn response_body_is_capped_at_one_mib() {
    let (base, _log) = start_server().await;
    let conn = HttpConnector::new("rest", &spec(&base)).unwrap();
    let resp = conn.send(HttpRequest::new("GET", "/big")).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text.len(), 1024 * 1024);
    assert!(resp.text.bytes().all(|b| b == b'x'));
    assert_eq!(resp.message().chars().count(), 301); // 300 chars and an ellipsis
}

#[tokio::test]
async fn check_reports_status_and_refused_credentials() {
    let (base, _log) = start_server().await;
    let ok = HttpConnector::new("rest", &spec(&base))
        .unwrap()
        .check()
        .await
        .unwrap();
    assert_eq!(ok, format!("HTTP 200 from {base}/"));

    let err = HttpConnector::new("rest", &spec(&format!("{base}/locked")))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    match err {
        ConnectorError::Auth(msg) => {
            assert!(
                msg.contains("401") && msg.contains(&format!("{base}/locked")),
                "{msg}"
            );
            assert!(msg.contains("bad credentials"), "{msg}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_connection_is_a_connect_error_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let conn = HttpConnector::new("rest", &spec(&format!("http://{addr}"))).unwrap();

    let mut req = HttpRequest::new("GET", "/ping");
    req.query = vec![("token".into(), "do-not-show".into())];
    let err = conn.send(req).await.unwrap_err();
    match &err {
        ConnectorError::Connect(msg) => {
            assert!(msg.contains(&format!("GET http://{addr}/ping")), "{msg}");
            assert!(msg.to_lowercase().contains("refused"), "{msg}");
            assert!(
                !msg.contains("do-not-show"),
                "the query string leaked: {msg}"
            );
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(matches!(
        conn.check().await,
        Err(ConnectorError::Connect(_))
    ));
}

#[tokio::test]
async fn slow_server_times_out() {
    let (base, _log) = start_server().await;
    let mut s = spec(&base);
    s.timeout_secs = Some(1);
    let conn = HttpConnector::new("rest", &s).unwrap();

    let started = Instant::now();
    let err = conn
        .send(HttpRequest::new("GET", "/slow"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    match err {
        ConnectorError::Timeout(msg) => {
            assert!(msg.contains(&format!("GET {base}/slow")), "{msg}");
            assert!(msg.contains("within 1 s"), "{msg}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn missing_password_variable_is_a_config_error_naming_it() {
    let mut s = spec("http://127.0.0.1:9");
    s.basic_auth = Some(BasicAuthSpec {
        username: "alice".into(),
        password_env: "FERRY_TEST_HTTP_MISSING_PW_9D4C".into(),
    });
    match HttpConnector::new("billing", &s).unwrap_err() {
        ConnectorError::Config(msg) => {
            assert!(msg.contains("FERRY_TEST_HTTP_MISSING_PW_9D4C"), "{msg}");
            assert!(msg.contains("billing"), "{msg}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
}

#[test]
fn unreadable_or_invalid_ca_file_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (dir.path().join("missing.pem"), None, "cannot be read"),
        (
            dir.path().join("garbage.pem"),
            Some("this is not a certificate\n"),
            "no PEM certificate",
        ),
        (
            dir.path().join("broken.pem"),
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "cannot be used",
        ),
    ];
    for (path, content, expected) in cases {
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let mut s = spec("https://127.0.0.1:9");
        s.ca_file = Some(path.display().to_string());
        match HttpConnector::new("rest", &s).unwrap_err() {
            ConnectorError::Config(msg) => {
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(msg.contains(expected), "{msg}");
            }
            other => panic!("expected Config for {}, got {other:?}", path.display()),
        }
    }
}

#[tokio::test]
async fn https_server_with_a_private_ca_is_trusted_only_with_ca_file() {
    if !openssl_available() {
        return;
    }
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = make_certificates(dir.path());

    // `openssl s_server -www` answers every HTTPS request with a status page.
    let mut server = tokio::process::Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
        .arg(&leaf)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                return addr.rsplit(':').next().unwrap().to_string();
            }
        }
        panic!("openssl s_server ended without accepting");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("https://127.0.0.1:{port}");

    // Without the CA the certificate is refused: a Connect error about the certificate.
    let err = HttpConnector::new("tls", &spec(&base))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    match &err {
        ConnectorError::Connect(msg) => {
            assert!(msg.to_lowercase().contains("certificate"), "{msg}")
        }
        other => panic!("expected Connect, got {other:?}"),
    }

    let mut s = spec(&base);
    s.ca_file = Some(ca.display().to_string());
    let conn = HttpConnector::new("tls", &s).unwrap();
    assert_eq!(
        conn.check().await.unwrap(),
        format!("HTTP 200 from {base}/")
    );
    let resp = conn.send(HttpRequest::new("GET", "/status")).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.text.contains("s_server"), "{}", resp.text);
    server.kill().await.unwrap();
}

/// Fires `n` sync requests at once through `conn` against the DACS stand-in; all must be
/// accepted.
async fn fire_sync_requests(conn: &Arc<HttpConnector>, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let conn = Arc::clone(conn);
        tasks.spawn(async move {
            let mut req = HttpRequest::new("POST", ferry::standin::SYNC_REQUESTS_PATH);
            req.body = HttpBody::Json(json!({"syncRequestId": format!("SR-{i}")}));
            conn.send(req).await.unwrap().status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_bounds_the_requests_in_flight() {
    let handle = ferry::standin::StandIn::default().spawn().await.unwrap();
    let standin = handle.stand_in().clone();
    standin.set_delay(Duration::from_millis(40));

    let mut bounded = spec(handle.base_url());
    bounded.max_concurrency = Some(3);
    let conn = Arc::new(HttpConnector::new("dacs", &bounded).unwrap());
    fire_sync_requests(&conn, 50).await;
    assert_eq!(standin.sync_requests().len(), 50);
    assert_eq!(standin.max_in_flight(), 3);

    // The stand-in does see more at once when the bound allows it (so the check above can
    // fail), and the default bound is 8.
    standin.reset();
    standin.set_delay(Duration::from_millis(40));
    let conn = Arc::new(HttpConnector::new("dacs", &spec(handle.base_url())).unwrap());
    assert_eq!(conn.max_concurrency(), 8);
    fire_sync_requests(&conn, 50).await;
    assert_eq!(standin.sync_requests().len(), 50);
    let seen = standin.max_in_flight();
    assert!((4..=8).contains(&seen), "{seen} in flight at most");
    eprintln!("figure: 50 requests, max_concurrency 3 -> 3 in flight at most; default -> {seen}");
}

#[test]
fn max_concurrency_must_be_at_least_one() {
    let mut zero = spec("http://127.0.0.1:9");
    zero.max_concurrency = Some(0);
    let err = HttpConnector::new("dacs", &zero).unwrap_err();
    assert!(
        err.to_string()
            .contains("max_concurrency is 0; it must be between 1 and 1024"),
        "{err}"
    );
}
