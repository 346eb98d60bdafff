//! A stand-in for OCI Object Storage's native API, for tests: the paths ferry uses, over a
//! temporary directory (`root/{bucket}/{object}`, one namespace), with every request's
//! signature verified against a public key like OCI does.
//!
//! Verification is written independently of `ferry::connectors::oci_sign`: the signing
//! string is rebuilt from the request as received (its `headers=` list, the raw request
//! target, the header values), checked with RSA-SHA256 (PKCS#1 v1.5), and JSON bodies are
//! checked against `x-content-sha256` and `Content-Length`. Failures answer 401
//! `{"code":"NotAuthenticated"}`. Listings are paged `page_size` objects at a time with
//! `nextStartWith`, and only carry `size` when `fields` asks for it, as OCI does.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt as _;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt as _;

/// The namespace the server serves.
pub const NAMESPACE: &str = "testns";

/// The tenancy OCID the test key is registered under (`tests/fixtures/oci/`).
pub const TENANCY: &str = "ocid1.tenancy.oc1..aaaatest";
/// The user OCID owning the test key.
pub const USER: &str = "ocid1.user.oc1..aaaatest";
/// The test key's fingerprint:
/// `openssl rsa -in test_key_pkcs1.pem -pubout -outform DER | openssl md5 -c`
pub const FINGERPRINT: &str = "3d:90:00:4c:0b:b7:fa:1b:0d:bb:ed:53:54:3b:e7:66";

/// A file under `tests/fixtures/oci/` (throwaway keys, see its README.txt).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oci")
        .join(name)
}

/// The key id requests signed with the test key carry.
pub fn key_id() -> String {
    format!("{TENANCY}/{USER}/{FINGERPRINT}")
}

/// An `oci` connection definition (as in a connections file) for `endpoint`, signing with
/// the fixture key file `key` (`test_key_pkcs1.pem`, or `wrong_key.pem` to be refused);
/// 5 s timeouts.
pub fn connection_spec(endpoint: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "oci",
        "endpoint": endpoint,
        "tenancy": TENANCY,
        "user": USER,
        "fingerprint": FINGERPRINT,
        "key_file": fixture(key).display().to_string(),
        "timeout_secs": 5,
    })
}

/// Requests answered with an injected error status before they reach the API (the body
/// is read first, so the client sees the answer).
#[derive(Debug, Clone, Copy)]
pub enum Failures {
    /// The next `n` requests answer `status`.
    Next { n: usize, status: u16 },
    /// Every `k`-th request from now on answers `status` (the k-th, 2k-th, …).
    EveryKth { k: usize, status: u16, seen: usize },
}

impl Failures {
    /// Consumes one request: `Some(status)` if it must fail.
    fn take(slot: &mut Option<Failures>) -> Option<u16> {
        match slot {
            None => None,
            Some(Failures::Next { n, status }) => {
                let status = *status;
                *n -= 1;
                if *n == 0 {
                    *slot = None;
                }
                Some(status)
            }
            Some(Failures::EveryKth { k, status, seen }) => {
                *seen += 1;
                (*seen % *k == 0).then_some(*status)
            }
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The method, e.g. `PUT`.
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// The `headers=` list of its signature ("" when it had none).
    pub signed: String,
    /// The answer's status.
    pub status: u16,
}

struct Shared {
    root: PathBuf,
    key_id: String,
    public_key: Vec<u8>,
    page_size: usize,
    hostile: Mutex<Vec<String>>,
    fail_put_after: Mutex<Option<(u64, usize)>>,
    cut_get_after: Mutex<Option<(u64, usize)>>,
    failures: Mutex<Option<Failures>>,
    log: Mutex<Vec<Logged>>,
    counter: AtomicU64,
    /// Work requests of copies: id → polls left before it says `COMPLETED`.
    work: Mutex<std::collections::HashMap<String, usize>>,
}

/// A running server; stops when dropped.
pub struct OciServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OciServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OciServer {
    /// Starts a server accepting requests signed by `key_id` with the key whose SPKI PEM
    /// public key is `public_pem`; listings hold `page_size` objects per page.
    pub async fn start(key_id: &str, public_pem: &str, page_size: usize) -> OciServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        OciServer::start_with(listener, key_id, public_pem, page_size).await
    }

    /// Like [`OciServer::start_with_test_key`], listening on `127.0.0.1:port`.
    pub async fn start_on(port: u16, page_size: usize) -> OciServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let public = std::fs::read_to_string(fixture("test_key_public.pem")).unwrap();
        OciServer::start_with(listener, &key_id(), &public, page_size).await
    }

