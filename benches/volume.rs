//! Real volumes, printed side by side with what a user would use instead, never asserted
//! (`cargo bench --bench volume`; build the release binary first: `cargo build --release`):
//!
//! 1. files: 1,000, 10,000 and 100,000 files of 2 KB through flow 2
//!    (`OUTL-BA-DACS_OUAI_OS_ENROLL`) on local directories, with `ferry run`: files/s, and
//!    `rclone copy` of the same files between the same kind of directories; once as shipped
//!    (`concurrency: 1`) and once with the file loop 4 wide (`FERRY_BENCH_FILES_CONCURRENCY`,
//!    comma-separated, default `1,4`), and where a file's time went (from the run's events:
//!    `fetched` to `put`, `put` to `renamed`). Then what a user runs for ferry's durability (the
//!    bytes on disk before the sources are marked): `rclone copy --transfers 8` followed by
//!    `sync -f` of the target, and `cp -r` followed by `sync -f`. With
//!    `FERRY_BENCH_FILES_BEFORE` naming another ferry binary (say main's), that binary runs
//!    flow 2 on its own copy of the files right after this one: a before/after pair;
//! 2. records: flow 3 (`OUTL-BA-OUAI_DACS_OS_ENROLL_ACK`) with 100,000 records (and
//!    `FERRY_BENCH_RECORDS`, comma-separated counts, each against a fresh stand-in) against
//!    `ferry stand-in`: records/s and the peak RSS of `ferry run`, as it starts and with
//!    `FERRY_WORKERS=1` (one worker thread), beside `wrk -c16` posting sync requests to the
//!    same stand-in, and beside a bare `reqwest::Client` (the HTTP client ferry sends with)
//!    posting them 8 at a time in this process; and the CPU per record of `ferry run` and of
//!    the stand-in, and per request of wrk, of the reqwest loop and of the stand-in under
//!    each (from `/proc`);
//! 3. kills: a flow-3 run of 100,000 records SIGKILLed `FERRY_BENCH_KILLS` times (default
//!    10), each kill followed by `ferry resubmit` of the killed run, which is itself killed
//!    (one chain of resubmits): in turn after 0.3–1.5 s of work, right after the stand-in
//!    answered the resubmit's first request (twice in a row: a resubmit of a resubmit killed
//!    before a checkpoint of its own), and 50–250 ms after its start; then a last resubmit
//!    runs to the end. Printed: requests the stand-in saw twice (per kill), records lost,
//!    runs left `running`, spool folders left.
//!
//! 4. S3 → S3: `FERRY_BENCH_S3_FILES` (default 1,000) files of 2 KB through flow 2 between two
//!    buckets of the embedded s3s-fs server (tests/support/s3_server.rs), on a copy of the
//!    flow whose file loop runs `concurrency: FERRY_BENCH_S3_CONCURRENCY` (default 8) files at
//!    once (the shipped flow keeps 1: see the README), beside `rclone copy --transfers 8` of
//!    the same objects to a third bucket of the same server.
//!
//! `FERRY_BENCH_FILES` sets the file counts (comma-separated, default `1000,10000,100000`);
//! `FERRY_BENCH_BIN` runs another `ferry` binary (main's, for a before/after pair);
//! `FERRY_BENCH_ONLY` picks sections (comma-separated: `files,records,kills,s3`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

#[path = "../tests/support/project.rs"]
mod project;
#[path = "../tests/support/s3_server.rs"]
mod s3_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ENROLL_OS: &str = "OUTL-BA-DACS_OUAI_OS_ENROLL";
const ENROLL_ACK: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const DACS_DIR: &str = "data/dacs-os/dacsnamespace/DACS_EnrollFolder";
const ACK_DIR: &str = "data/ouai-os/ouainamespace/OUAIEnrollAckFolder";
const ACK_FILE: &str = "feedback.dacs.program_subscription.20230210.csv";
const ACK_HEADER: &str = "SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime";

