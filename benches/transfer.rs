//! Transfer benchmark (`cargo bench --bench transfer`): moves one big file FTP → S3 and
//! S3 → S3 through the real `ferry` binary, measures the raw rate of the same servers with
//! `curl` in the same run, and prints both, their ratios and ferry's peak RSS.
//!
//! - The servers are the tests' embedded ones (`tests/support/`): libunftp over a temporary
//!   directory and s3s-fs (S3 with Signature V4) over another, served by this process.
//! - The file is `FERRY_BENCH_MIB` MiB (default 1024) of pseudo-random bytes.
//! - ferry runs the shipped flows 1 (`OUTL-BA-DACS_OUAI_FTP_ENROLL`: list, fetch, put, rename,
//!   email) and 2 (`OUTL-BA-DACS_OUAI_OS_ENROLL`) on a copy of `flows/` and `lookups/` whose
//!   connections point at the servers; secrets are passed in the environment. The binary is
//!   the one cargo builds for benchmarks (`CARGO_BIN_EXE_ferry`: `cargo bench` builds it with
//!   the bench profile, i.e. optimised, before running this), so no separate
//!   `cargo build --release` is needed.
//! - Peak RSS is the largest `VmHWM` of `/proc/<pid>/status` seen while ferry runs (sampled
//!   every 10 ms; the high-water mark only grows, so sampling misses nothing but the last
//!   few milliseconds). ferry's CPU time (user + system, from `/proc/<pid>/stat`) is printed
//!   beside it, with the CPU the embedded servers used meanwhile.
//! - Raw rates: `curl` (7.75+ for `--aws-sigv4`) downloading the same file from the FTP
//!   server (thrown away, and into a file), and GET (likewise) / PUT / server-side copy of it
//!   on the S3 server.
//! - Rounds: each of `FERRY_BENCH_ROUNDS` rounds (default 3) measures every raw request and
//!   then ferry, for both directions; the figures are the medians (ferry's peak RSS is the
//!   highest of all rounds). Before each timed step the benchmark runs `sync`, so no step pays
//!   for writing back what an earlier one wrote: without it, ferry — which ran right after
//!   the raw multipart upload had cut and sent 1 GiB of parts — spent its run competing with
//!   the writeback of gigabytes it never wrote, and came out 10–20 % slower than it is.
//!
//! Why several ratios: ferry moves a file through a spool file on disk — the whole download,
//! then the whole upload — so its end-to-end time is comparable to a plain client doing the
//! same steps one after the other (download into a file + upload, plus the server-side copy
//! an S3 "rename" is). That is the first ratio, `ferry rate / raw sequential rate`, and the
//! one the 0.9 goal is meant for. The second is the same with the download thrown away,
//! which no sequential client can do. The last compares ferry with the slower single
//! direction alone, the ceiling a streaming (non-spooling) pipe could approach: it shows what
//! spooling costs. Each rate is file size / wall time; ferry's wall time includes starting
//! the process, loading the flows, listing, the rename, the email (to an outbox) and
//! recording the run.
//!
//! S3 payload signing: the servers speak plain http, where the s3 kind signs request bodies
//! by default; ferry's default for the https endpoints it meets in production is
//! `unsigned_payload: true` (TLS protects the bodies), and the raw curl requests send
//! `UNSIGNED-PAYLOAD` too. So the benchmark sets `unsigned_payload: true` on its connections,
//! measuring what a production https endpoint gets without the cost of TLS on either side;
//! `FERRY_BENCH_UNSIGNED_PAYLOAD=false` measures signed bodies instead.
//!
//! S3 → S3 is also measured beside `rclone copyto` of the same object between two buckets of
//! the same server (one server-side copy), in each round, with the ratio per round and of the
//! medians: since a put of a file fetched from the same service is a copy on the server, that
//! is what a user would run instead of flow 2's put. Flow 2 also renames its source
//! (`Sent-…`), which on S3 is a second copy on the server and a DELETE, so the round also
//! times the whole job done with rclone: `rclone copyto` to the target bucket, then
//! `rclone moveto` of the source to its `Sent-` name. `FERRY_BENCH_ONLY=s3` measures S3 → S3 alone. Each
//! round prints the load average (the machine is shared).
//!
//! Figures are printed, never asserted. Under `cargo test` (no `--bench` argument) this does
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

