//! Load figures of `ferry serve`, printed, never asserted but for lost runs (`cargo bench
//! --bench serve`):
//!
//! 1. the idle RSS of `ferry serve` on the shipped flows (VmRSS and VmHWM from /proc after
//!    startup and a few idle seconds);
//! 2. 1,000 multipart deliveries (the demo's event outcome message and file) to the event
//!    outcome flow's REST trigger with `wrk` (Debian's `wrk`; a Lua script counts the 202s
//!    and keeps their run ids): p50 / p99 latency and throughput;
//! 3. every accepted delivery has its run in the history (`/api/v1/runs/{id}`), finished:
//!    the lost count, which must be 0; and the backlog: how long after the last answer the
//!    last accepted run finished (`/api/v1/status` lists no active run);
//! 4. the same load on a PostgreSQL history (a throwaway cluster, tests/support/postgres.rs,
//!    which runs with `fsync=off`);
//! 5. kills: 16 clients delivering for `FERRY_BENCH_SERVE_KILLS` (default 10) rounds, each
//!    ended by a SIGKILL of `ferry serve` after 1–2 s, which is started again on the same
//!    port: every `202` must have its run in the history (lost = 0), and none may stay
//!    `running` once serve is back (they finish, or are `interrupted` and resubmitted).
//!
//! 6. the disk alone: the two files flow 4 writes per delivery (its put and its email in the
//!    outbox, each written, synced and renamed), by as many threads as clients, without
//!    ferry: the deliveries/s this disk allows any engine that keeps the flow's promises.
//!
//! `FERRY_BENCH_DELIVERIES` (default 1000) and `FERRY_BENCH_CONNECTIONS` (default 16) change
//! the load; `FERRY_BENCH_ONLY` picks sections (comma-separated: `sqlite,postgres,disk,kills`).
//! `FERRY_BENCH_BIN` runs another ferry binary (main's, for a before/after figure).
//! The flow's acknowledgment goes to `ferry stand-in`. The load average is printed with the
//! figures: on a shared machine they move with it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/project.rs"]
mod project;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use project::{copy_dir, repo};
use serde_json::Value;

const TRIGGER: &str =
    "/ic/api/integration/v1/flows/rest/OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR/1.0/eventOutcome";
const BOUNDARY: &str = "ferry-bench-boundary-7d1c";
/// The trigger's credentials (flow 4 takes them from the environment of `ferry serve`).
const USER: &str = "derms";
const PASSWORD: &str = "bench-password";

/// The `Authorization` header of a delivery.
fn auth() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

/// The ferry binary: `FERRY_BENCH_BIN` (another build, e.g. main's, to compare), else this
/// build's.
fn ferry_bin() -> PathBuf {
    std::env::var_os("FERRY_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferry")))
}

/// Counts the answers per thread, keeps the run ids of the 202s, stops each thread after its
/// share; `done` prints one RESULT line.
const LUA: &str = r#"
local threads = {}
local next_id = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("BENCH_BOUNDARY")
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

function init(args)
  limit = tonumber(args[1])
  answered = 0
  accepted = 0
  other = 0
  ids = assert(io.open(args[2] .. "/ids-" .. tid .. ".txt", "w"))
end

function response(status, headers, body)
  answered = answered + 1
  if status == 202 then
    accepted = accepted + 1
    local rid = body:match('"run_id"%s*:%s*"([^"]+)"')
    ids:write("202 ", rid or "-", "\n")
  else
    other = other + 1
    ids:write(status, "\n")
  end
  ids:flush()
  if answered >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local acc, oth = 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    oth = oth + t:get("other")
  end
  io.write(string.format(
    "RESULT requests=%d accepted=%d other=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d connect_errors=%d read_errors=%d timeouts=%d\n",
    summary.requests, acc, oth, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.timeout))