fn ferry_bin() -> PathBuf {
    // another build to measure (main's, for a before/after pair)
    if let Some(bin) = std::env::var_os("FERRY_BENCH_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("ferry");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release ({})",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `ferry stand-in`.
struct StandIn {
    child: Child,
    url: String,
}

impl StandIn {
    fn start() -> StandIn {
        let port = free_port();
        let child = Command::new(ferry_bin())
            .args(["stand-in", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // dropping it kills and waits for the stand-in
        let stand_in = StandIn {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return stand_in;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the stand-in did not start");
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ferry <args>` in the project `dir`, with its history under `dir/state` (and its flows
/// in `dir/flows`, for the commands that load flows).
fn ferry(dir: &Path, args: &[&str]) -> Command {
    ferry_by(&ferry_bin(), dir, args)
}

/// [`ferry`] run by the binary `bin`.
fn ferry_by(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args);
    if args.first() != Some(&"runs") {
        c.args(["--flows", "flows"]);
    }
    c.args(["--data", "state"])
        .current_dir(dir)
        .env_remove("FERRY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Peak RSS of a child, in MiB, sampled until it exits.
fn wait_peak_rss(mut child: Child) -> (std::process::ExitStatus, f64) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
            && let Some(kib) = line.split_whitespace().nth(1)
        {
            peak_kib = peak_kib.max(kib.parse().unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak_kib as f64 / 1024.0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives flow 2's file loop in the project at `dir` `concurrency: n` (1 leaves it as
/// shipped).
fn set_file_concurrency(dir: &Path, n: usize) {
    if n == 1 {
        return;
    }
    let flow = dir.join("flows/enrollment_os.yaml");
    let text = std::fs::read_to_string(&flow).unwrap();
    assert!(text.contains("      as: file\n"), "flow 2 changed shape");
    std::fs::write(
        &flow,
        text.replacen(
            "      as: file\n",
            &format!("      as: file\n      concurrency: {n}\n"),
            1,
        ),
    )
    .unwrap();
}

/// Runs `cmd` (its output dropped) and returns how long it took, its peak RSS in MiB,
/// whether it succeeded (false when it cannot be started) and its CPU seconds.
fn timed(mut cmd: Command) -> (Duration, f64, bool, f64) {
    let t = Instant::now();
    match cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
        Ok(child) => {
            let (status, rss, cpu) = wait_usage(child);
            (t.elapsed(), rss, status.success(), cpu)
        }
        Err(_) => (t.elapsed(), 0.0, false, 0.0),
    }
}

/// `sh -c script` with `$1`, `$2` set to `a`, `b`.
fn shell(script: &str, a: &Path, b: &Path) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script, "sh"]).arg(a).arg(b);
    c
}

/// A new project for flow 2 with `n` files of 2 KB to move, its file loop `concurrency`
/// wide; the files are in `DACS_DIR` under it.
fn flow2_project(n: usize, concurrency: usize, stand_in: &StandIn) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project::shipped_project(dir, &stand_in.url);
    set_file_concurrency(dir, concurrency);
    let src = dir.join(DACS_DIR);
    std::fs::create_dir_all(&src).unwrap();
    let body = vec![b'x'; 2048];
    for i in 0..n {
        std::fs::write(src.join(format!("ENROLL_SYNC_{i:07}.csv")), &body).unwrap();
    }
    tmp
}

/// `ferry run` of flow 2 in the project `dir` by the binary `bin`: its time, peak RSS and
/// CPU seconds.
fn run_flow2(bin: &Path, dir: &Path) -> (Duration, f64, f64) {
    let mut cmd = ferry_by(bin, dir, &["run", ENROLL_OS]);
    let t = Instant::now();
    let (status, rss, cpu) = wait_usage(cmd.spawn().unwrap());
    let took = t.elapsed();
    assert!(
        status.success(),
        "{} failed in {}",
        bin.display(),
        dir.display()
    );
    (took, rss, cpu)
}

fn files_bench(counts: &[usize], concurrencies: &[usize]) {
    println!("\n== files: flow 2 on local directories, 2 KB files");
    // `FERRY_BENCH_FILES_BEFORE`: another ferry binary (say main's), run on its own copy of
    // the files right after this one, for a before/after pair in the same run
    let before = std::env::var_os("FERRY_BENCH_FILES_BEFORE").map(PathBuf::from);
    let stand_in = StandIn::start();
    // every size's folders stay until the end: on ext4 without a journal, creating files in
    // the minute after many deletions is slow (`recently_deleted`), and the next size would
    // pay for this one's clean-up
    let mut keep = Vec::new();
    for (&n, &concurrency) in counts
        .iter()
        .flat_map(|n| concurrencies.iter().map(move |c| (n, c)))
    {
        let tmp = flow2_project(n, concurrency, &stand_in);
        let dir = tmp.path();
        let src = dir.join(DACS_DIR);
        let per_s = |d: Duration| n as f64 / d.as_secs_f64();
        let rclone_copy = |dst: &Path| {
            let mut c = Command::new("rclone");
            c.args(["copy", "--transfers", "8"]).arg(&src).arg(dst);
            c
        };
        // rclone copy of the same files, first (it leaves the source as it is)
        let (rclone, rclone_rss, ok, rclone_cpu) = timed(rclone_copy(&dir.join("rclone-dst")));
        let (took, rss, cpu) = run_flow2(&ferry_bin(), dir);
        println!(
            "{n:>7} files, concurrency {concurrency}: ferry {took:>8.2?} ({:>7.0} files/s, \
             peak RSS {rss:.0} MiB, CPU {:.0} µs a file); rclone copy {} ({:.0} files/s, CPU \
             {:.0} µs a file); ferry/rclone {:.2}",
            per_s(took),
            us_per(cpu, n as f64),
            if ok {
                format!("{rclone:.2?}, peak RSS {rclone_rss:.0} MiB")
            } else {
                "unavailable".into()
            },
            per_s(rclone),
            us_per(rclone_cpu, n as f64),
            per_s(took) / per_s(rclone)
        );
        if let Some(chain) = file_chain(dir) {
            println!("{:>7}  {chain}", "");
        }
        if let Some(bin) = &before {
            let other = flow2_project(n, concurrency, &stand_in);
            let (before_took, before_rss, before_cpu) = run_flow2(bin, other.path());
            keep.push(other);
            println!(
                "{:>7}  before ({}): {before_took:>8.2?} ({:>7.0} files/s, peak RSS \
                 {before_rss:.0} MiB, CPU {:.0} µs a file); after/before {:.2}",
                "",
                bin.display(),
                per_s(before_took),
                us_per(before_cpu, n as f64),
                per_s(took) / per_s(before_took)
            );
        }
        // what a user runs for the same durability: the copy of the same files (now named
        // `Sent-…`), then the target's file system synced before the sources may be marked
        let dst = dir.join("rclone-sync-dst");
        let (copy, _, ok1, _) = timed(rclone_copy(&dst));
        let (sync, _, ok2, _) = timed(shell("sync -f \"$1\"", &dst, &dst));
        let durable = copy + sync;
        let cp_dst = dir.join("cp-dst");
        let (cp, _, ok3, _) = timed(shell(
            "cp -r \"$1\" \"$2\" && sync -f \"$2\"",
            &src,
            &cp_dst,
        ));
        println!(
            "{:>7}  same durability: rclone copy --transfers 8 then sync -f {} ({:.0} files/s, \
             ferry/that {:.2}); cp -r then sync -f {} ({:.0} files/s, ferry/that {:.2})",
            "",
            if ok1 && ok2 {
                format!("{durable:.2?}, of which sync {sync:.2?}")
            } else {
                "unavailable".into()
            },
            per_s(durable),
            per_s(took) / per_s(durable),
            if ok3 {
                format!("{cp:.2?}")
            } else {
                "unavailable".into()
            },
            per_s(cp),
            per_s(took) / per_s(cp),
        );
        keep.push(tmp);
    }
}

/// Where a file's time goes in the flow-2 run recorded in `dir`'s history, from its
/// events' times (milliseconds): from `fetched` to `put` (the child flow's call and the
/// put: the write, its sync, the rename into place, the directory's sync), and from `put`
/// to `renamed` (the wait for the put's confirmation in the history, the call's return,
/// the source's rename). Means and 90th percentiles over the files.
fn file_chain(dir: &Path) -> Option<String> {
    let db = dir.join("state/ferry.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let rows: Vec<(String, String, String)> = runtime.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .ok()?;
        sqlx::query_as("SELECT kind, at, body FROM run_events ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .ok()
    })?;
    let ms = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    let mut at: std::collections::HashMap<String, [Option<i64>; 3]> = Default::default();
    for (kind, time, body) in rows {
        let slot = match kind.as_str() {
            "fetched" => 0,
            "put" => 1,
            "renamed" => 2,
            _ => continue,
        };
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        let name = body.get("name").or_else(|| body.get("from"))?.as_str()?;
        at.entry(name.to_string()).or_default()[slot] = ms(&time);
    }
    let (mut put, mut confirmed) = (Vec::new(), Vec::new());
    for t in at.values() {
        if let [Some(f), Some(p), Some(r)] = t {
            put.push(p - f);
            confirmed.push(r - p);
        }
    }
    if put.is_empty() {
        return None;
    }
    // times are whole milliseconds: the mean of many says more than the median
    let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len() as f64;
    let p90 = |v: &mut Vec<i64>| {
        v.sort_unstable();
        v[(v.len() - 1) * 9 / 10]
    };
    Some(format!(
        "a file's chain ({} files, from the run's events): fetched -> put mean {:.2} ms \
         (p90 {}); put -> renamed mean {:.2} ms (p90 {})",
        put.len(),
        mean(&put),
        p90(&mut put),
        mean(&confirmed),
        p90(&mut confirmed),
    ))
}

fn feedback(n: usize) -> String {
    let mut s = String::with_capacity(n * 100);
    s.push_str(ACK_HEADER);
    s.push('\n');
    for i in 1..=n {
        s.push_str(&format!(
            "SR-{i},1234512345,EN-{i},1122334455,DEV-{i},ACCEPTED,Subscription created,2023-02-10T02:15:00Z\n"
        ));
    }
    s
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat` (also
/// readable while it is a zombie, before it is reaped).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name (which may hold spaces) in parentheses
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 11 and 12 after the name and state
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Whether a child has exited but is not reaped yet (its final CPU times are readable).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// A resident set size from `/proc/PID/status` (`VmRSS` or `VmHWM`), in MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Waits for a child: its exit status, peak RSS in MiB and CPU seconds (read when it has
/// exited, before it is reaped).
fn wait_usage(mut child: Child) -> (std::process::ExitStatus, f64, f64) {
    let pid = child.id();
    let mut peak = 0f64;
    let mut cpu = 0f64;
    loop {
        if is_zombie(pid) {
            cpu = cpu_secs(pid).unwrap_or(cpu);
            return (child.wait().unwrap(), peak, cpu);
        }
        peak = peak.max(rss_mib(pid, "VmHWM:"));
        cpu = cpu_secs(pid).unwrap_or(cpu);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// µs per item of `secs` CPU seconds over `n` items.
fn us_per(secs: f64, n: f64) -> f64 {
    secs * 1e6 / n.max(1.0)
}

/// Flow 3 against a fresh stand-in, then `wrk -c16` posting to the same stand-in: the rates,
/// and the CPU each process spent per record (per request for wrk), from `/proc`.
fn records_bench(n: usize) {
    println!(
        "\n== records: flow 3 against ferry stand-in, {n} records (load average {})",
        load_average()
    );
    let stand_in = StandIn::start();
    let standin_pid = stand_in.child.id();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let per_s = ferry_records(&stand_in, dir, n, "SR", None);
    // the same on one worker thread, with other sync request ids (the stand-in answers 400 to
    // ids it holds)
    let one = tempfile::tempdir().unwrap();
    let per_s_one = ferry_records(&stand_in, one.path(), n, "SR1", Some("1"));
    // wrk, 16 connections, 10 s, posting unique sync requests to the same stand-in
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/rest/apis/cross/syncRequests/update", nil,
    '{"syncRequestId":"W-' .. math.random(1, 1000000000) .. '-' .. counter .. '","externalSystem":"OUAI","syncStatus":"ACCEPTED","programEnrollment":{"programId":"1","enrollmentId":"E","servicePointId":"S","deviceId":"D"},"message":"ok","processedDateTime":"2023-02-10T02:15:00Z"}')
end
"#,
    )
    .unwrap();
    let standin_before = cpu_secs(standin_pid).unwrap_or(0.0);
    let wrk = Command::new("wrk")
        .args(["-t2", "-c16", "-d10s", "-s"])
        .arg(&script)
        .arg(&stand_in.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    match wrk {
        Ok(mut child) => {
            let mut out = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
                text
            });
            let (_, _, wrk_cpu) = wait_usage(child);
            let standin_cpu = cpu_secs(standin_pid).unwrap_or(0.0) - standin_before;
            let text = reader.join().unwrap();
            let total = text
                .lines()
                .find(|l| l.contains("requests in"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok());
            let rps = text
                .lines()
                .find(|l| l.starts_with("Requests/sec:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok());
            match rps {
                Some(rps) => {
                    println!(
                        "wrk -c16: {rps:.0} requests/s; ferry/wrk {:.2} (on one worker thread {:.2})",
                        per_s / rps,
                        per_s_one / rps
                    );
                    let total = total.unwrap_or(rps * 10.0);
                    println!(
                        "  CPU per request: wrk {:.1} µs, stand-in {:.1} µs",
                        us_per(wrk_cpu, total),
                        us_per(standin_cpu, total),
                    );
                }
                None => println!("wrk printed no rate:\n{text}"),
            }
        }
        Err(e) => println!("wrk unavailable: {e}"),
    }
    let (rps, own_cpu, standin_cpu) = reqwest_alone(&stand_in.url, standin_pid, 8);
    println!(
        "reqwest alone, 8 in flight (the HTTP client ferry sends with, in a loop of its own): \
         {rps:.0} requests/s; ferry/reqwest {:.2}",
        per_s / rps
    );
    println!("  CPU per request: reqwest loop {own_cpu:.1} µs, stand-in {standin_cpu:.1} µs");
    println!("(load average after: {})", load_average());
}

/// Flow 3 over `n` records (sync request ids `<prefix>-<i>`) in a fresh project at `dir`
/// against `stand_in`, with `FERRY_WORKERS` set to `workers` if given; prints its rate, peak
/// RSS and CPU per record (its own and the stand-in's) and returns the rate.
fn ferry_records(
    stand_in: &StandIn,
    dir: &Path,
    n: usize,
    prefix: &str,
    workers: Option<&str>,
) -> f64 {
    let standin_pid = stand_in.child.id();
    project::shipped_project(dir, &stand_in.url);
    std::fs::create_dir_all(dir.join(ACK_DIR)).unwrap();
    std::fs::write(
        dir.join(ACK_DIR).join(ACK_FILE),
        feedback(n).replace("\nSR-", &format!("\n{prefix}-")),
    )
    .unwrap();
    let standin_before = cpu_secs(standin_pid).unwrap_or(0.0);
    let t = Instant::now();
    let mut command = ferry(dir, &["run", ENROLL_ACK]);
    if let Some(w) = workers {
        command.env("FERRY_WORKERS", w);
    }
    let (status, rss, ferry_cpu) = wait_usage(command.spawn().unwrap());
    let took = t.elapsed();
    let standin_cpu = cpu_secs(standin_pid).unwrap_or(0.0) - standin_before;
    assert!(status.success(), "ferry run failed");
    let per_s = n as f64 / took.as_secs_f64();
    // the database and its write-ahead log (the last commits can still be there alone)
    let db: u64 = ["state/ferry.db", "state/ferry.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let label = workers.map_or(String::new(), |w| format!(" (FERRY_WORKERS={w})"));
    println!(
        "ferry run{label}: {took:.2?}, {per_s:.0} records/s, peak RSS {rss:.1} MiB, history {:.1} MB",
        db as f64 / 1e6
    );
    println!(
        "  CPU per record: ferry {:.1} µs, stand-in {:.1} µs (stand-in RSS after: {:.0} MiB)",
        us_per(ferry_cpu, n as f64),
        us_per(standin_cpu, n as f64),
        rss_mib(standin_pid, "VmRSS:"),
    );
    per_s
}

/// `in_flight` tasks posting sync requests with a bare `reqwest::Client` (rustls, as ferry's
/// HTTP connector builds it) to the stand-in at `url` for 10 s, on a 2-worker runtime in this
/// process: requests/s, and the CPU per request of this process and of the stand-in. What
/// ferry's record loop costs beyond the client it is built on.
fn reqwest_alone(url: &str, standin_pid: u32, in_flight: usize) -> (f64, f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let target = format!("{url}/rest/apis/cross/syncRequests/update");
    let own_before = cpu_secs(std::process::id()).unwrap_or(0.0);
    let standin_before = cpu_secs(standin_pid).unwrap_or(0.0);
    let start = Instant::now();
    let sent: usize = runtime.block_on(async {
        let tasks: Vec<_> = (0..in_flight)
            .map(|task| {
                let client = client.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while start.elapsed() < Duration::from_secs(10) {
                        let body = format!(
                            r#"{{"syncRequestId":"R-{task}-{n}","externalSystem":"OUAI","syncStatus":"ACCEPTED","programEnrollment":{{"programId":"1","enrollmentId":"E","servicePointId":"S","deviceId":"D"}},"message":"ok","processedDateTime":"2023-02-10T02:15:00Z"}}"#
                        );
                        let response = client
                            .post(&target)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        response.bytes().await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut sent = 0;
        for task in tasks {
            sent += task.await.unwrap();
        }
        sent
    });
    let took = start.elapsed().as_secs_f64();
    let own = cpu_secs(std::process::id()).unwrap_or(0.0) - own_before;
    let standin = cpu_secs(standin_pid).unwrap_or(0.0) - standin_before;
    (
        sent as f64 / took,
        us_per(own, sent as f64),
        us_per(standin, sent as f64),
    )
}

/// How a kill of the chain picks its moment.
#[derive(Clone, Copy, PartialEq)]
enum KillAt {
    /// after 0.3–1.5 s of work
    Work,
    /// as soon as the stand-in has answered the run's first request
    FirstRequest,
    /// 50–250 ms after the process started (often before its first request)
    Start,
}

/// The kill pattern: work, the first request twice in a row (a resubmit of a resubmit
/// killed before its own checkpoint), then early.
const KILL_PATTERN: [KillAt; 4] = [
    KillAt::Work,
    KillAt::FirstRequest,
    KillAt::FirstRequest,
    KillAt::Start,
];

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn kill_bench(n: usize, kills: usize) {
    println!(
        "\n== kills: flow 3, {n} records, {kills} SIGKILLs in one chain of resubmits (load average {})",
        load_average()
    );
    // the stand-in logs each request it answered: the bench watches its log to kill a run
    // right after its first request
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("ferry-bench-standin-{port}.log"));
    let mut stand_in_child = Command::new(ferry_bin())
        .args(["stand-in", "--listen", &format!("127.0.0.1:{port}")])
        .env("FERRY_LOG", "warn,ferry::standin=debug")
        // every request kept: the bench counts them all (a binary without the setting
        // keeps everything anyway)
        .env("FERRY_STANDIN_KEEP", (4 * n).max(1_000_000).to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "the stand-in did not start");
    let log_len = || std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project::shipped_project(dir, &url);
    std::fs::create_dir_all(dir.join(ACK_DIR)).unwrap();
    std::fs::write(dir.join(ACK_DIR).join(ACK_FILE), feedback(n)).unwrap();
    let sync_count = || -> usize {
        let out = Command::new("curl")
            .args(["-s", &format!("{url}/_standin/sync-requests")])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut last_id: Option<String> = None;
    let mut at_first_request = 0;
    let mut before_first_request = 0;
    for k in 0..kills {
        let at = KILL_PATTERN[k % KILL_PATTERN.len()];
        let logged = log_len();
        let mut child = match &last_id {
            None => ferry(dir, &["run", ENROLL_ACK]).spawn().unwrap(),
            Some(id) => ferry(dir, &["resubmit", id]).spawn().unwrap(),
        };
        let started = Instant::now();
        match at {
            KillAt::Work => std::thread::sleep(Duration::from_millis(300 + next() % 1200)),
            KillAt::Start => std::thread::sleep(Duration::from_millis(50 + next() % 200)),
            KillAt::FirstRequest => {
                while log_len() == logged && started.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        match at {
            KillAt::FirstRequest => at_first_request += 1,
            _ if log_len() == logged => before_first_request += 1,
            _ => {}
        }
        let out = ferry(dir, &["runs", "--format", "json", "--limit", "1"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ferry runs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        last_id = runs[0]["id"].as_str().map(str::to_string);
        if k % 5 == 0 {
            println!("  kill {k}: {} records accepted so far", sync_count());
        }
    }
    if let Some(id) = &last_id {
        let status = ferry(dir, &["resubmit", id]).status().unwrap();
        println!("final resubmit: {status}");
    }
    let accepted = sync_count();
    let out = Command::new("curl")
        .args(["-s", &format!("{url}/_standin/journal")])
        .output()
        .unwrap();
    let journal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let requests = journal.as_array().map_or(0, |a| {
        a.iter()
            .filter(|e| e["path"] == "/rest/apis/cross/syncRequests/update")
            .count()
    });
    let out = ferry(dir, &["runs", "--format", "json", "--limit", "1000"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let count = |outcome: &str| {
        runs.as_array()
            .map_or(0, |a| a.iter().filter(|r| r["outcome"] == outcome).count())
    };
    let spool = std::fs::read_dir(dir.join("state/spool"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "{kills} kills ({at_first_request} right after the run's first request, {before_first_request} \
         before it), {} runs in the chain ({} interrupted, {} succeeded); records accepted {accepted} \
         of {n} (lost {}); requests sent {requests}: {} duplicates, {:.0} per kill; runs left \
         running {}; spool folders left {spool}; load average {}",
        runs.as_array().map_or(0, Vec::len),
        count("interrupted"),
        count("succeeded"),
        n.saturating_sub(accepted),
        requests.saturating_sub(n),
        requests.saturating_sub(n) as f64 / kills as f64,
        count("running"),
        load_average()
    );
    let _ = stand_in_child.kill();
    let _ = stand_in_child.wait();
    let _ = std::fs::remove_file(&log_path);
}

/// Flow 2 between two buckets of the embedded S3 server, its file loop `concurrency` wide,
/// beside `rclone copy` between buckets of the same server.
fn s3_bench(n: usize, concurrency: usize) {
    const DACS_BUCKET: &str = "dacs-enroll";
    const OUAI_BUCKET: &str = "ouai-enroll";
    const RCLONE_BUCKET: &str = "rclone-copy";
    println!(
        "\n== S3 → S3: flow 2 with concurrency {concurrency} on the embedded s3s-fs, {n} files of 2 KB"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s3 = runtime.block_on(s3_server::S3Server::start(&[
        DACS_BUCKET,
        OUAI_BUCKET,
        RCLONE_BUCKET,
    ]));
    let stand_in = StandIn::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project::shipped_project(dir, &stand_in.url);
    let config = dir.join("lookups/OUTL-BRT-OUAI_DACS_DRMS_ConfigProps.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(", DACS_EnrollFolder]", &format!(", {DACS_BUCKET}]"))
        .replace(", OUAIEnrollFolder]", &format!(", {OUAI_BUCKET}]"));
    std::fs::write(&config, text).unwrap();
    set_file_concurrency(dir, concurrency);
    let conns = dir.join("flows/connections.yaml");
    let s3_conn = format!(
        "{{ kind: s3, endpoint: \"{}\", region: us-east-1, access_key_id_env: BENCH_S3_KEY, \
         secret_access_key_env: BENCH_S3_SECRET, allow_http: true, unsigned_payload: true }}",
        s3.endpoint()
    );
    let text = std::fs::read_to_string(&conns)
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("dacs_os:") {
                format!("  dacs_os: {s3_conn}")
            } else if l.trim_start().starts_with("ouai_os:") {
                format!("  ouai_os: {s3_conn}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&conns, text).unwrap();
    let src = s3.bucket_dir(DACS_BUCKET);
    let body = vec![b'x'; 2048];
    for i in 0..n {
        std::fs::write(src.join(format!("ENROLL_SYNC_{i:07}.csv")), &body).unwrap();
    }
    // rclone copy between buckets of the same server, first (it leaves the source as it is)
    let t = Instant::now();
    let rclone = Command::new("rclone")
        .args(["copy", "--transfers", "8", "--s3-no-check-bucket"])
        .arg(format!("bench:{DACS_BUCKET}"))
        .arg(format!("bench:{RCLONE_BUCKET}"))
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", s3_server::ACCESS_KEY)
        .env(
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY",
            s3_server::SECRET_KEY,
        )
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", s3.endpoint())
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
        // a CA bundle in the environment makes rclone's S3 client refuse to start
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let rclone_took = t.elapsed();
    let rclone = match rclone {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            println!("rclone copy failed: {}", tail.join(" | "));
            false
        }
        Err(e) => {
            println!("rclone unavailable: {e}");
            false
        }
    };
    let copied = std::fs::read_dir(s3.bucket_dir(RCLONE_BUCKET))
        .map(|d| d.count())
        .unwrap_or(0);
    let t = Instant::now();
    let child = ferry(dir, &["run", ENROLL_OS])
        .env("BENCH_S3_KEY", s3_server::ACCESS_KEY)
        .env("BENCH_S3_SECRET", s3_server::SECRET_KEY)
        .spawn()
        .unwrap();
    let (status, rss) = wait_peak_rss(child);
    let took = t.elapsed();
    assert!(status.success(), "ferry run failed on S3");
    let moved = std::fs::read_dir(s3.bucket_dir(OUAI_BUCKET))
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count();
    let sent = std::fs::read_dir(&src)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("Sent-"))
        })
        .count();
    assert_eq!(moved, n, "objects at the target");
    let per_s = n as f64 / took.as_secs_f64();
    let r_per_s = n as f64 / rclone_took.as_secs_f64();
    println!(
        "ferry run: {took:.2?} ({per_s:.0} files/s, peak RSS {rss:.0} MiB; {moved} put, {sent} sources renamed); \
         rclone copy: {} ({r_per_s:.0} files/s, {copied} copied); ferry/rclone {:.2}",
        if rclone {
            format!("{rclone_took:.2?}")
        } else {
            "failed".into()
        },
        per_s / r_per_s
    );
    drop(runtime);
}

fn main() {
    let counts: Vec<usize> = std::env::var("FERRY_BENCH_FILES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let records: Vec<usize> = std::env::var("FERRY_BENCH_RECORDS")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let kills: usize = std::env::var("FERRY_BENCH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let env_usize = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let only = std::env::var("FERRY_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    if wanted("files") {
        let concurrencies: Vec<usize> = std::env::var("FERRY_BENCH_FILES_CONCURRENCY")
            .unwrap_or_else(|_| "1,4".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        files_bench(&counts, &concurrencies);
    }
    if wanted("s3") {
        s3_bench(
            env_usize("FERRY_BENCH_S3_FILES", 1000),
            env_usize("FERRY_BENCH_S3_CONCURRENCY", 8),
        );
    }
    if wanted("records") {
        for &n in &records {
            records_bench(n);
        }
    }
    if wanted("kills") {
        kill_bench(100_000, kills);
    }
}
