//! `ferry serve` tried as an attacker would, on the real binary: bodies too large or too
//! deep (peak RSS read from `/proc/<pid>/status`), bodies sent without credentials, silent
//! and half-sent requests, idle keep-alive connections, too many connections, cross-site
//! requests and foreign `Host` names, unset trigger credentials, symbolic-link loops and
//! oversized flow files; hot reload of lookups and connections however serve was started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Workspace, demo_input};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TRIGGER_PATH: &str =
    "/ic/api/integration/v1/flows/rest/OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR/1.0/eventOutcome";
const OUTCOME_FILE: &str = "event_outcome.4011.20221213.csv";
const FTP_ENROLL: &str = "OUTL-BA-DACS_OUAI_FTP_ENROLL";
const OP: (&str, &str) = ("op", "op-secret");
const DERMS: (&str, &str) = ("derms", "derms-secret");
const MIB: usize = 1024 * 1024;

/// A `ferry serve` child process; killed on drop.
struct Bin {
    child: tokio::process::Child,
    addr: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Bin {
    /// Starts `ferry serve` over `ws` with `args` added, the operator and DERMS's trigger
    /// credentials in its environment (then `env`), and waits until it listens.
    async fn start(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Bin {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = ws.path().join(format!("serve-{n}.log"));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--no-schedules"])
            .arg("--data")
            .arg(ws.path().join("state"))
            .args(args)
            .env("FERRY_OPERATOR_USER", OP.0)
            .env("FERRY_OPERATOR_PASSWORD", OP.1)
            .env("FERRY_DERMS_TRIGGER_USER", DERMS.0)
            .env("FERRY_DERMS_TRIGGER_PASSWORD", DERMS.1)
            .env("FERRY_DATA", ws.path().join("data"))
            .env("FERRY_LOG", "ferry=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().to_string();
                return Bin {
                    child,
                    addr,
                    log,
                    http: reqwest::Client::new(),
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ferry serve exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "ferry serve did not listen:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts it over `ws`'s flows, lookups and connections, named explicitly.
    async fn over(ws: &Workspace, args: &[&str]) -> Bin {
        let mut all = explicit_sources(ws);
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Bin::start(ws, &all, &[]).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path)).basic_auth(OP.0, Some(OP.1)))
            .await
    }

    /// Sends raw bytes on a fresh connection and reads the answer until the server closes
    /// it (at most `within`): the status line's code, or `None` when it closed without one.
    async fn raw(&self, bytes: &[u8], within: Duration) -> (Option<u16>, String) {
        let mut s = TcpStream::connect(&self.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let text = read_until_closed(&mut s, within)
            .await
            .expect("the server closes");
        (status_of(&text), text)
    }
}

/// Sends `head` and then `body` on a fresh connection while reading the answer at the same
/// time (a server that answers before it has read the body, and closes, must not make the
/// answer get lost); the status of the answer.
async fn raw_streamed(addr: &str, head: String, body: Vec<u8>) -> (Option<u16>, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        if w.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if w.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        // the head and a JSON error body are all that is wanted
        if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}") {
            break;
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&buf).into_owned();
    (status_of(&text), text)
}

/// A multipart/form-data body of a JSON `message` part and a `file` part, and its boundary.
fn multipart(message: &[u8], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "ferry-security-boundary".to_string();
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(message);
    out.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{OUTCOME_FILE}\"\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(file);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, out)
}

fn explicit_sources(ws: &Workspace) -> Vec<String> {
    vec![
        "--flows".into(),
        ws.flows_dir().display().to_string(),
        "--lookups".into(),
        ws.lookups_dir().display().to_string(),
        "--connections".into(),
        ws.connections_path().display().to_string(),
    ]
}

/// Reads until the peer closes (`Some(text)`), or `None` when it is still open after
/// `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&buf).into_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

fn basic(who: (&str, &str)) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1));
    format!("Basic {token}")
}

fn delivery(message: Vec<u8>, file: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "message",
            reqwest::multipart::Part::bytes(message)
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name(OUTCOME_FILE),
        )
}

/// A JSON array of small numbers of about `bytes` bytes.
fn number_array(bytes: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes + 8);
    v.push(b'[');
    while v.len() < bytes {
        v.extend_from_slice(b"1,");
    }
    v.extend_from_slice(b"1]");
    v
}