    async fn start_with(
        listener: tokio::net::TcpListener,
        key_id: &str,
        public_pem: &str,
        page_size: usize,
    ) -> OciServer {
        let root = tempfile::tempdir().unwrap();
        let public_key = SubjectPublicKeyInfoDer::from_pem_slice(public_pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let shared = Arc::new(Shared {
            root: root.path().to_path_buf(),
            key_id: key_id.to_string(),
            public_key,
            page_size,
            hostile: Mutex::new(Vec::new()),
            fail_put_after: Mutex::new(None),
            cut_get_after: Mutex::new(None),
            failures: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            work: Mutex::new(std::collections::HashMap::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OciServer {
            addr,
            shared,
            _root: root,
            task,
        }
    }

    /// Starts a server accepting the fixture test key (`test_key_pkcs1.pem`).
    pub async fn start_with_test_key(page_size: usize) -> OciServer {
        let public = std::fs::read_to_string(fixture("test_key_public.pem")).unwrap();
        OciServer::start(&key_id(), &public, page_size).await
    }

    /// The directory a bucket's objects would be in (not created: a missing bucket stays
    /// missing).
    pub fn bucket_path(&self, bucket: &str) -> PathBuf {
        self.shared.root.join(bucket)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding `bucket`'s objects, created.
    pub fn bucket(&self, bucket: &str) -> PathBuf {
        let dir = self.shared.root.join(bucket);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Adds `name` to every listing, whatever the bucket holds.
    pub fn inject_listing_name(&self, name: &str) {
        self.shared.hostile.lock().unwrap().push(name.to_string());
    }

    /// Makes the next `times` PUTs fail with 500 after `bytes` bytes, committing nothing.
    pub fn fail_puts_after(&self, bytes: u64, times: usize) {
        *self.shared.fail_put_after.lock().unwrap() = (times > 0).then_some((bytes, times));
    }

    /// Makes the next `times` object GETs announce the whole length but break the
    /// connection after `bytes` of the body.
    pub fn cut_gets_after(&self, bytes: u64, times: usize) {
        *self.shared.cut_get_after.lock().unwrap() = (times > 0).then_some((bytes, times));
    }

    /// Answers requests with an injected status per `failures` (replacing any plan).
    pub fn inject(&self, failures: Failures) {
        let none = matches!(
            failures,
            Failures::Next { n: 0, .. } | Failures::EveryKth { k: 0, .. }
        );
        *self.shared.failures.lock().unwrap() = (!none).then_some(failures);
    }

    /// The requests seen so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let signed = authorization_params(request.headers())
        .and_then(|p| p.get("headers").cloned())
        .unwrap_or_default();
    let injected = Failures::take(&mut shared.failures.lock().unwrap());
    let mut response = match injected {
        Some(status) => {
            // Read the body first, so the client sees the answer, not a reset connection.
            let _ = axum::body::to_bytes(request.into_body(), usize::MAX).await;
            oci_error(
                StatusCode::from_u16(status).unwrap(),
                "ServiceUnavailable",
                "injected by the test",
            )
        }
        None => route(&shared, request).await,
    };
    let id = shared.counter.fetch_add(1, Ordering::Relaxed);
    response
        .headers_mut()
        .insert("opc-request-id", format!("test-{id}").parse().unwrap());
    shared.log.lock().unwrap().push(Logged {
        method: method.to_string(),
        target,
        signed,
        status: response.status().as_u16(),
    });
    response
}

async fn route(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // JSON bodies are small: read them whole, to check them against the signature.
    let (json_body, body) = if parts.method == Method::POST {
        match axum::body::to_bytes(body, 1024 * 1024).await {
            Ok(bytes) => (Some(bytes.to_vec()), Body::empty()),
            Err(_) => return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "bad body"),
        }
    } else {
        (None, body)
    };
    if let Err(why) = verify(shared, &parts, json_body.as_deref()) {
        return oci_error(StatusCode::UNAUTHORIZED, "NotAuthenticated", &why);
    }

    let path = parts.uri.path().to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (segments.as_slice(), &parts.method) {
        (["n", ""], &Method::GET) => json_answer(StatusCode::OK, &serde_json::json!(NAMESPACE)),
        (["workRequests", id], &Method::GET) => {
            let mut work = shared.work.lock().unwrap();
            let Some(left) = work.get_mut(*id) else {
                return oci_error(StatusCode::NOT_FOUND, "NotFound", "no such work request");
            };
            // the first poll finds it still running, as a real copy of any size may be
            let status = if *left == 0 {
                "COMPLETED"
            } else {
                *left -= 1;
                "IN_PROGRESS"
            };
            json_answer(
                StatusCode::OK,
                &serde_json::json!({ "id": id, "operationType": "COPY_OBJECT", "status": status }),
            )
        }
        (["n", ns, "b", bucket, rest @ ..], method) => {
            if *ns != NAMESPACE {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "NamespaceNotFound",
                    &format!(
                        "You do not have authorization to perform this request, or the requested resource could not be found. (namespace '{ns}')"
                    ),
                );
            }
            let Some(bucket) = decode(bucket) else {
                return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "bad bucket");
            };
            let dir = shared.root.join(&bucket);
            if bucket.contains('/') || bucket.starts_with('.') || !dir.is_dir() {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "BucketNotFound",
                    &format!(
                        "Either the bucket named '{bucket}' does not exist in the namespace '{NAMESPACE}' or you are not authorized to access it"
                    ),
                );
            }
            match (rest, method) {
                (["o"], &Method::GET) => list(shared, &dir, parts.uri.query().unwrap_or("")),
                (["o", object], method) => {
                    let Some(name) = decode(object).filter(|n| safe_name(n)) else {
                        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "bad name");
                    };
                    let file = dir.join(&name);
                    match *method {
                        Method::GET => {
                            let cut = take_one(&shared.cut_get_after);
                            get_object(&file, cut).await
                        }
                        Method::HEAD => head_object(&file),
                        Method::DELETE => match std::fs::remove_file(&file) {
                            Ok(()) => StatusCode::NO_CONTENT.into_response(),
                            Err(_) => object_not_found(&name),
                        },
                        Method::PUT => put_object(shared, &dir, &file, &parts.headers, body).await,
                        _ => oci_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "no"),
                    }
                }
                (["actions", "renameObject"], &Method::POST) => {
                    rename(&dir, json_body.as_deref().unwrap_or_default())
                }
                (["actions", "copyObject"], &Method::POST) => {
                    copy(shared, &dir, json_body.as_deref().unwrap_or_default())
                }
                _ => oci_error(StatusCode::NOT_FOUND, "NotFound", "no such path"),
            }
        }
        _ => oci_error(StatusCode::NOT_FOUND, "NotFound", "no such path"),
    }
}

