//! Load figures of `ferry serve`, printed, never asserted but for lost runs (`cargo bench
//! --bench serve`):
//!
//! 1. the idle RSS of `ferry serve` on the shipped flows (VmRSS and VmHWM from /proc after
//!    startup and a few idle seconds);
//! 2. 1,000 multipart deliveries (the demo's event outcome message and file) to the event
//!    outcome flow's REST trigger with `wrk` (Debian's `wrk`; a Lua script counts the 202s
//!    and keeps their run ids): p50 / p99 latency and throughput;
//! 3. every accepted delivery has its run in the history (`/api/v1/runs/{id}`), finished:
//!    the lost count, which must be 0.
//!
//! `FERRY_BENCH_DELIVERIES` (default 1000) and `FERRY_BENCH_CONNECTIONS` (default 16) change
//! the load. The flow's acknowledgment goes to `ferry stand-in`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

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

/// Counts the answers per thread, keeps the run ids of the 202s, stops each thread after its
/// share; `done` prints one RESULT line.
const LUA: &str = r#"
local threads = {}
local next_id = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("BENCH_BOUNDARY")
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

fn main() {
    let deliveries = env_usize("FERRY_BENCH_DELIVERIES", 1000);
    let connections = env_usize("FERRY_BENCH_CONNECTIONS", 16);
    let threads = 2.min(connections);
    if Command::new("wrk").arg("--version").output().is_err() {
        panic!("wrk is not installed: apt-get install -y wrk");
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_dir(&repo().join("flows"), &root.join("flows"));
    copy_dir(&repo().join("lookups"), &root.join("lookups"));

    // the acknowledgment's peer
    let (_standin, standin_addr) = spawn_until(
        Command::new(&bin).args(["stand-in", "--listen", "127.0.0.1:0"]),
        &root.join("standin.log"),
        "listening on http://",
    );
    let standin_url = format!("http://{standin_addr}");

    let (serve, addr) = spawn_until(
        Command::new(&bin)
            .arg("serve")
            .arg("--flows")
            .arg(root.join("flows"))
            .arg("--data")
            .arg(root.join("state"))
            .args(["--listen", "127.0.0.1:0", "--no-schedules", "--no-watch"])
            .env_remove("FERRY_DATABASE_URL")
            .env("FERRY_DATA", root.join("data"))
            .env("FERRY_DACS_URL", &standin_url)
            .env("FERRY_DRMS_URL", &standin_url)
            .env(
                "FERRY_DRMS_API_URL",
                format!("{standin_url}/nms-drms/rest/v1"),
            )
            .current_dir(root),
        &root.join("serve.log"),
        "listening on http://",
    );
    let pid = serve.0.id();
    std::thread::sleep(Duration::from_secs(3));
    let (rss, hwm) = memory(pid);
    println!("ferry serve, shipped flows, idle 3 s: VmRSS {rss} KiB, VmHWM {hwm} KiB");

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
    println!(
        "{} deliveries ({} connections, {threads} wrk threads): {} answered 202, {} other; \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.0} deliveries/s over {secs:.2} s; \
         socket errors: connect {}, read {}, timeout {}",
        per_thread * threads,
        connections,
        result["accepted"],
        result["other"],
        result["p50_us"] / 1e3,
        result["p90_us"] / 1e3,
        result["p99_us"] / 1e3,
        result["max_us"] / 1e3,
        (per_thread * threads) as f64 / secs,
        result["connect_errors"],
        result["read_errors"],
        result["timeouts"],
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (outcomes, lost) = rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            let mut lost = Vec::new();
            for id in &ids {
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
    });
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
}
