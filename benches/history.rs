//! The run history at volume, printed, never asserted (`cargo bench --bench history`):
//! the enrollment-ack flow (flow 3) over a generated feedback file of N records against
//! `ferry stand-in`, recorded by the real binary, then:
//!
//! 1. history bytes per record: the growth of `ferry.db` (after a WAL checkpoint) over the
//!    run, divided by N (goal: ≤ 20 bytes/record amortised);
//! 2. `ferry runs show ID`: output size and time;
//! 3. the run page `GET /ui/runs/ID` and `GET /api/v1/runs/ID` from `ferry serve`: size,
//!    median time of 5 (goal: ≤ 1 MB, ≤ 100 ms), and serve's peak RSS (VmHWM) before and
//!    after serving them (goal: flat).
//!
//! Then the same file again: the stand-in answers 400 (duplicate sync request id) for every
//! record, which the flow tolerates: N tolerated rows, the worst case of a run's detail.
//!
//! `FERRY_BENCH_RECORDS` (default `100000,1000000`) lists the volumes;
//! `FERRY_BENCH_TOLERATED=0` skips the tolerated run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

#[path = "../tests/support/project.rs"]
mod project;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use project::{copy_dir, repo};

const FLOW: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const ACK_BUCKET: &str = "ouai-os/ouainamespace/OUAIEnrollAckFolder";
const ACK_FILE: &str = "feedback.dacs.program_subscription.20230210.csv";

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with stderr to `log`; waits for `needle` in the log; returns the process
/// and the word after `needle` (the address).
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

/// VmHWM of `pid`, in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes a feedback file of `n` records (distinct sync request ids).
fn feedback(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime"
    )
    .unwrap();
    for i in 1..=n {
        writeln!(
            f,
            "SR-{i:08},1234512345,EN-{i:07},{},DEV-{i:07},ACCEPTED,Subscription created,2023-02-10T02:15:00Z",
            1_122_334_455 + i
        )
        .unwrap();
    }
    f.flush().unwrap();
}

/// Folds the WAL into the database file; returns the file's size.
fn db_size(state: &Path) -> u64 {
    let db = state.join("ferry.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(false);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let wal = std::fs::metadata(state.join("ferry.db-wal")).map_or(0, |m| m.len());
    std::fs::metadata(&db).unwrap().len() + wal
}

fn ferry(bin: &Path, root: &Path, standin: &str) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(root)
        .env_remove("FERRY_DATABASE_URL")
        .env("FERRY_DATA", root.join("data"))
        .env("FERRY_DACS_URL", standin)
        .env("FERRY_DRMS_URL", standin)
        .env("FERRY_DRMS_API_URL", format!("{standin}/nms-drms/rest/v1"));
    c
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs flow 3 over the file in place; prints the run's figures and returns its id.
fn run_and_measure(bin: &Path, root: &Path, standin: &str, n: usize, what: &str) -> String {
    let state = root.join("state");
    let before = db_size(&state);
    let started = Instant::now();
    let out = ferry(bin, root, standin)
        .args([
            "run", FLOW, "--flows", "flows", "--data", "state", "--format", "json",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ferry run: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let id = report["run_id"].as_str().unwrap().to_string();
    let after = db_size(&state);
    let grown = after.saturating_sub(before);
    println!(
        "{what}: {n} records in {:.1} s ({:.0} records/s), outcome {}; history grew {grown} bytes \
         ({:.2} bytes/record; database {after} bytes)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        report["outcome"],
        grown as f64 / n as f64,
    );

    // ferry runs show
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let o = ferry(bin, root, standin)
            .args(["runs", "show", &id, "--data", "state"])
            .output()
            .unwrap();
        times.push(t.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        size = o.stdout.len();
    }
    println!(
        "{what}: ferry runs show: {size} bytes, median {:.1} ms",
        ms(median(times))
    );
    id
}

/// Serves the store; prints the run page's and the API detail's size and time, and serve's
/// peak RSS before and after.
fn serve_figures(bin: &Path, root: &Path, standin: &str, ids: &[(String, String)]) {
    let (serve, addr) = spawn_until(
        ferry(bin, root, standin)
            .args([
                "serve",
                "--flows",
                "flows",
                "--data",
                "state",
                "--listen",
                "127.0.0.1:0",
                "--no-schedules",
                "--no-watch",
            ])
            // flow 4's REST trigger needs its credentials, or serve refuses to start
            .env("FERRY_DERMS_TRIGGER_USER", "derms")
            .env("FERRY_DERMS_TRIGGER_PASSWORD", "bench-only-secret"),
        &root.join("serve.log"),
        "listening on http://",
    );
    let pid = serve.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let idle = peak_kib(pid);
    println!("ferry serve: VmHWM {idle} KiB before serving run pages");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for (what, id) in ids {
        for path in [
            format!("/ui/runs/{id}"),
            format!("/ui/runs/{id}?status=tolerated"),
            format!("/api/v1/runs/{id}"),
            format!("/api/v1/runs/{id}/events?status=tolerated&limit=1000"),
        ] {
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..5 {
                let t = Instant::now();
                size = rt.block_on(async {
                    let r = client
                        .get(format!("http://{addr}{path}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200, "{path}");
                    r.bytes().await.unwrap().len()
                });
                times.push(t.elapsed());
            }
            let path = path.replace(id.as_str(), "ID");
            println!(
                "{what}: GET {path}: {size} bytes, median {:.1} ms, max {:.1} ms; serve VmHWM {} KiB",
                ms(median(times.clone())),
                ms(times.into_iter().max().unwrap()),
                peak_kib(pid)
            );
        }
    }
    println!(
        "ferry serve: VmHWM {} KiB after serving them ({} KiB more than before)",
        peak_kib(pid),
        peak_kib(pid).saturating_sub(idle)
    );
}

fn main() {
    let volumes: Vec<usize> = std::env::var("FERRY_BENCH_RECORDS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let tolerated = std::env::var("FERRY_BENCH_TOLERATED").map_or(true, |v| v != "0");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_dir(&repo().join("flows"), &root.join("flows"));
    copy_dir(&repo().join("lookups"), &root.join("lookups"));
    let bucket = root.join("data").join(ACK_BUCKET);
    std::fs::create_dir_all(&bucket).unwrap();
    let (_standin, standin_addr) = spawn_until(
        Command::new(&bin).args(["stand-in", "--listen", "127.0.0.1:0"]),
        &root.join("standin.log"),
        "listening on http://",
    );
    let standin = format!("http://{standin_addr}");
    // an empty store to measure growth from
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = ferry::history::Store::open_sqlite(&root.join("state"))
                .await
                .unwrap();
            store.close().await;
        });

    let mut ids = Vec::new();
    for &n in &volumes {
        let file = bucket.join(ACK_FILE);
        feedback(&file, n);
        let what = format!("flow 3, {n} records accepted");
        ids.push((
            what.clone(),
            run_and_measure(&bin, root, &standin, n, &what),
        ));
        if tolerated && n == volumes[0] {
            // the same ids again: every record tolerated, a row each
            feedback(&file, n);
            let what = format!("flow 3, {n} records tolerated");
            ids.push((
                what.clone(),
                run_and_measure(&bin, root, &standin, n, &what),
            ));
        }
        for e in std::fs::read_dir(&bucket).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path());
        }
    }
    serve_figures(&bin, root, &standin, &ids);
}