/// Checks the request's signature; `Err` says why it is refused.
fn verify(
    shared: &Shared,
    parts: &axum::http::request::Parts,
    json_body: Option<&[u8]>,
) -> Result<(), String> {
    let params = authorization_params(&parts.headers).ok_or("no Signature Authorization header")?;
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    if get("version") != "1" || get("algorithm") != "rsa-sha256" {
        return Err("unsupported signature version or algorithm".into());
    }
    if get("keyId") != shared.key_id {
        return Err(format!("unknown keyId {}", get("keyId")));
    }
    let names: Vec<&str> = get("headers").split_whitespace().collect();
    let mut required = vec!["date", "(request-target)", "host"];
    if parts.method == Method::POST {
        required.extend(["content-length", "content-type", "x-content-sha256"]);
    }
    for name in &required {
        if !names.contains(name) {
            return Err(format!("the signature does not cover {name}"));
        }
    }
    let date = header_str(&parts.headers, "date").ok_or("no date header")?;
    let sent = chrono::DateTime::parse_from_rfc2822(date).map_err(|_| "bad date header")?;
    if (chrono::Utc::now() - sent.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs()
        > 300
    {
        return Err("the date is more than 5 minutes off".into());
    }
    let mut lines = Vec::new();
    for name in &names {
        if *name == "(request-target)" {
            let target = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            lines.push(format!(
                "(request-target): {} {target}",
                parts.method.as_str().to_ascii_lowercase()
            ));
        } else {
            let value = header_str(&parts.headers, name)
                .ok_or_else(|| format!("signed header {name} is missing"))?;
            lines.push(format!("{name}: {value}"));
        }
    }
    let signature = BASE64
        .decode(get("signature"))
        .map_err(|_| "the signature is not base64")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &shared.public_key)
        .verify(lines.join("\n").as_bytes(), &signature)
        .map_err(|_| "The required information to complete authentication was not provided or was incorrect.")?;
    if let Some(body) = json_body {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
        if header_str(&parts.headers, "x-content-sha256") != Some(&BASE64.encode(hash)) {
            return Err("x-content-sha256 does not match the body".into());
        }
        if header_str(&parts.headers, "content-length") != Some(&body.len().to_string()) {
            return Err("content-length does not match the body".into());
        }
    }
    Ok(())
}