#[path = "../tests/support/ftp_server.rs"]
mod ftp_server;
#[path = "../tests/support/s3_server.rs"]
mod s3_server;

#[path = "../tests/support/project.rs"]
mod project;

use project::copy_dir;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const FILE: &str = "ENROLL_SYNC_20240101_0000.csv";
const ENROLL_DIR: &str = "sploutput/DACSEnv/enroll";
const DACS_BUCKET: &str = "dacs-enroll";
const OUAI_BUCKET: &str = "ouai-enroll";
const RAW_BUCKET: &str = "raw";
const FTP_PW_VAR: &str = "FERRY_BENCH_FTP_PASSWORD";
const S3_KEY_VAR: &str = "FERRY_BENCH_S3_KEY";
const S3_SECRET_VAR: &str = "FERRY_BENCH_S3_SECRET";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `mib` MiB of xorshift bytes (incompressible, no repeating block).
fn make_file(path: &Path, mib: u64) {
    let mut out = BufWriter::with_capacity(MIB as usize, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..mib {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}

/// Whether two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ra, mut rb) = (
        std::io::BufReader::with_capacity(MIB as usize, fa),
        std::io::BufReader::with_capacity(MIB as usize, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = ra.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        rb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// `curl --version` is 7.75 or later (`--aws-sigv4`).
fn curl_has_sigv4() -> Result<String, String> {
    let out = Command::new("curl")
        .arg("--version")
        .output()
        .map_err(|e| format!("curl is not available: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(1)
        .ok_or("curl --version printed no version")?
        .to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (7, 75) {
        Ok(version)
    } else {
        Err(format!(
            "curl {version} lacks --aws-sigv4 (7.75+ needed for the raw S3 rates)"
        ))
    }
}

/// Flushes dirty pages to disk (`sync`) before a timed step, so that no measurement pays
/// for writing back what an earlier one wrote (the file made, the parts cut, a download).
fn settle_disk() {
    let _ = Command::new("sync").status();
}

/// Runs curl with `args`, the body it receives going to `out`; returns its wall time.
/// Panics with the status, curl's stderr and the answer (when `out` is a file) on failure.
fn curl(what: &str, out: &Path, args: &[&str]) -> Duration {
    settle_disk();
    let started = Instant::now();
    let result = Command::new("curl")
        .args(["-sS", "-w", "%{http_code}", "-o"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    let took = started.elapsed();
    let code = String::from_utf8_lossy(&result.stdout).trim().to_string();
    // FTP transfers answer 226, HTTP ones 2xx.
    let ok = result.status.success() && (code.starts_with('2'));
    assert!(
        ok,
        "curl ({what}) failed: status {code}, {}{}",
        String::from_utf8_lossy(&result.stderr),
        std::fs::read_to_string(out).unwrap_or_default()
    );
    took
}

struct S3Curl {
    endpoint: String,
    user: String,
}

impl S3Curl {
    fn args<'a>(&'a self, extra: &[&'a str], path: &str) -> Vec<String> {
        // curl 7.88 signs the payload hash given in this header (S3 wants the header, and
        // curl does not add it itself before 8.x); the body is streamed unhashed, as ferry's
        // S3 client does too.
        let mut v: Vec<String> = vec![
            "--aws-sigv4".into(),
            "aws:amz:us-east-1:s3".into(),
            "--user".into(),
            self.user.clone(),
            "-H".into(),
            "x-amz-content-sha256: UNSIGNED-PAYLOAD".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(format!("{}/{path}", self.endpoint));
        v
    }

    fn run(&self, what: &str, out: &Path, extra: &[&str], path: &str) -> Duration {
        let args = self.args(extra, path);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(what, out, &refs)
    }
}

/// Part size and parallelism of the raw multipart upload: what ferry's S3 connector uses for
/// a file of this size (8 MiB parts, two in flight), so the server does the same work.
const PART: u64 = 8 * MIB;
const PARTS_IN_FLIGHT: &str = "2";

/// A multipart upload of `source` to `bucket/key` with curl, the way an S3 client that
/// keeps memory bounded uploads: CreateMultipartUpload, the parts (`PART` bytes, two at a
/// time), CompleteMultipartUpload. The part files are cut beforehand (not timed).
fn s3_multipart_put(s3: &S3Curl, source: &Path, work: &Path, bucket: &str, key: &str) -> Duration {
    let dir = work.join("parts");
    std::fs::create_dir_all(&dir).unwrap();
    let mut input = std::fs::File::open(source).unwrap();
    let mut parts = Vec::new();
    let mut buf = vec![0u8; PART as usize];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..]).unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let path = dir.join(format!("part-{:05}", parts.len() + 1));
        std::fs::write(&path, &buf[..filled]).unwrap();
        parts.push(path);
    }
    let answer = work.join("multipart-answer.xml");
    settle_disk();
    let started = Instant::now();
    s3.run(
        "S3 CreateMultipartUpload",
        &answer,
        &["-X", "POST"],
        &format!("{bucket}/{key}?uploads="),
    );
    let text = std::fs::read_to_string(&answer).unwrap();
    let upload_id = text
        .split("<UploadId>")
        .nth(1)
        .and_then(|r| r.split("</UploadId>").next())
        .unwrap_or_else(|| panic!("no UploadId in {text}"))
        .to_string();
    let mut args: Vec<String> = vec![
        "--parallel".into(),
        "--parallel-max".into(),
        PARTS_IN_FLIGHT.into(),
    ];
    for (i, part) in parts.iter().enumerate() {
        args.extend([
            "-T".into(),
            part.display().to_string(),
            format!(
                "{}/{bucket}/{key}?partNumber={}&uploadId={upload_id}",
                s3.endpoint,
                i + 1
            ),
            "-o".into(),
            "/dev/null".into(),
        ]);
    }
    let mut command = s3.args(&[], "");
    command.pop(); // the URL: each part has its own
    command.extend(args);
    let refs: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(&refs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl (S3 UploadPart) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut xml = String::from("<CompleteMultipartUpload>");
    for i in 1..=parts.len() {
        xml.push_str(&format!(
            "<Part><PartNumber>{i}</PartNumber><ETag>\"x\"</ETag></Part>"
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    let body = work.join("complete.xml");
    std::fs::write(&body, xml).unwrap();
    let data = format!("@{}", body.display());
    s3.run(
        "S3 CompleteMultipartUpload",
        &answer,
        &["-X", "POST", "--data-binary", &data],
        &format!("{bucket}/{key}?uploadId={upload_id}"),
    );
    let took = started.elapsed();
    std::fs::remove_dir_all(&dir).unwrap();
    took
}

/// The raw requests' times, a round each.
#[derive(Default)]
struct Raw {
    ftp_get: Vec<Duration>,
    ftp_get_file: Vec<Duration>,
    s3_put: Vec<Duration>,
    s3_multipart: Vec<Duration>,
    s3_get: Vec<Duration>,
    s3_get_file: Vec<Duration>,
    s3_copy: Vec<Duration>,
    /// `rclone copyto` of the file between two buckets of the S3 server (one server-side
    /// copy), what a user would run instead of flow 2's put.
    rclone_copyto: Vec<Duration>,
    /// flow 2's whole job done with rclone: `rclone copyto` of the file to the other bucket,
    /// then `rclone moveto` of the source to its `Sent-` name (a copy on the server and a
    /// DELETE, as ferry's rename is on S3).
    rclone_same_job: Vec<Duration>,
}

/// The median of `times` (the upper one of an even count).
fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// What one `ferry run` took.
struct FerryRun {
    wall: Duration,
    /// Peak RSS, KiB.
    peak_kib: u64,
    /// CPU time ferry used (user + system), as last sampled before it exited.
    cpu: Duration,
    /// CPU time this process (the embedded FTP and S3 servers) used meanwhile.
    servers_cpu: Duration,
    /// Seconds from the start to each event kind's first occurrence (from ferry's own
    /// `--log-json` event log): listed, fetched, put, renamed.
    marks: Vec<(&'static str, f64)>,
}

impl FerryRun {
    /// The run of median wall time, with the highest peak RSS of all runs.
    fn median(mut runs: Vec<FerryRun>) -> FerryRun {
        let peak = runs.iter().map(|r| r.peak_kib).max().unwrap_or(0);
        runs.sort_by_key(|r| r.wall);
        let mut median = runs.swap_remove(runs.len() / 2);
        median.peak_kib = peak;
        median
    }

    /// "start+list 0.1 s, fetch 9.0 s, put 20.1 s, rename 0.0 s, rest 0.2 s".
    fn phases(&self) -> String {
        if self.marks.is_empty() {
            return "none: ferry's log had no listed/fetched/put/renamed event".to_string();
        }
        let names = ["start+list", "fetch", "put", "rename"];
        let mut out = Vec::new();
        let mut last = 0.0;
        for ((_, at), name) in self.marks.iter().zip(names) {
            out.push(format!("{name} {:.1} s", at - last));
            last = *at;
        }
        out.push(format!("rest {:.1} s", self.wall.as_secs_f64() - last));
        out.join(", ")
    }
}

/// One `ferry run` (with `FERRY_LOG=info --log-json`, to time its phases).
fn ferry_run(project: &Path, flow: &str, env: &[(&str, &str)]) -> FerryRun {
    settle_disk();
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--log-json", "run", flow, "--format", "json"])
        .arg("--flows")
        .arg(project.join("flows"))
        .arg("--lookups")
        .arg(project.join("lookups"))
        .arg("--connections")
        .arg(project.join("connections.yaml"))
        .arg("--data")
        .arg(project.join("state"))
        .env("TMPDIR", project.join("spool"))
        .env("FERRY_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let servers_before = cpu_time("self");
    let mut peak = 0;
    let mut cpu = Duration::ZERO;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        cpu = cpu_time(&pid.to_string()).unwrap_or(cpu);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let servers_cpu = cpu_time("self")
        .zip(servers_before)
        .map_or(Duration::ZERO, |(after, before)| {
            after.saturating_sub(before)
        });
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ferry run {flow}: no report ({e}):\n{stdout}\n{stderr}"));
    assert!(
        status.success() && report["outcome"] == "succeeded",
        "ferry run {flow} did not succeed:\n{stdout}\n{stderr}"
    );
    let mut marks: Vec<(&'static str, f64)> = Vec::new();
    for line in stderr.lines() {
        let Ok(log) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(event), Some(at)) = (
            log["fields"]["event"].as_str(),
            log["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        ) else {
            continue;
        };
        let offset = (at.with_timezone(&chrono::Utc) - started_at).as_seconds_f64();
        for kind in ["listed", "fetched", "put", "renamed"] {
            if event == kind && !marks.iter().any(|(k, _)| *k == kind) {
                marks.push((kind, offset));
            }
        }
    }
    FerryRun {
        wall: took,
        peak_kib: peak,
        cpu,
        servers_cpu,
        marks,
    }
}

/// User + system CPU time of process `pid` ("self" for this one) from `/proc/<pid>/stat`,
/// assuming the usual 100 clock ticks a second.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are fields 14 and 15, i.e. the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// `rclone copyto` of `source` (`bucket/key`) to `raw/rclone.bin` on the S3 server at
/// `endpoint` (a copy on the server); its wall time, or `None` (said why) without rclone.
fn rclone_copyto(endpoint: &str, source: &str) -> Option<Duration> {
    rclone(
        "copyto",
        endpoint,
        source,
        &format!("{RAW_BUCKET}/rclone.bin"),
    )
}

/// Flow 2's job done with rclone on the S3 server: `rclone copyto` of the source to the
/// target bucket, then `rclone moveto` of the source to `Sent-…`; the two wall times added,
/// after checking the bytes at the target and the renamed source. The source is put back
/// (renamed on the server's disk, untimed) for ferry's run.
fn rclone_same_job(s3: &s3_server::S3Server, source: &Path) -> Option<Duration> {
    let endpoint = s3.endpoint();
    let from = format!("{DACS_BUCKET}/{FILE}");
    let copy = rclone("copyto", &endpoint, &from, &format!("{OUAI_BUCKET}/{FILE}"))?;
    let target = s3.bucket_dir(OUAI_BUCKET).join(FILE);
    assert!(
        same_bytes(source, &target),
        "rclone copyto: the target differs"
    );
    let rename = rclone(
        "moveto",
        &endpoint,
        &from,
        &format!("{DACS_BUCKET}/Sent-{FILE}"),
    )?;
    let sent = s3.bucket_dir(DACS_BUCKET).join(format!("Sent-{FILE}"));
    assert!(
        same_bytes(source, &sent),
        "rclone moveto: the renamed source differs"
    );
    assert!(!s3.bucket_dir(DACS_BUCKET).join(FILE).exists());
    std::fs::remove_file(&target).unwrap();
    std::fs::rename(&sent, s3.bucket_dir(DACS_BUCKET).join(FILE)).unwrap();
    Some(copy + rename)
}

/// `rclone VERB from to` (`bucket/key` each) on the S3 server at `endpoint`, after
/// [`settle_disk`]; its wall time, or `None` (said why) when it failed or rclone is missing.
/// `moveto` within one S3 server is a copy on the server and a DELETE, what a rename is there.
fn rclone(verb: &str, endpoint: &str, from: &str, to: &str) -> Option<Duration> {
    settle_disk();
    let t = Instant::now();
    let out = Command::new("rclone")
        .args([verb, "--s3-no-check-bucket"])
        .arg(format!("bench:{from}"))
        .arg(format!("bench:{to}"))
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", s3_server::ACCESS_KEY)
        .env(
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY",
            s3_server::SECRET_KEY,
        )
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
        // a CA bundle in the environment makes rclone's S3 client refuse to start
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let took = t.elapsed();
    match out {
        Ok(out) if out.status.success() => Some(took),
        Ok(out) => {
            println!(
                "rclone {verb} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("rclone unavailable: {e}");
            None
        }
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): the machine is shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn rate(mib: u64, took: Duration) -> f64 {
    mib as f64 / took.as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // built and run by `cargo test --all-targets`: nothing to do
    }
    let mib: u64 = std::env::var("FERRY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let rounds: usize = std::env::var("FERRY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let curl_version = match curl_has_sigv4() {
        Ok(v) => v,
        Err(why) => {
            eprintln!("transfer benchmark skipped: {why}");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ftp, s3) = runtime.block_on(async {
        (
            ftp_server::FtpServer::start(None).await,
            s3_server::S3Server::start(&[DACS_BUCKET, OUAI_BUCKET, RAW_BUCKET]).await,
        )
    });

    // The file, written once and hard-linked into both servers' directories.
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-")
        .tempdir()
        .unwrap();
    let source = work.path().join("source.bin");
    let t = Instant::now();
    make_file(&source, mib);
    println!(
        "transfer benchmark: {mib} MiB file made in {:.1} s; curl {curl_version}; {} CPU(s)",
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let ftp_dir = ftp.path(ENROLL_DIR);
    std::fs::create_dir_all(&ftp_dir).unwrap();
    let place = |dir: &Path| {
        let _ = std::fs::remove_file(dir.join(FILE));
        std::fs::hard_link(&source, dir.join(FILE)).unwrap();
    };

    // A project: the shipped flows and lookups (bucket names S3 accepts), connections to the
    // servers, email to an outbox.
    let project = work.path().join("project");
    copy_dir(&repo().join("flows"), &project.join("flows"));
    copy_dir(&repo().join("lookups"), &project.join("lookups"));
    let config = project.join("lookups/OUTL-BRT-OUAI_DACS_DRMS_ConfigProps.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(", DACS_EnrollFolder]", &format!(", {DACS_BUCKET}]"))
        .replace(", OUAIEnrollFolder]", &format!(", {OUAI_BUCKET}]"));
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(project.join("spool")).unwrap();
    let unsigned_payload =
        std::env::var("FERRY_BENCH_UNSIGNED_PAYLOAD").map_or(true, |v| v != "false");
    println!("S3 connections: unsigned_payload: {unsigned_payload}");
    let s3_conn = format!(
        "{{kind: s3, endpoint: \"{}\", region: us-east-1, access_key_id_env: {S3_KEY_VAR}, \
         secret_access_key_env: {S3_SECRET_VAR}, allow_http: true, timeout_secs: 120, \
         unsigned_payload: {unsigned_payload}}}",
        s3.endpoint()
    );
    let rest = "{kind: http, base_url: \"http://127.0.0.1:9\"}";
    std::fs::write(
        project.join("connections.yaml"),
        format!(
            "connections:\n  dacs_ftp: {{kind: ftp, host: 127.0.0.1, port: {}, username: {}, \
             password_env: {FTP_PW_VAR}, timeout_secs: 120}}\n  dacs_os: {s3_conn}\n  \
             ouai_os: {s3_conn}\n  dacs_rest: {rest}\n  drms_rest: {rest}\n  drms_api: {rest}\n  \
             mail: {{kind: outbox, dir: \"{}\"}}\n",
            ftp.port,
            ftp_server::USER,
            project.join("outbox").display()
        ),
    )
    .unwrap();
    let env = [
        (FTP_PW_VAR, ftp_server::PASSWORD),
        (S3_KEY_VAR, s3_server::ACCESS_KEY),
        (S3_SECRET_VAR, s3_server::SECRET_KEY),
    ];
    let s3curl = S3Curl {
        endpoint: s3.endpoint(),
        user: format!("{}:{}", s3_server::ACCESS_KEY, s3_server::SECRET_KEY),
    };
    let source_arg = source.display().to_string();
    let target = s3.bucket_dir(OUAI_BUCKET).join(FILE);

    // Each round measures the raw requests, then ferry, for each direction; the figures are
    // the rounds' medians (the machine is shared and the servers run in this process, so a
    // single round is noisy).
    let ftp_user = format!("{}:{}", ftp_server::USER, ftp_server::PASSWORD);
    let ftp_url = format!("ftp://127.0.0.1:{}/{ENROLL_DIR}/{FILE}", ftp.port);
    let devnull = Path::new("/dev/null");
    let answer = work.path().join("answer.txt");
    let downloaded = work.path().join("download.bin");
    let mut raw = Raw::default();
    let mut ferry_ftp_s3 = Vec::new();
    let mut ferry_s3_s3 = Vec::new();
    // `FERRY_BENCH_ONLY=s3` measures S3 → S3 alone
    let with_ftp = std::env::var("FERRY_BENCH_ONLY").map_or(true, |v| v != "s3");
    for round in 1..=rounds {
        // --- FTP → S3 -------------------------------------------------------------------
        if with_ftp {
            place(&ftp_dir);
            raw.ftp_get
                .push(curl("FTP RETR", devnull, &["--user", &ftp_user, &ftp_url]));
            raw.ftp_get_file.push(curl(
                "FTP RETR",
                &downloaded,
                &["--user", &ftp_user, &ftp_url],
            ));
            assert!(same_bytes(&source, &downloaded));
            std::fs::remove_file(&downloaded).unwrap();
            raw.s3_put.push(s3curl.run(
                "S3 PUT",
                &answer,
                &["-T", &source_arg],
                &format!("{RAW_BUCKET}/put.bin"),
            ));
            let _ = std::fs::remove_file(s3.bucket_dir(RAW_BUCKET).join("put.bin"));
            raw.s3_multipart.push(s3_multipart_put(
                &s3curl,
                &source,
                work.path(),
                RAW_BUCKET,
                "multipart.bin",
            ));
            assert!(same_bytes(
                &source,
                &s3.bucket_dir(RAW_BUCKET).join("multipart.bin")
            ));
            let _ = std::fs::remove_file(s3.bucket_dir(RAW_BUCKET).join("multipart.bin"));
            ferry_ftp_s3.push(ferry_run(&project, "OUTL-BA-DACS_OUAI_FTP_ENROLL", &env));
            assert!(same_bytes(&source, &target), "FTP → S3: the target differs");
            assert!(ftp_dir.join(format!("Sent-{FILE}")).is_file());
            std::fs::remove_file(&target).unwrap();
            std::fs::remove_file(ftp_dir.join(format!("Sent-{FILE}"))).unwrap();
        }

        // --- S3 → S3 --------------------------------------------------------------------
        place(&s3.bucket_dir(DACS_BUCKET));
        raw.s3_get
            .push(s3curl.run("S3 GET", devnull, &[], &format!("{DACS_BUCKET}/{FILE}")));
        raw.s3_get_file.push(s3curl.run(
            "S3 GET",
            &downloaded,
            &[],
            &format!("{DACS_BUCKET}/{FILE}"),
        ));
        assert!(same_bytes(&source, &downloaded));
        std::fs::remove_file(&downloaded).unwrap();
        let copy_source = format!("x-amz-copy-source: /{DACS_BUCKET}/{FILE}");
        raw.s3_copy.push(s3curl.run(
            "S3 COPY",
            &answer,
            &["-X", "PUT", "-H", &copy_source],
            &format!("{RAW_BUCKET}/copy.bin"),
        ));
        let _ = std::fs::remove_file(s3.bucket_dir(RAW_BUCKET).join("copy.bin"));
        if let Some(took) = rclone_copyto(&s3.endpoint(), &format!("{DACS_BUCKET}/{FILE}")) {
            let copied = s3.bucket_dir(RAW_BUCKET).join("rclone.bin");
            assert!(
                same_bytes(&source, &copied),
                "rclone copyto: the target differs"
            );
            std::fs::remove_file(&copied).unwrap();
            raw.rclone_copyto.push(took);
        }
        if let Some(job) = rclone_same_job(&s3, &source) {
            raw.rclone_same_job.push(job);
        }
        ferry_s3_s3.push(ferry_run(&project, "OUTL-BA-DACS_OUAI_OS_ENROLL", &env));
        assert!(same_bytes(&source, &target), "S3 → S3: the target differs");
        let sent = s3.bucket_dir(DACS_BUCKET).join(format!("Sent-{FILE}"));
        assert!(sent.is_file());
        std::fs::remove_file(&sent).unwrap();
        std::fs::remove_file(&target).unwrap();
        println!(
            "round {round}/{rounds}: FTP -> S3 ferry {}, S3 -> S3 ferry {:.1} s, rclone copyto {}, rclone copyto + moveto {}; load average {}",
            ferry_ftp_s3
                .get(round - 1)
                .map_or("-".to_string(), |r: &FerryRun| format!(
                    "{:.1} s",
                    r.wall.as_secs_f64()
                )),
            ferry_s3_s3[round - 1].wall.as_secs_f64(),
            raw.rclone_copyto
                .get(round - 1)
                .map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
            raw.rclone_same_job
                .get(round - 1)
                .map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
            load_average()
        );
    }
    let ferry_s3_s3_walls: Vec<Duration> = ferry_s3_s3.iter().map(|r| r.wall).collect();
    let s3_get = median(&raw.s3_get);
    let s3_get_file = median(&raw.s3_get_file);
    let s3_copy = median(&raw.s3_copy);
    let ferry_s3_s3 = FerryRun::median(ferry_s3_s3);
    // S3 → S3 against rclone copyto, which copies on the server as ferry now does
    if !raw.rclone_copyto.is_empty() {
        let rclone = median(&raw.rclone_copyto);
        let pairs: Vec<String> = ferry_s3_s3_walls
            .iter()
            .zip(&raw.rclone_copyto)
            .map(|(f, r)| format!("{:.2}", r.as_secs_f64() / f.as_secs_f64()))
            .collect();
        println!(
            "S3 -> S3 vs rclone copyto: ferry {:.0} MiB/s ({:.1} s: list, fetch (HEAD), put (copy on the server), rename (copy + delete), email, history), rclone copyto {:.0} MiB/s ({:.1} s) -> ferry / rclone = {:.2} (medians; per round {})",
            rate(mib, ferry_s3_s3.wall),
            ferry_s3_s3.wall.as_secs_f64(),
            rate(mib, rclone),
            rclone.as_secs_f64(),
            rclone.as_secs_f64() / ferry_s3_s3.wall.as_secs_f64(),
            pairs.join(", ")
        );
        println!("    ferry's phases: {}", ferry_s3_s3.phases());
    }
    // S3 → S3 against the same job done with rclone: the copy, then the source's rename
    if !raw.rclone_same_job.is_empty() {
        let rclone = median(&raw.rclone_same_job);
        let pairs: Vec<String> = ferry_s3_s3_walls
            .iter()
            .zip(&raw.rclone_same_job)
            .map(|(f, r)| format!("{:.2}", r.as_secs_f64() / f.as_secs_f64()))
            .collect();
        println!(
            "S3 -> S3 vs the same job with rclone (copyto the target, then moveto the source to Sent-): ferry {:.1} s, rclone {:.1} s -> ferry / rclone = {:.2} (medians; per round {})",
            ferry_s3_s3.wall.as_secs_f64(),
            rclone.as_secs_f64(),
            rclone.as_secs_f64() / ferry_s3_s3.wall.as_secs_f64(),
            pairs.join(", ")
        );
    }
    if !with_ftp {
        println!(
            "raw (curl): S3 GET {:.1} s (into a file {:.1} s), S3 server-side COPY {:.1} s; load average {}",
            s3_get.as_secs_f64(),
            s3_get_file.as_secs_f64(),
            s3_copy.as_secs_f64(),
            load_average()
        );
        drop(ftp);
        drop(s3);
        runtime.shutdown_background();
        return;
    }
    let ftp_get = median(&raw.ftp_get);
    let ftp_get_file = median(&raw.ftp_get_file);
    let s3_put = median(&raw.s3_put);
    let s3_multipart = median(&raw.s3_multipart);
    let ferry_ftp_s3 = FerryRun::median(ferry_ftp_s3);

    // --- figures ------------------------------------------------------------------------
    println!(
        "raw (curl): FTP RETR {:.0} MiB/s ({:.1} s; into a file {:.1} s), S3 GET {:.0} MiB/s ({:.1} s; into a file {:.1} s), S3 PUT in one request {:.0} MiB/s ({:.1} s), S3 multipart PUT ({} MiB parts, {PARTS_IN_FLIGHT} at a time) {:.0} MiB/s ({:.1} s), S3 server-side COPY {:.1} s",
        rate(mib, ftp_get),
        ftp_get.as_secs_f64(),
        ftp_get_file.as_secs_f64(),
        rate(mib, s3_get),
        s3_get.as_secs_f64(),
        s3_get_file.as_secs_f64(),
        rate(mib, s3_put),
        s3_put.as_secs_f64(),
        PART / MIB,
        rate(mib, s3_multipart),
        s3_multipart.as_secs_f64(),
        s3_copy.as_secs_f64()
    );
    // `steps` = [download into a file, upload, rest...], `discarded` the download thrown
    // away. The first ratio is against the same requests in sequence (multipart upload), the
    // way ferry makes them; the second is the same with the download discarded (no sequential
    // client can do that, but it shows what writing the spool costs); the third is against a
    // single-request upload (which needs the whole body at once or a streaming signer — not a
    // bounded-memory client); the fourth against the slower of download and upload alone (the
    // ceiling of a non-spooling pipe).
    let report = |label: &str, ferry: &FerryRun, steps: &[Duration], discarded: Duration| {
        let same: Duration = steps.iter().sum();
        let same_discarded = same - steps[0] + discarded;
        let single: Duration = same - steps[1] + s3_put;
        let slowest = discarded.max(steps[1]);
        let ferry_rate = rate(mib, ferry.wall);
        println!(
            "{label}: ferry {ferry_rate:.0} MiB/s ({:.1} s), peak RSS {:.1} MiB, CPU {:.1} s (the servers meanwhile: {:.1} s)",
            ferry.wall.as_secs_f64(),
            ferry.peak_kib as f64 / 1024.0,
            ferry.cpu.as_secs_f64(),
            ferry.servers_cpu.as_secs_f64(),
        );
        println!("    ferry's phases: {}", ferry.phases());
        for (what, took) in [
            ("raw, the same requests in sequence", same),
            ("raw, the same, the download discarded", same_discarded),
            ("raw, in sequence, upload in one request", single),
            ("raw, the slower direction alone", slowest),
        ] {
            println!(
                "    {what}: {:.0} MiB/s ({:.1} s) -> ferry / raw = {:.2}",
                rate(mib, took),
                took.as_secs_f64(),
                ferry_rate / rate(mib, took)
            );
        }
    };
    // FTP → S3: download + upload (the FTP rename is a command, not a copy).
    report(
        "FTP -> S3",
        &ferry_ftp_s3,
        &[ftp_get_file, s3_multipart],
        ftp_get,
    );
    // S3 → S3: download + upload + the copy an S3 rename is (then a delete).
    report(
        "S3 -> S3",
        &ferry_s3_s3,
        &[s3_get_file, s3_multipart, s3_copy],
        s3_get,
    );
    drop(ftp);
    drop(s3);
    runtime.shutdown_background();
}