end
"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin args…` with stderr to `log`; waits for `needle` in the log; returns the
/// process and the log text after `needle` up to whitespace (the address).
fn spawn_until(cmd: &mut Command, log: &Path, needle: &str) -> (Proc, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split(needle).nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (proc, addr);
        }
        if let Some(status) = proc.0.try_wait().unwrap() {
            panic!("exited ({status}) before '{needle}':\n{text}");
        }
        assert!(Instant::now() < deadline, "no '{needle}':\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The multipart body of one delivery: the demo's message (JSON) and outcome file (CSV).
fn body() -> Vec<u8> {
    let input = repo().join("examples/demo/input");
    let message = std::fs::read(input.join("event_outcome_message.json")).unwrap();
    let file = std::fs::read(input.join("event_outcome.4011.20221213.csv")).unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"message\"\r\nContent-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(&message);
    b.extend_from_slice(
        format!(
            "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"event_outcome.4011.20221213.csv\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(&file);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The project: the shipped flows and lookups, and a stand-in for the acknowledgment.
struct Project {
    dir: tempfile::TempDir,
    _standin: Proc,
    standin_url: String,
}

impl Project {
    fn new(bin: &Path) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        copy_dir(&repo().join("flows"), &root.join("flows"));
        copy_dir(&repo().join("lookups"), &root.join("lookups"));
        let (standin, standin_addr) = spawn_until(
            Command::new(bin).args(["stand-in", "--listen", "127.0.0.1:0"]),
            &root.join("standin.log"),
            "listening on http://",
        );
        Project {
            dir,
            _standin: standin,
            standin_url: format!("http://{standin_addr}"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `ferry serve` on `listen` (on the PostgreSQL history `db`, else on SQLite).
    fn serve(&self, bin: &Path, listen: &str, db: Option<&str>, log: &str) -> (Proc, String) {
        let root = self.root();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--flows")
            .arg(root.join("flows"))
            .arg("--data")
            .arg(root.join("state"))
            .args(["--listen", listen, "--no-schedules", "--no-watch"])
            .env_remove("FERRY_DATABASE_URL")
            .env_remove("FERRY_LOG")
            .env("FERRY_DATA", root.join("data"))
            .env("FERRY_DERMS_TRIGGER_USER", USER)
            .env("FERRY_DERMS_TRIGGER_PASSWORD", PASSWORD)
            .env("FERRY_DACS_URL", &self.standin_url)
            .env("FERRY_DRMS_URL", &self.standin_url)
            .env(
                "FERRY_DRMS_API_URL",
                format!("{}/nms-drms/rest/v1", self.standin_url),
            )
            .current_dir(root);
        if let Some(url) = db {
            cmd.env("FERRY_DATABASE_URL", url);
        }
        spawn_until(&mut cmd, &root.join(log), "listening on http://")
    }
}

/// The figures of one load.
struct Figures {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    drained_s: f64,
}

/// 1,000 deliveries with wrk against a fresh serve on `db` (SQLite when `None`); prints and
/// returns the figures, asserting only that no accepted delivery was lost.
fn load(bin: &Path, db: Option<&str>, label: &str, idle: bool) -> Figures {
    let deliveries = env_usize("FERRY_BENCH_DELIVERIES", 1000);
    let connections = env_usize("FERRY_BENCH_CONNECTIONS", 16);
    let threads = 2.min(connections);
    println!("\n== {label}: load average {}", load_average());
    let project = Project::new(bin);
    let root = project.root();
    let (serve, addr) = project.serve(bin, "127.0.0.1:0", db, "serve.log");
    let pid = serve.0.id();
    if idle {
        std::thread::sleep(Duration::from_secs(3));
        let (rss, hwm) = memory(pid);
        println!("ferry serve, shipped flows, idle 3 s: VmRSS {rss} KiB, VmHWM {hwm} KiB");
    }

    // the load
    let body_path = root.join("body.bin");
    std::fs::write(&body_path, body()).unwrap();
    let script = root.join("deliver.lua");
    std::fs::write(&script, LUA).unwrap();
    let ids_dir = root.join("ids");
    std::fs::create_dir_all(&ids_dir).unwrap();
    let per_thread = deliveries.div_ceil(threads);
    // wrk runs for a duration: the threads stop after their share, and the bench stops wrk
    // (SIGINT: it prints its figures) once every delivery is answered, timing that itself
    let started = Instant::now();
    let wrk = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            "300s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}{TRIGGER}"))
        .arg("--")
        .arg(per_thread.to_string())
        .arg(&ids_dir)
        .env("BENCH_BODY", &body_path)
        .env("BENCH_BOUNDARY", BOUNDARY)
        .env("BENCH_AUTH", auth())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let answered = || -> usize {
        std::fs::read_dir(&ids_dir)
            .unwrap()
            .map(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .lines()
                    .count()
            })
            .sum()
    };
    while answered() < per_thread * threads {
        assert!(
            started.elapsed() < Duration::from_secs(290),
            "the load never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let ended = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // the backlog: runs accepted and not finished yet
    let client = reqwest::Client::new();
    let drained = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status: Value = client
                .get(format!("http://{addr}/api/v1/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let active = status["active_runs"].as_array().map_or(0, Vec::len);
            if active == 0 || Instant::now() > deadline {
                return ended.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let interrupted = Command::new("kill")
        .args(["-INT", &wrk.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = wrk.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: BTreeMap<&str, f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from wrk:\n{stdout}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse::<f64>().unwrap()))
        .collect();
    let secs = elapsed.as_secs_f64();
    let figures = Figures {
        per_s: result["accepted"] / secs,
        p50_ms: result["p50_us"] / 1e3,
        p99_ms: result["p99_us"] / 1e3,
        drained_s: drained.as_secs_f64(),
    };
    println!(
        "{label}: {} deliveries ({} connections, {threads} wrk threads): {} answered 202, {} other; \
         {:.0} accepted/s over {secs:.2} s; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         backlog drained {:.2} s after the last answer; socket errors: connect {}, read {}, timeout {}; \
         load average {}",
        per_thread * threads,
        connections,
        result["accepted"],
        result["other"],
        figures.per_s,
        figures.p50_ms,
        result["p90_us"] / 1e3,
        figures.p99_ms,
        result["max_us"] / 1e3,
        figures.drained_s,
        result["connect_errors"],
        result["read_errors"],
        result["timeouts"],
        load_average(),
    );
    let (rss, hwm) = memory(pid);
    println!("ferry serve after the load: VmRSS {rss} KiB, VmHWM {hwm} KiB");

    // every 202 has its run, finished
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&ids_dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("202 "))
                .map(str::to_string),
        );
    }
    let (outcomes, lost) = rt.block_on(outcomes(&client, &addr, &ids));
    println!(
        "runs of the {} accepted deliveries: {outcomes:?}; lost (202 without a recorded run): {}",
        ids.len(),
        lost.len()
    );
    assert!(
        ids.iter().all(|id| id != "-"),
        "a 202 without a run id in its answer"
    );
    assert!(lost.is_empty(), "runs lost: {lost:?}");
    drop(serve);
    figures
}

/// The outcomes of runs `ids` once none is running (or after 2 minutes), and the ids the
/// history does not know.
async fn outcomes(
    client: &reqwest::Client,
    addr: &str,
    ids: &[String],
) -> (BTreeMap<String, usize>, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut lost = Vec::new();
        for id in ids {
            let resp = client
                .get(format!("http://{addr}/api/v1/runs/{id}"))
                .send()
                .await
                .unwrap();
            if resp.status() != 200 {
                lost.push(id.clone());
                continue;
            }
            let run: Value = resp.json().await.unwrap();
            let outcome = run["outcome"].as_str().unwrap_or("?").to_string();
            *outcomes.entry(outcome).or_insert(0) += 1;
        }
        let running = outcomes.get("running").copied().unwrap_or(0);
        if running == 0 || Instant::now() > deadline {
            return (outcomes, lost);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// 16 clients deliver while serve is SIGKILLed `kills` times and started again on the same
/// port; every 202 must have its run.
fn kills(bin: &Path, kills: usize) {
    let connections = env_usize("FERRY_BENCH_CONNECTIONS", 16);
    println!(
        "\n== kills: {connections} clients delivering, ferry serve SIGKILLed {kills} times (SQLite history); load average {}",
        load_average()
    );
    let project = Project::new(bin);
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let body = body();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (accepted, answered, failed, stop) = (
            accepted.clone(),
            answered.clone(),
            failed.clone(),
            stop.clone(),
        );
        let body = body.clone();
        let url = format!("http://{listen}{TRIGGER}");
        clients.push(rt.spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = client
                    .post(&url)
                    .header(
                        "Content-Type",
                        format!("multipart/form-data; boundary={BOUNDARY}"),
                    )
                    .header("Authorization", auth())
                    .body(body.clone())
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        let v: Value = r.json().await.unwrap_or_default();
                        // a 202 whose answer was cut off was not acknowledged
                        if let Some(id) = v["run_id"].as_str() {
                            accepted.lock().unwrap().push(id.to_string());
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Ok(_) | Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for k in 0..kills {
        let (mut serve, _) = project.serve(bin, &listen, None, &format!("serve-{k}.log"));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(1000 + rng % 1000));
        serve.0.kill().unwrap();
        serve.0.wait().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (serve, addr) = project.serve(bin, &listen, None, "serve-last.log");
    for c in clients {
        let _ = rt.block_on(c);
    }
    let ids = accepted.lock().unwrap().clone();
    let client = reqwest::Client::new();
    let (outcomes, lost) = rt.block_on(outcomes(&client, &addr, &ids));
    println!(
        "kills: {kills} SIGKILLs of ferry serve; {} deliveries acknowledged (202), {} refused or cut off; \
         runs of the acknowledged: {outcomes:?}; lost acknowledged (202 without a recorded run): {}; load average {}",
        ids.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        lost.len(),
        load_average()
    );
    assert!(lost.is_empty(), "acknowledged deliveries lost: {lost:?}");
    drop(serve);
}

/// The disk alone: what flow 4 writes per delivery, without ferry — its file put in place
/// (written, synced, renamed, the directory synced) and its email in the outbox (written,
/// synced, renamed) — by `clients` threads for `n` deliveries, in a directory of the same
/// filesystem as the bench's history. Deliveries/s: a ceiling for any engine that keeps
/// the flow's promises on this disk.
fn disk_alone(n: usize, clients: usize) -> f64 {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let outbox = dir.path().join("outbox");
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir(&outbox).unwrap();
    let body = vec![b'x'; 600];
    let began = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (target, outbox, body) = (&target, &outbox, &body);
            s.spawn(move || {
                for i in (c..n).step_by(clients) {
                    for (dir, name, sync_dir) in [
                        (target, format!("event_outcome.{i}.csv"), true),
                        (outbox, format!("{i}.eml"), false),
                    ] {
                        let part = dir.join(format!(".{name}.part"));
                        let mut f = std::fs::File::create(&part).unwrap();
                        f.write_all(body).unwrap();
                        f.sync_all().unwrap();
                        std::fs::rename(&part, dir.join(&name)).unwrap();
                        if sync_dir {
                            std::fs::File::open(dir).unwrap().sync_all().unwrap();
                        }
                    }
                }
            });
        }
    });
    n as f64 / began.elapsed().as_secs_f64()
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        panic!("wrk is not installed: apt-get install -y wrk");
    }
    let bin = ferry_bin();
    println!("ferry: {}", bin.display());
    let only = std::env::var("FERRY_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    let mut rows = Vec::new();
    if wanted("sqlite") {
        rows.push(("SQLite", load(&bin, None, "SQLite history", true)));
    }
    if wanted("postgres") {
        let pg = postgres::Postgres::start();
        let url = pg.database("bench");
        rows.push((
            "PostgreSQL",
            load(&bin, Some(&url), "PostgreSQL history", false),
        ));
    }
    for (label, f) in &rows {
        println!(
            "{label}: {:.0} accepted/s, p50 {:.1} ms, p99 {:.1} ms, backlog drained {:.2} s after the load \
             (goal: >= 1000/s, p99 <= 100 ms, <= 2 s)",
            f.per_s, f.p50_ms, f.p99_ms, f.drained_s
        );
    }
    if wanted("disk") {
        let n = env_usize("FERRY_BENCH_DELIVERIES", 1000);
        let clients = env_usize("FERRY_BENCH_CONNECTIONS", 16);
        println!(
            "the disk alone, flow 4's two files per delivery (written, synced, renamed; the \
             target's directory synced) by {clients} threads: {:.0} deliveries/s over {n}; load average {}",
            disk_alone(n, clients),
            load_average()
        );
    }
    if wanted("kills") {
        kills(&bin, env_usize("FERRY_BENCH_SERVE_KILLS", 10));
    }
}