/// The `k="v"` pairs of a `Signature ...` Authorization header.
fn authorization_params(headers: &HeaderMap) -> Option<std::collections::HashMap<String, String>> {
    let value = header_str(headers, "authorization")?;
    let rest = value.strip_prefix("Signature ")?;
    let mut out = std::collections::HashMap::new();
    for pair in rest.split(',') {
        let (k, v) = pair.split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        out.insert(k.trim().to_string(), v.to_string());
    }
    Some(out)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn list(shared: &Shared, dir: &Path, query: &str) -> Response {
    let mut params = std::collections::HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(
            k.to_string(),
            decode(&v.replace('+', " ")).unwrap_or_default(),
        );
    }
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    let start = params.get("start").cloned().unwrap_or_default();
    let with_size = params
        .get("fields")
        .is_some_and(|f| f.split(',').any(|f| f == "size"));
    let delimiter = params.get("delimiter").cloned();
    // objects whose names hold `/` live in subdirectories
    let mut names: Vec<(String, u64)> = Vec::new();
    walk_objects(dir, "", &mut names);
    names.retain(|(n, _)| !n.starts_with(".upload-"));
    for name in shared.hostile.lock().unwrap().iter() {
        names.push((name.clone(), 1));
    }
    names.retain(|(n, _)| n.starts_with(&prefix) && n.as_str() >= start.as_str());
    if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
        // Real OCI moves "folders" to `prefixes`; the injected names stay, to test ferry.
        let hostile = shared.hostile.lock().unwrap().clone();
        names.retain(|(n, _)| hostile.contains(n) || !n[prefix.len()..].contains(d.as_str()));
    }
    names.sort();
    let next = names.get(shared.page_size).map(|(n, _)| n.clone());
    let objects: Vec<serde_json::Value> = names
        .iter()
        .take(shared.page_size)
        .map(|(name, size)| {
            if with_size {
                serde_json::json!({"name": name, "size": size})
            } else {
                serde_json::json!({"name": name})
            }
        })
        .collect();
    let mut body = serde_json::json!({"objects": objects, "prefixes": []});
    if let Some(next) = next {
        body["nextStartWith"] = serde_json::json!(next);
    }
    json_answer(StatusCode::OK, &body)
}

/// The object at `file`; with `cut`, the body breaks off after that many bytes.
async fn get_object(file: &Path, cut: Option<u64>) -> Response {
    let Ok(f) = tokio::fs::File::open(file).await else {
        return object_not_found(&file_name(file));
    };
    let len = f.metadata().await.unwrap().len();
    let stream = tokio_util::io::ReaderStream::new(tokio::io::AsyncReadExt::take(
        f,
        cut.unwrap_or(u64::MAX),
    ))
    .chain(futures_util::stream::iter(cut.map(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "cut by the test",
        ))
    })));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, etag(file))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn head_object(file: &Path) -> Response {
    let Ok(meta) = std::fs::metadata(file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, meta.len())
        .header(header::ETAG, etag(file))
        .body(Body::empty())
        .unwrap()
}

async fn put_object(
    shared: &Shared,
    dir: &Path,
    file: &Path,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(expected) = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok())
    else {
        return oci_error(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "no length",
        );
    };
    let fail_after = take_one(&shared.fail_put_after);
    let tmp = dir.join(format!(".upload-{}", uuid::Uuid::now_v7()));
    let mut out = tokio::fs::File::create(&tmp).await.unwrap();
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            let _ = tokio::fs::remove_file(&tmp).await;
            return oci_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                "body broke off",
            );
        };
        received += chunk.len() as u64;
        out.write_all(&chunk).await.unwrap();
        if fail_after.is_some_and(|n| received >= n) {
            drop(out);
            let _ = tokio::fs::remove_file(&tmp).await;
            return oci_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "the upload was interrupted",
            );
        }
    }
    out.flush().await.unwrap();
    drop(out);
    if received != expected {
        let _ = tokio::fs::remove_file(&tmp).await;
        return oci_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "length mismatch",
        );
    }
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::rename(&tmp, file).unwrap();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, etag(file))
        .body(Body::empty())
        .unwrap()
}