async fn runs(bin: &Bin) -> usize {
    let (status, body) = bin.get("/api/v1/runs?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_deep_and_unauthenticated_bodies_are_refused_and_rss_stays_flat() {
    let ws = Workspace::new().await;
    let bin = Bin::over(&ws, &["--no-watch"]).await;
    // warm up: one good delivery, so the idle figure includes a served request
    let sample = std::fs::read(demo_input("event_outcome_message.json")).unwrap();
    let file = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(TRIGGER_PATH))
                .basic_auth(DERMS.0, Some(DERMS.1))
                .multipart(delivery(sample.clone(), file.clone())),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bin.status_kib("VmHWM");

    // a JSON part of 10 MiB and one of 60 MiB (both under the trigger's 64 MiB body limit)
    for mib in [10, 60] {
        let (boundary, body) = multipart(&number_array(mib * MIB), &file);
        let head = format!(
            "POST {TRIGGER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            basic(DERMS),
            body.len()
        );
        let (status, text) = raw_streamed(&bin.addr, head, body).await;
        assert_eq!(status, Some(413), "{mib} MiB: {text}");
        assert!(
            text.contains("part 'message' is over the limit of 1024 KiB for a JSON part"),
            "{text}"
        );
    }
    // a JSON part nested 100,000 deep (200 KB)
    let mut deep = vec![b'['; 100_000];
    deep.extend(vec![b']'; 100_000]);
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(TRIGGER_PATH))
                .basic_auth(DERMS.0, Some(DERMS.1))
                .multipart(delivery(deep, file.clone())),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        json!("part 'message' is not JSON: JSON nested deeper than 64 levels (at byte 64)")
    );
    // the same array as the body of OIC's JSON endpoints, with credentials: 413
    for path in [
        format!("/ic/api/integration/v1/integrations/{FTP_ENROLL}/schedule/jobs"),
        "/ic/api/integration/v1/monitoring/errors/resubmit".to_string(),
    ] {
        // announced, and chunked (no length: the cap is met while reading)
        let body = number_array(10 * MIB);
        let mut chunked = Vec::new();
        for c in body.chunks(64 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            chunked.extend_from_slice(c);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        for (framing, bytes) in [
            (format!("Content-Length: {}", body.len()), body.clone()),
            ("Transfer-Encoding: chunked".to_string(), chunked),
        ] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
                basic(OP)
            );
            let (status, text) = raw_streamed(&bin.addr, head, bytes).await;
            assert_eq!(status, Some(413), "{path} {framing}: {text}");
            assert!(
                text.contains("the JSON body is over the limit of 1024 KiB"),
                "{text}"
            );
        }
    }
    // 300 MiB announced without credentials: refused before the body is read (the answer
    // comes while almost all of it is unsent)
    for path in [
        TRIGGER_PATH.to_string(),
        format!("/ic/api/integration/v1/integrations/{FTP_ENROLL}/schedule/jobs"),
        "/ic/api/integration/v1/monitoring/errors/resubmit".to_string(),
        "/api/v1/runs/x/resubmit".to_string(),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            300 * MIB
        );
        let (status, text) = bin.raw(head.as_bytes(), Duration::from_secs(30)).await;
        assert_eq!(status, Some(401), "{path}: {text}");
    }
    // the same with a chunked body streamed for real: 401 too, and the stream is cut
    let stream =
        futures_util::stream::iter((0..300).map(|_| Ok::<_, std::io::Error>(vec![b'1'; MIB])));
    let r = bin
        .http
        .post(bin.url("/ic/api/integration/v1/monitoring/errors/resubmit"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 401);
    }
    // a body over the API's limit with credentials, announced: 413 at once
    let (status, _) = bin
        .raw(
            format!(
                "POST /ic/api/integration/v1/monitoring/errors/resubmit HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
                basic(OP),
                300 * MIB
            )
            .as_bytes(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(status, Some(413));

    let peak = bin.status_kib("VmHWM");
    eprintln!("serve VmHWM: idle {idle} KiB, after the hostile requests {peak} KiB");
    assert!(
        peak < idle + 100 * 1024,
        "peak RSS grew by {} MiB (idle {idle} KiB, peak {peak} KiB)",
        (peak - idle) / 1024
    );
    // none of them started a run; the server still answers
    assert_eq!(runs(&bin).await, 1);
    assert_eq!(bin.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_idle_and_excess_connections_are_closed() {
    let ws = Workspace::new().await;
    let bin = Bin::over(
        &ws,
        &[
            "--no-watch",
            "--header-timeout",
            "2",
            "--body-idle-timeout",
            "2",
            "--keepalive-timeout",
            "2",
            "--max-connections",
            "8",
        ],
    )
    .await;
    let bound = Duration::from_secs(20); // generous: the timeouts are 2 s

    // a connection that sends nothing
    let mut silent = TcpStream::connect(&bin.addr).await.unwrap();
    assert!(read_until_closed(&mut silent, bound).await.is_some());
    // half a request head
    let (status, text) = bin
        .raw(
            b"GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
            bound,
        )
        .await;
    assert!(matches!(status, None | Some(408)), "{text}");
    // a body that stops after 10 of its 1,000 bytes (with credentials, so it is read)
    let (status, text) = bin
        .raw(
            format!(
                "POST /ic/api/integration/v1/monitoring/errors/resubmit HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"ids\": [\"",
                basic(OP)
            )
            .as_bytes(),
            bound,
        )
        .await;
    assert!(matches!(status, None | Some(400 | 408)), "{text}");
    // an idle keep-alive connection after a full answer
    let (status, text) = bin
        .raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", bound)
        .await;
    assert_eq!(status, Some(200), "{text}");

    // eight silent connections take every place: a ninth is served for probes only (one
    // answer, then closed), anything else on it is a 503; once the 8 places kept for
    // probes are taken too, a connection is closed at once, unanswered
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&bin.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = bin
        .raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", bound)
        .await;
    assert_eq!(status, Some(200), "{text}");
    let (status, text) = bin
        .raw(
            b"GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            bound,
        )
        .await;
    assert_eq!(status, Some(503), "{text}");
    for _ in 0..8 {
        held.push(TcpStream::connect(&bin.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut last = TcpStream::connect(&bin.addr).await.unwrap();
    let _ = last
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let text = read_until_closed(&mut last, bound).await.expect("closed");
    assert_eq!(text, "", "a connection over the probes' places was served");
    // the held ones are closed by the header timeout; then the server answers again
    for mut h in held {
        assert!(read_until_closed(&mut h, bound).await.is_some());
    }
    assert_eq!(bin.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_and_foreign_hosts_are_refused_everywhere() {
    let ws = Workspace::new().await;
    let bin = Bin::over(&ws, &["--no-watch"]).await;
    // a failed run to resubmit (the source directory is missing)
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(&format!("/api/v1/flows/{FTP_ENROLL}/runs")))
                .basic_auth(OP.0, Some(OP.1)),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = body["run_id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let (_, run) = bin.get(&format!("/api/v1/runs/{failed}")).await;
        if run["outcome"] != json!("running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posts = [
        format!("/api/v1/flows/{FTP_ENROLL}/runs"),
        format!("/api/v1/runs/{failed}/resubmit"),
        format!("/ic/api/integration/v1/monitoring/errors/{failed}/resubmit"),
        format!("/ic/api/integration/v1/integrations/{FTP_ENROLL}/schedule/jobs"),
        "/ic/api/integration/v1/monitoring/errors/resubmit".to_string(),
        format!("/ui/flows/{FTP_ENROLL}/run"),
        format!("/ui/runs/{failed}/resubmit"),
        TRIGGER_PATH.to_string(),
    ];
    let before = runs(&bin).await;
    for path in &posts {
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let (status, body) = bin
                .send(
                    bin.http
                        .post(bin.url(path))
                        .basic_auth(OP.0, Some(OP.1))
                        .header(name, value)
                        .json(&json!({"action": "NOW", "ids": [failed]})),
                )
                .await;
            assert_eq!(status, 403, "{path} {name}: {value}: {body}");
            assert_eq!(body["error"]["code"], json!("cross_site"), "{path}");
        }
        // a foreign Host (DNS rebinding)
        let (status, body) = bin
            .send(
                bin.http
                    .post(bin.url(path))
                    .basic_auth(OP.0, Some(OP.1))
                    .header("host", "evil.example"),
            )
            .await;
        assert_eq!(status, 421, "{path}: {body}");
        assert_eq!(body["error"]["code"], json!("host_not_allowed"));
    }
    let (status, _) = bin
        .send(
            bin.http
                .get(bin.url("/api/v1/runs"))
                .basic_auth(OP.0, Some(OP.1))
                .header("host", "evil.example:80"),
        )
        .await;
    assert_eq!(status, 421);
    assert_eq!(runs(&bin).await, before, "no refused request started a run");
    // probes and scrapers are answered whatever the Host; curl-like clients and the page's
    // own origin work
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = bin
            .send(bin.http.get(bin.url(path)).header("host", "10.0.0.7:8080"))
            .await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(&format!("/api/v1/runs/{failed}/resubmit")))
                .basic_auth(OP.0, Some(OP.1)),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // the page's own origin passes the guard (the flow may still be busy with the resubmit)
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(&format!(
                    "/ic/api/integration/v1/monitoring/errors/{failed}/resubmit"
                )))
                .basic_auth(OP.0, Some(OP.1))
                .header("origin", format!("http://{}", bin.addr))
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
    assert!(
        status == 202 || (status == 409 && body["error"]["code"] == json!("flow_running")),
        "{body}"
    );
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(&format!("/api/v1/flows/{FTP_ENROLL}/runs")))
                .basic_auth(OP.0, Some(OP.1))
                .header(
                    "host",
                    format!("localhost:{}", bin.addr.rsplit(':').next().unwrap()),
                ),
        )
        .await;
    assert!(
        status == 202 || (status == 409 && body["error"]["code"] == json!("flow_running")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_on_loopback_checks_host_against_dns_rebinding() {
    let ws = Workspace::new().await;
    let mut args = explicit_sources(&ws);
    args.push("--no-watch".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // no API users: the API is open on loopback
    let bin = Bin::start(
        &ws,
        &args,
        &[("FERRY_OPERATOR_USER", ""), ("FERRY_OPERATOR_PASSWORD", "")],
    )
    .await;
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(&format!("/api/v1/flows/{FTP_ENROLL}/runs")))
                .header("host", "rebound.evil.example"),
        )
        .await;
    assert_eq!(status, 421, "{body}");
    let (status, body) = bin
        .send(
            bin.http
                .post(bin.url(&format!("/api/v1/flows/{FTP_ENROLL}/runs"))),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn serve_refuses_to_start_with_unset_or_empty_trigger_credentials() {
    let ws = Workspace::new().await;
    for (user, password) in [
        (None, None),
        (Some(""), Some("")),
        (Some("derms"), Some("")),
    ] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("serve")
            .args(explicit_sources(&ws))
            .args(["--listen", "127.0.0.1:0", "--no-schedules", "--no-watch"])
            .arg("--data")
            .arg(ws.path().join("state"))
            .env("FERRY_OPERATOR_USER", OP.0)
            .env("FERRY_OPERATOR_PASSWORD", OP.1)
            .env_remove("FERRY_DERMS_TRIGGER_USER")
            .env_remove("FERRY_DERMS_TRIGGER_PASSWORD")
            .stdin(Stdio::null());
        if let Some(u) = user {
            cmd.env("FERRY_DERMS_TRIGGER_USER", u);
        }
        if let Some(p) = password {
            cmd.env("FERRY_DERMS_TRIGGER_PASSWORD", p);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("serve exits")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{user:?}/{password:?}: {stderr}");
        assert!(
            stderr.contains("flow 'OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR'")
                && stderr.contains("FERRY_DERMS_TRIGGER_PASSWORD")
                && stderr.contains("not set or empty"),
            "{stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_loops_and_oversized_files_end_with_diagnostics() {
    let ws = Workspace::new().await;
    let flows = ws.flows_dir();
    std::os::unix::fs::symlink(".", flows.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", flows.join("common/up")).unwrap();
    let validate = |paths: Vec<PathBuf>| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .arg("validate")
                .args(&paths)
                .env("FERRY_DATA", "/tmp")
                .output(),
        )
        .await
        .expect("validate ends")
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = validate(vec![flows.clone()]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("loop is a symbolic link to a directory; ferry does not follow those"),
        "{text}"
    );
    assert!(text.contains("ok: 10 flows"), "{text}");

    // a 5 MiB flow file: one diagnostic naming the limit, nothing parsed
    let big = flows.join("big.yaml");
    let mut text = String::from("id: BIG\nname: Big\nversion: \"1\"\nsteps:\n");
    while text.len() < 5 * MIB {
        text.push_str("  - id: s\n    end: { outcome: succeeded }\n");
    }
    std::fs::write(&big, text).unwrap();
    let (code, text) = validate(vec![flows.clone()]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "is 5121 KiB, over the limit of 4096 KiB for a flow, lookup or connections file"
        ),
        "{text}"
    );
    std::fs::remove_file(&big).unwrap();

    // serve with the loops in place: it starts, and a broken reload logs one line
    let bin = Bin::over(&ws, &[]).await;
    std::fs::write(
        flows.join("broken.yaml"),
        "id: BROKEN\nname: Broken\nversion: \"1\"\nsteps:\n  - id: x\n    lisst: {}\n",
    )
    .unwrap();
    let mut failure = Value::Null;
    for _ in 0..200 {
        failure = bin.get("/api/v1/status").await.1["reload_failure"].clone();
        if !failure.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!failure.is_null(), "the broken file was not reloaded");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bin.get("/healthz").await.0, 200);
    let refused = bin.log_text().matches("reload refused").count();
    assert_eq!(refused, 1, "{}", bin.log_text());
}

/// Waits until `/api/v1/status` shows `generation`, or with `None` a reload failure;
/// returns the status.
async fn reloaded(bin: &Bin, generation: Option<u64>) -> Value {
    let mut st = Value::Null;
    for _ in 0..200 {
        st = bin.get("/api/v1/status").await.1;
        let done = match generation {
            Some(g) => st["generation"] == json!(g),
            None => !st["reload_failure"].is_null(),
        };
        if done {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    st
}

/// Edits `path` with `edit`, then waits for the reload; asserts the generation.
async fn edit_and_expect(bin: &Bin, path: &Path, edit: impl Fn(String) -> String, generation: u64) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, edit(text)).unwrap();
    let st = reloaded(bin, Some(generation)).await;
    assert_eq!(
        st["generation"],
        json!(generation),
        "{}: {st:#}",
        path.display()
    );
    assert!(st["reload_failure"].is_null(), "{st:#}");
}

/// A lookup edit and a connections edit reload, and a broken lookup or connections file is
/// refused naming it, whether serve was given the lookups and connections or found them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_connections_reload_however_serve_was_started() {
    for explicit in [false, true] {
        let ws = Workspace::new().await;
        // `--flows` alone finds `lookups/` beside it and `connections.yaml` in it
        let conns = if explicit {
            ws.connections_path()
        } else {
            let c = ws.flows_dir().join("connections.yaml");
            std::fs::copy(ws.connections_path(), &c).unwrap();
            c
        };
        let lookup = ws
            .lookups_dir()
            .join("OUTL-BRT-OUAI_DACS_DRMS_ConfigProps.yaml");
        let bin = if explicit {
            Bin::over(&ws, &[]).await
        } else {
            let flows = ws.flows_dir().display().to_string();
            Bin::start(&ws, &["--flows", &flows], &[]).await
        };
        assert_eq!(bin.get("/api/v1/status").await.1["generation"], json!(1));
        edit_and_expect(
            &bin,
            &lookup,
            |t| {
                t.replace(
                    "[dacs.prefixtag.fileuploaded, Sent-]",
                    "[dacs.prefixtag.fileuploaded, Done-]",
                )
            },
            2,
        )
        .await;
        edit_and_expect(
            &bin,
            &conns,
            |t| t + "  spare: { kind: local, root: /tmp }\n",
            3,
        )
        .await;
        // broken: refused, naming the file; the loaded generation stays
        let good = std::fs::read_to_string(&lookup).unwrap();
        std::fs::write(&lookup, format!("{good}  - [oops\n")).unwrap();
        let st = reloaded(&bin, None).await;
        let first = st["reload_failure"]["diagnostics"][0]
            .as_str()
            .unwrap_or("");
        assert!(
            first.contains("ConfigProps.yaml"),
            "explicit {explicit}: {st:#}"
        );
        assert_eq!(st["generation"], json!(3));
        std::fs::write(&lookup, good).unwrap();
        assert_eq!(reloaded(&bin, Some(4)).await["generation"], json!(4));
        let good = std::fs::read_to_string(&conns).unwrap();
        std::fs::write(&conns, format!("{good}  bad: {{ kind: nope }}\n")).unwrap();
        let st = reloaded(&bin, None).await;
        let first = st["reload_failure"]["diagnostics"][0]
            .as_str()
            .unwrap_or("");
        assert!(
            first.contains("connections.yaml"),
            "explicit {explicit}: {st:#}"
        );
        assert_eq!(st["generation"], json!(4));
        drop(bin);
    }
}

/// A connection to `bin` from `source` (a loopback address other than 127.0.0.1 stands for
/// another client).
async fn connect_from(bin: &Bin, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(bin.addr.parse().unwrap()).await.unwrap()
}

/// A client whose connections come from `source`.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(source.parse().unwrap()))
        .build()
        .unwrap()
}

/// One address holding more connections than its share (issue 20, point 3): its extra
/// ones are closed at once, another address still delivers and /healthz always answers;
/// with every place taken, probes are still answered and anything else gets a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_connections_starves_neither_others_nor_probes() {
    let ws = Workspace::new().await;
    let bin = Bin::over(
        &ws,
        &[
            "--no-watch",
            "--header-timeout",
            "60",
            "--max-connections",
            "6",
            "--max-connections-per-address",
            "4",
        ],
    )
    .await;
    let bound = Duration::from_secs(20);
    // 127.0.0.1 holds its 4 places; 6 more are closed unanswered
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(&bin, "127.0.0.1").await);
    }
    for _ in 0..6 {
        let mut extra = connect_from(&bin, "127.0.0.1").await;
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await;
        let text = read_until_closed(&mut extra, bound).await.expect("closed");
        assert_eq!(text, "", "a connection over the address's share was served");
    }
    // another address: every delivery and every probe answered
    let other = client_from("127.0.0.2");
    let sample = std::fs::read(demo_input("event_outcome_message.json")).unwrap();
    let file = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();
    for _ in 0..3 {
        let r = other
            .post(bin.url(TRIGGER_PATH))
            .basic_auth(DERMS.0, Some(DERMS.1))
            .multipart(delivery(sample.clone(), file.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }
    for _ in 0..10 {
        let r = other.get(bin.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    drop(other);
    // 127.0.0.2 takes the last 2 places: the server is full, yet a probe is answered and
    // anything else is told to come back
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        held.push(connect_from(&bin, "127.0.0.2").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/healthz", "/readyz"] {
        let mut probe = connect_from(&bin, "127.0.0.3").await;
        probe
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let text = read_until_closed(&mut probe, bound).await.expect("closed");
        assert_eq!(status_of(&text), Some(200), "{path}: {text}");
    }
    let mut busy = connect_from(&bin, "127.0.0.3").await;
    busy.write_all(
        format!(
            "GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\r\n",
            basic(OP)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let text = read_until_closed(&mut busy, bound).await.expect("closed");
    assert_eq!(status_of(&text), Some(503), "{text}");
    assert!(text.contains("\"too_many_connections\""), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    // the 8 places kept for probes held silent (4 from each of two addresses): closed
    // within 2 s, though --header-timeout is 60 s; then a probe is answered again
    let started = Instant::now();
    let mut silent = Vec::new();
    for source in ["127.0.0.4", "127.0.0.5"] {
        for _ in 0..4 {
            silent.push(connect_from(&bin, source).await);
        }
    }
    for mut s in silent {
        assert!(read_until_closed(&mut s, bound).await.is_some());
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut probe = connect_from(&bin, "127.0.0.3").await;
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let text = read_until_closed(&mut probe, bound).await.expect("closed");
    assert_eq!(status_of(&text), Some(200), "{text}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bin.get("/healthz").await.0, 200);
    assert_eq!(runs(&bin).await, 3);
    let log = bin.log_text();
    assert_eq!(
        log.matches("too many connections from one address").count(),
        1,
        "{log}"
    );
}

/// Brute force (issue 20, point 4): wrong passwords are counted by route, the address that
/// sends them gets 429 with Retry-After after 20, another address is not affected, and the
/// passwords tried are not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_counted_and_throttled_per_address() {
    let ws = Workspace::new().await;
    let bin = Bin::over(&ws, &["--no-watch"]).await;
    let attacker = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..30 {
        let guess = format!("guess-{i}");
        let req = if i % 2 == 0 {
            attacker.get(bin.url("/api/v1/runs"))
        } else {
            attacker.post(bin.url(TRIGGER_PATH))
        };
        let r = req.basic_auth(OP.0, Some(&guess)).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], json!("too_many_failures"), "{body}");
        }
    }
    assert_eq!(statuses[..20], [401; 20], "{statuses:?}");
    assert_eq!(statuses[20..], [429; 10], "{statuses:?}");
    let secs = retry_after.expect("Retry-After");
    assert!((1..=60).contains(&secs), "{secs}");
    // the right password from the throttled address waits too; from another it works
    let r = attacker
        .get(bin.url("/api/v1/runs"))
        .basic_auth(OP.0, Some(OP.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(bin.get("/api/v1/runs").await.0, 200);
    let metrics = bin.http.get(bin.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("ferry_auth_failures_total{route=\"api\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_auth_failures_total{route=\"trigger\"} 10"),
        "{metrics}"
    );
    let log = bin.log_text();
    assert_eq!(
        log.matches("wrong credentials: the address is refused (429)")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("127.0.0.2"), "{log}");
    assert!(
        !log.contains("guess-"),
        "a password tried is in the log:\n{log}"
    );
}

/// A multipart body with one `file` part whose Content-Disposition is `disposition`, after
/// a good `message` part.
fn file_part(disposition: &str) -> (String, Vec<u8>) {
    let message = std::fs::read(demo_input("event_outcome_message.json")).unwrap();
    let boundary = "ferry-names".to_string();
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(&message);
    out.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\na,b\r\n--{boundary}--\r\n").as_bytes(),
    );
    (boundary, out)
}

/// Deliveries (issue 20, point 6): a file part without a file name, or with one ferry
/// keeps for itself or no target takes, is a 400 naming the rule; two Host headers are a
/// 400; a body still arriving at the request's time limit is a 408; JSON answers are not
/// to be cached. None of them starts a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_and_reserved_file_names_two_hosts_and_slow_bodies_are_refused() {
    let ws = Workspace::new().await;
    let bin = Bin::over(&ws, &["--no-watch", "--request-timeout", "2"]).await;
    let long = "a".repeat(256);
    for (disposition, code, message) in [
        (
            "name=\"file\"".to_string(),
            "missing_filename",
            "part 'file' is a file: its Content-Disposition needs a filename".to_string(),
        ),
        (
            "name=\"file\"; filename=\".ferry-tmp-0123-x.csv\"".to_string(),
            "bad_filename",
            "part 'file': the file name '.ferry-tmp-0123-x.csv' is refused: names starting with '.ferry-tmp-' are ferry's temporary files".to_string(),
        ),
        (
            "name=\"file\"; filename=\"..\"".to_string(),
            "bad_filename",
            "part 'file': the file name '..' is refused: it names a directory".to_string(),
        ),
        (
            "name=\"file\"; filename=\"a\\b.csv\"".to_string(),
            "bad_filename",
            "part 'file': the file name 'a\\\\b.csv' is refused: it contains a path separator"
                .to_string(),
        ),
        (
            format!("name=\"file\"; filename=\"{long}\""),
            "bad_filename",
            format!("part 'file': the file name '{long}' is refused: it is 256 bytes long, over 255"),
        ),
    ] {
        let (boundary, body) = file_part(&disposition);
        let r = bin
            .http
            .post(bin.url(TRIGGER_PATH))
            .basic_auth(DERMS.0, Some(DERMS.1))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{disposition}");
        assert_eq!(
            r.headers().get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store")
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], json!(code), "{body}");
        assert_eq!(body["error"]["message"], json!(message), "{body}");
    }
    // two Host headers
    let (status, text) = bin
        .raw(
            format!(
                "GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                basic(OP)
            )
            .as_bytes(),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(status, Some(400), "{text}");
    assert!(text.contains("\"host_repeated\""), "{text}");
    // a delivery sent a byte every 300 ms: under the idle limit, over the total one
    let (boundary, body) = multipart(b"{}", b"a,b");
    let mut s = TcpStream::connect(&bin.addr).await.unwrap();
    s.write_all(
        format!(
            "POST {TRIGGER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            basic(DERMS),
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for b in body {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !(buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}")) {
        match tokio::time::timeout(Duration::from_secs(30), r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(status_of(&text), Some(408), "{text}");
    assert!(
        text.contains("the request took longer than 2 s to send (see --request-timeout)"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // the API's answers are not to be cached either
    let r = bin
        .http
        .get(bin.url("/api/v1/runs"))
        .basic_auth(OP.0, Some(OP.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(runs(&bin).await, 0);
}

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The version `/api/v1/flows` shows for the FTP enrollment flow.
async fn enroll_version(bin: &Bin) -> Value {
    let (_, body) = bin.get("/api/v1/flows").await;
    body["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == json!(FTP_ENROLL))
        .map(|f| f["version"].clone())
        .unwrap_or(Value::Null)
}

/// Writes the FTP enrollment flow of the flow directory `flows` at `version`.
fn set_enroll_version(flows: &Path, version: &str) {
    let path = flows.join("enrollment_ftp.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("version: \"").unwrap() + "version: \"".len();
    let end = at + text[at..].find('"').unwrap();
    std::fs::write(&path, format!("{}{version}{}", &text[..at], &text[end..])).unwrap();
}

/// Hot reload survives its flow directory being replaced (issue 20, point 5): a
/// Kubernetes ConfigMap update (`flows` → `..data/flows`, `..data` → a timestamped
/// directory, swapped by renaming a new link over `..data`, the old directory removed), a
/// directory moved away with a copy put back, and one gone for a while (reported on
/// `/api/v1/status` while it is gone).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_follows_a_replaced_or_relinked_flow_directory() {
    use std::os::unix::fs::symlink;
    let ws = Workspace::new().await;
    let cm = ws.path().join("configmap");
    copy_dir(&ws.flows_dir(), &cm.join("..2026_12_07_01").join("flows"));
    symlink("..2026_12_07_01", cm.join("..data")).unwrap();
    symlink("..data/flows", cm.join("flows")).unwrap();
    let args = [
        "--flows".to_string(),
        cm.join("flows").display().to_string(),
        "--lookups".into(),
        ws.lookups_dir().display().to_string(),
        "--connections".into(),
        ws.connections_path().display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = Bin::start(&ws, &args, &[]).await;
    assert_eq!(bin.get("/api/v1/status").await.1["generation"], json!(1));
    assert_eq!(enroll_version(&bin).await, json!("01.23.2000"));
    // two ConfigMap updates, as the kubelet makes them
    for (n, version) in [(2u64, "01.23.2001"), (3, "01.23.2002")] {
        let dir = format!("..2026_12_07_0{n}");
        let flows = cm.join(&dir).join("flows");
        copy_dir(&cm.join("..data").join("flows"), &flows);
        set_enroll_version(&flows, version);
        let old = std::fs::read_link(cm.join("..data")).unwrap();
        symlink(&dir, cm.join("..data_tmp")).unwrap();
        std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
        std::fs::remove_dir_all(cm.join(old)).unwrap();
        let st = reloaded(&bin, Some(n)).await;
        assert_eq!(st["generation"], json!(n), "{st:#}");
        assert!(st["reload_failure"].is_null(), "{st:#}");
        assert_eq!(enroll_version(&bin).await, json!(version));
    }
    drop(bin);

    // a plain directory moved away and a copy put back, then edited in place
    let flows = ws.flows_dir();
    let bin = Bin::over(&ws, &[]).await;
    std::fs::rename(&flows, ws.path().join("flows.old")).unwrap();
    copy_dir(&ws.path().join("flows.old"), &flows);
    set_enroll_version(&flows, "01.23.2010");
    assert_eq!(reloaded(&bin, Some(2)).await["generation"], json!(2));
    assert_eq!(enroll_version(&bin).await, json!("01.23.2010"));
    set_enroll_version(&flows, "01.23.2011");
    assert_eq!(reloaded(&bin, Some(3)).await["generation"], json!(3));
    assert_eq!(enroll_version(&bin).await, json!("01.23.2011"));
    // gone: reported; back: watched and loaded again
    std::fs::rename(&flows, ws.path().join("flows.away")).unwrap();
    let st = reloaded(&bin, None).await;
    let problem = st["reload_failure"]["diagnostics"][0]
        .as_str()
        .unwrap_or("");
    assert_eq!(
        problem,
        format!(
            "{} is gone; it is watched again once it is back",
            flows.display()
        ),
        "{st:#}"
    );
    assert!(bin.log_text().contains("hot reload cannot watch a path"));
    std::fs::rename(ws.path().join("flows.away"), &flows).unwrap();
    set_enroll_version(&flows, "01.23.2012");
    let st = reloaded(&bin, Some(4)).await;
    assert_eq!(st["generation"], json!(4), "{st:#}");
    assert!(st["reload_failure"].is_null(), "{st:#}");
    assert_eq!(enroll_version(&bin).await, json!("01.23.2012"));
}

/// A `.yaml` link to a file outside the flow directory (issue 20, point 9): what does not
/// load there is reported by its link's name, line, column and code, never with its content, on
/// `/api/v1/status`, in the log, and when serve refuses to start.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_never_quote_a_file_outside_the_flow_directory() {
    let ws = Workspace::new().await;
    let secret = ws.path().join("passwd");
    std::fs::write(&secret, "root:x:0:0:SECRET-CONTENT:/root:/bin/bash\n").unwrap();
    let bin = Bin::over(&ws, &[]).await;
    let link = ws.flows_dir().join("leak.yaml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let st = reloaded(&bin, None).await;
    let text = st.to_string();
    assert!(!text.contains("SECRET-CONTENT"), "{st:#}");
    assert_eq!(
        st["reload_failure"]["diagnostics"],
        json!([format!(
            "{}:1:1: this file resolves outside the flow, lookup and connections directories and does not load (schema); its content is not shown",
            link.display()
        )]),
        "{st:#}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = bin.log_text();
    assert!(log.contains("reload refused"), "{log}");
    assert!(!log.contains("SECRET-CONTENT"), "{log}");
    drop(bin);
    // at start: serve refuses, naming the link, quoting nothing
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("serve")
            .args(explicit_sources(&ws))
            .args(["--listen", "127.0.0.1:0", "--no-schedules", "--no-watch"])
            .arg("--data")
            .arg(ws.path().join("state"))
            .env("FERRY_OPERATOR_USER", OP.0)
            .env("FERRY_OPERATOR_PASSWORD", OP.1)
            .env("FERRY_DERMS_TRIGGER_USER", DERMS.0)
            .env("FERRY_DERMS_TRIGGER_PASSWORD", DERMS.1)
            .env("FERRY_DATA", ws.path().join("data"))
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("serve exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error[schema]: this file resolves outside the flow, lookup and connections directories and does not load (schema); its content is not shown\n  --> {}:1:1\n",
            link.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET-CONTENT"), "{stderr}");
}

/// Memory per request (issue 20, point 2): a multipart body whose boundary never comes is
/// refused within its first bytes, one that names none before a byte is read, and 16 JSON
/// parts of 1000 KiB checked at once (empty objects, dozens of bytes each as a tree) cost
/// a small multiple of their size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_without_boundaries_and_json_parts_cost_little_memory() {
    let ws = Workspace::new().await;
    let bin = Bin::over(&ws, &["--no-watch"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = bin.status_kib("VmHWM");
    let body = vec![b'a'; 60 * MIB];
    for (content_type, code, message) in [
        (
            "multipart/form-data; boundary=XYZ",
            "bad_multipart",
            "the multipart body is malformed: no multipart boundary within the first 16384 bytes of the body",
        ),
        (
            "multipart/form-data",
            "bad_request",
            "expected a multipart/form-data body with a boundary (Content-Type: multipart/form-data; boundary=…)",
        ),
    ] {
        let head = format!(
            "POST {TRIGGER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            basic(DERMS),
            body.len()
        );
        let (status, text) = raw_streamed(&bin.addr, head, body.clone()).await;
        assert_eq!(status, Some(400), "{content_type}: {text}");
        assert!(text.contains(&format!("\"code\":\"{code}\"")), "{text}");
        assert!(text.contains(message), "{text}");
    }
    let after_boundaries = bin.status_kib("VmHWM");
    // 1000 KiB of `{}`: the message part alone (the missing file part: no run starts)
    let mut objects = b"[{}".to_vec();
    while objects.len() < 1000 * 1024 - 4 {
        objects.extend_from_slice(b",{}");
    }
    objects.push(b']');
    let parts = objects.len();
    let sends = (0..16).map(|_| {
        let form = reqwest::multipart::Form::new().part(
            "message",
            reqwest::multipart::Part::bytes(objects.clone())
                .mime_str("application/json")
                .unwrap(),
        );
        bin.send(
            bin.http
                .post(bin.url(TRIGGER_PATH))
                .basic_auth(DERMS.0, Some(DERMS.1))
                .multipart(form),
        )
    });
    for (status, body) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], json!("missing_part"), "{body}");
    }
    let peak = bin.status_kib("VmHWM");
    eprintln!(
        "serve VmHWM: idle {idle} KiB, after 60 MiB without boundaries {after_boundaries} KiB, after 16 JSON parts of {parts} bytes {peak} KiB"
    );
    assert!(
        after_boundaries < idle + 20 * 1024,
        "bodies without boundaries took {} MiB",
        (after_boundaries - idle) / 1024
    );
    // 16 parts of 1000 KiB: at most 5 times their size (a tree of them took 14 times)
    assert!(
        peak < after_boundaries + (16 * 5 * parts / 1024) as u64,
        "16 JSON parts of {parts} bytes took {} MiB",
        (peak - after_boundaries) / 1024
    );
    assert_eq!(runs(&bin).await, 0);
}