fn rename(dir: &Path, body: &[u8]) -> Response {
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "not JSON");
    };
    let field = |k: &str| req.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(from), Some(to)) = (field("sourceName"), field("newName")) else {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "names missing");
    };
    if !safe_name(&from) || !safe_name(&to) {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "bad name");
    }
    let (src, dst) = (dir.join(&from), dir.join(&to));
    if !src.is_file() {
        return object_not_found(&from);
    }
    if let Some(tag) = field("srcObjIfMatchETag")
        && tag != etag(&src)
    {
        return oci_error(
            StatusCode::PRECONDITION_FAILED,
            "IfMatchFailed",
            "source etag",
        );
    }
    if let Some(tag) = field("newObjIfNoneMatchETag")
        && dst.is_file()
        && (tag == "*" || tag == etag(&dst))
    {
        return oci_error(
            StatusCode::PRECONDITION_FAILED,
            "IfNoneMatchFailed",
            "The newObjIfNoneMatchETag condition failed",
        );
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::rename(&src, &dst).unwrap();
    StatusCode::OK.into_response()
}

/// `copyObject` within the namespace: copies at once and answers 202 with a work request,
/// which says `IN_PROGRESS` once, then `COMPLETED`.
fn copy(shared: &Shared, dir: &Path, body: &[u8]) -> Response {
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "not JSON");
    };
    let field = |k: &str| req.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(from), Some(region), Some(ns), Some(bucket), Some(to)) = (
        field("sourceObjectName"),
        field("destinationRegion"),
        field("destinationNamespace"),
        field("destinationBucket"),
        field("destinationObjectName"),
    ) else {
        return oci_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "fields missing",
        );
    };
    if region.is_empty() || ns != NAMESPACE {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "destination");
    }
    let target_dir = shared.root.join(&bucket);
    if !safe_name(&from) || !safe_name(&to) || bucket.contains('/') || !target_dir.is_dir() {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "bad name");
    }
    let (src, dst) = (dir.join(&from), target_dir.join(&to));
    if !src.is_file() {
        return object_not_found(&from);
    }
    if let Some(tag) = field("sourceObjectIfMatchETag")
        && tag != etag(&src)
    {
        return oci_error(
            StatusCode::PRECONDITION_FAILED,
            "IfMatchFailed",
            "source etag",
        );
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let tmp = dst.with_file_name(".copy-in-progress");
    std::fs::copy(&src, &tmp).unwrap();
    std::fs::rename(&tmp, &dst).unwrap();
    let id = format!("wr-{}", shared.counter.fetch_add(1, Ordering::Relaxed));
    shared.work.lock().unwrap().insert(id.clone(), 1);
    let mut response = StatusCode::ACCEPTED.into_response();
    response
        .headers_mut()
        .insert("opc-work-request-id", id.parse().unwrap());
    response
}

/// Consumes one use of a `(value, times)` injection.
fn take_one(slot: &Mutex<Option<(u64, usize)>>) -> Option<u64> {
    let mut slot = slot.lock().unwrap();
    let (value, times) = (*slot)?;
    *slot = (times > 1).then_some((value, times - 1));
    Some(value)
}

/// The files under `dir` as object names (`sub/name` for a file in a subdirectory).
fn walk_objects(dir: &Path, base: &str, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let (Ok(meta), Ok(name)) = (e.metadata(), e.file_name().into_string()) else {
            continue;
        };
        if meta.is_dir() {
            walk_objects(&e.path(), &format!("{base}{name}/"), out);
        } else if meta.is_file() {
            out.push((format!("{base}{name}"), meta.len()));
        }
    }
}

fn etag(file: &Path) -> String {
    let meta = std::fs::metadata(file).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}-{mtime:x}", meta.len())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An object name the server takes: `/` only between segments that are neither empty nor
/// `.` or `..` (as OCI's folders).
fn safe_name(name: &str) -> bool {
    !name.starts_with(".upload-")
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'))
}

/// Percent-decodes a path segment or query value.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn object_not_found(name: &str) -> Response {
    oci_error(
        StatusCode::NOT_FOUND,
        "ObjectNotFound",
        &format!("The object '{name}' was not found in the bucket"),
    )
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_answer(
        status,
        &serde_json::json!({"code": code, "message": message}),
    )
}

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
