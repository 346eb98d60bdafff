//! Figures for the closing notes, printed, never asserted (`cargo bench --bench figures`):
//!
//! 1. `ferry validate` wall time on the shipped flows, and on copies of them
//!    (`FERRY_BENCH_FLOW_COPIES`, comma-separated, default 1,000 copies: 10,000 flows) with
//!    the peak RSS of the process (`FERRY_BENCH_VALIDATE_ROUNDS` interleaved rounds, default
//!    5, and their medians); the VmRSS of `ferry serve` idle on the shipped flows and on
//!    each set of copies;
//! 2. moving a 1 GiB file between two local-directory connections with `ferry run`: wall
//!    time, throughput and the peak RSS of the ferry process (VmHWM from /proc).
//!
//! `FERRY_BENCH_MIB` changes the file size (default 1024). `FERRY_BENCH_BASE_BIN` names
//! another `ferry` binary (main's, say): each validate and serve-idle figure of section 1 is
//! then measured for it too, right before this build's, and printed beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

#[path = "../tests/support/project.rs"]
mod project;

use project::copy_dir;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ferry_bin() -> PathBuf {
    // benches are built in target/<profile>/deps; the binary sits in target/<profile>
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn validate_figures() {
    let bin = ferry_bin();
    // in-process compile of the shipped flows
    let inputs = ferry::compile::Inputs {
        paths: vec![repo().join("flows")],
        ..Default::default()
    };
    let times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let (p, d) = ferry::compile::load(&inputs);
            assert!(p.is_some() && d.is_empty());
            t.elapsed()
        })
        .collect();
    println!(
        "validate, shipped flows (10 flows), in process: median {:?}",
        median(times)
    );
    let times: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let o = Command::new(&bin)
                .args(["validate", "flows"])
                .current_dir(repo())
                .output()
                .unwrap();
            assert!(o.status.success());
            t.elapsed()
        })
        .collect();
    println!(
        "validate, shipped flows, `ferry validate flows` process: median {:?}",
        median(times)
    );

    // copies of every shipped flow, ids and REST paths made unique
    let copies: Vec<usize> = std::env::var("FERRY_BENCH_FLOW_COPIES")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut sources = Vec::new();
    for d in ["flows", "flows/common"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join(d))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "connections.yaml")
            {
                sources.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    let ids: Vec<String> = sources
        .iter()
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap()
                .to_string()
        })
        .collect();
    let base: Option<PathBuf> = std::env::var_os("FERRY_BENCH_BASE_BIN").map(PathBuf::from);
    // (label, binary): the base first, then this build
    let bins: Vec<(&str, PathBuf)> = base
        .iter()
        .map(|b| ("base", b.clone()))
        .chain([("this build", bin.clone())])
        .collect();
    let mut shipped_of = Vec::new();
    for (label, b) in &bins {
        let shipped = serve_idle(b, &repo().join("flows"), &repo().join("lookups"));
        println!(
            "[{label}] ferry serve, shipped flows ({} flows), idle 3 s: VmRSS {} KiB ({:.1} MB), load {}",
            sources.len(),
            shipped,
            shipped as f64 * 1024.0 / 1e6,
            load_average()
        );
        shipped_of.push(shipped);
    }
    for n in copies {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("lookups"), &dir.path().join("lookups"));
        let flows = dir.path().join("flows");
        std::fs::create_dir_all(&flows).unwrap();
        std::fs::copy(
            repo().join("flows/connections.yaml"),
            flows.join("connections.yaml"),
        )
        .unwrap();
        for copy in 0..n {
            for (i, src) in sources.iter().enumerate() {
                let mut text = src.clone();
                for id in &ids {
                    // rename the flow and the child flows it calls, consistently within a copy
                    text = text.replace(&format!("id: {id}\n"), &format!("id: {id}-C{copy}\n"));
                    text = text.replace(&format!("flow: {id}\n"), &format!("flow: {id}-C{copy}\n"));
                }
                // a REST trigger's path is the flow's own
                let text = text
                    .lines()
                    .map(|l| match l.trim_start().strip_prefix("path: /") {
                        Some(_) if l.starts_with("    path: /") => format!("{l}-C{copy}"),
                        _ => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
                std::fs::write(flows.join(format!("c{copy}_{i}.yaml")), text).unwrap();
            }
        }
        let flows_n = sources.len() * n;
        // interleaved rounds (base, this build, base, …); each round printed, then the medians
        let rounds: usize = std::env::var("FERRY_BENCH_VALIDATE_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5);
        let mut walls = vec![Vec::new(); bins.len()];
        let mut cpus = vec![Vec::new(); bins.len()];
        let mut peaks = vec![Vec::new(); bins.len()];
        for round in 1..=rounds {
            for (i, (label, b)) in bins.iter().enumerate() {
                let (wall, cpu, peak, out) = validate_once(b, dir.path());
                println!(
                    "[{label}] validate, {n} copies ({flows_n} flows), round {round}: `ferry validate flows` {wall:.2?} wall, {cpu:.2?} CPU, peak RSS {:.0} MiB -> {out}, load {}",
                    peak as f64 / 1024.0,
                    load_average()
                );
                walls[i].push(wall);
                cpus[i].push(cpu);
                peaks[i].push(peak);
            }
        }
        for (i, (label, _)) in bins.iter().enumerate() {
            let mut p = peaks[i].clone();
            p.sort_unstable();
            println!(
                "[{label}] validate, {n} copies ({flows_n} flows), median of {rounds}: {:.2?} wall, {:.2?} CPU, peak RSS {:.0} MiB (largest {:.0} MiB)",
                median(walls[i].clone()),
                median(cpus[i].clone()),
                p[p.len() / 2] as f64 / 1024.0,
                p[p.len() - 1] as f64 / 1024.0,
            );
        }
        for ((label, b), shipped) in bins.iter().zip(&shipped_of) {
            let idle = serve_idle(b, &flows, &dir.path().join("lookups"));
            println!(
                "[{label}] ferry serve, {flows_n} flows, idle 3 s: VmRSS {:.0} MiB, {:.1} KiB per flow above the shipped flows' {:.1} MiB, load {}",
                idle as f64 / 1024.0,
                idle.saturating_sub(*shipped) as f64 / (flows_n - sources.len()).max(1) as f64,
                *shipped as f64 / 1024.0,
                load_average()
            );
        }
    }
}

/// `bin validate flows` in `dir`: wall time, CPU time (user and system, the last reading
/// of /proc/PID/stat before it exits, so up to 5 ms short), peak RSS in KiB, and what it
/// printed (its last line and its first error).
fn validate_once(bin: &Path, dir: &Path) -> (Duration, Duration, u64, String) {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(["validate", "flows"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let mut cpu = Duration::ZERO;
    while child.try_wait().unwrap().is_none() {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(c) = cpu_time(pid) {
            cpu = cpu.max(c);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t.elapsed();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let said = format!("{}{}", out.trim(), err.lines().next().unwrap_or(""));
    (wall, cpu, peak, said)
}

/// User plus system CPU time of process `pid` so far (/proc/PID/stat, in clock ticks of
/// 1/100 s).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the name: state is field 3, utime 14, stime 15 (1-based over the whole line)
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The one-minute load average, as `uptime` prints it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// `ferry serve` on the flows in `flows` (no schedules, no watcher), idle for 3 s after it
/// listens: its VmRSS in KiB.
fn serve_idle(bin: &Path, flows: &Path, lookups: &Path) -> u64 {
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("serve.log");
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--flows")
        .arg(flows)
        .arg("--lookups")
        .arg(lookups)
        .arg("--data")
        .arg(state.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--no-schedules", "--no-watch"])
        .env_remove("FERRY_DATABASE_URL")
        .env("FERRY_DATA", state.path().join("data"))
        // the REST trigger's own credentials (flow 4 names them)
        .env("FERRY_DERMS_TRIGGER_USER", "derms")
        .env("FERRY_DERMS_TRIGGER_PASSWORD", "bench-only-secret")
        .current_dir(state.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on http://") {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ferry serve exited ({status}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "ferry serve did not listen:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    rss
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

fn transfer_figures() {
    let mib: u64 = std::env::var("FERRY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("flows"), &dir.path().join("flows"));
    copy_dir(&repo().join("lookups"), &dir.path().join("lookups"));
    let conns = std::fs::read_to_string(repo().join("examples/demo/connections.yaml"))
        .unwrap()
        .replace("${DEMO_DIR}", &dir.path().display().to_string())
        .replace("${STANDIN_URL}", "http://127.0.0.1:9");
    std::fs::write(dir.path().join("flows/connections.yaml"), conns).unwrap();
    let src = dir
        .path()
        .join("data/dacs-os/dacsnamespace/DACS_EnrollFolder");
    std::fs::create_dir_all(&src).unwrap();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(src.join("ENROLL_SYNC_big.csv")).unwrap(),
        );
        let mut block = vec![0u8; 1 << 20];
        for i in 0..mib {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (i as usize * 31 + j * 7) as u8;
            }
            f.write_all(&block).unwrap();
        }
    }
    let t = Instant::now();
    let mut child = Command::new(ferry_bin())
        .args(["run", "OUTL-BA-DACS_OUAI_OS_ENROLL"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t.elapsed();
    let target = dir
        .path()
        .join("data/ouai-os/ouainamespace/OUAIEnrollFolder/ENROLL_SYNC_big.csv");
    let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    assert_eq!(size, mib << 20, "the file arrived whole");
    println!(
        "local -> local, {mib} MiB through ferry run (fetch to spool, put, rename): {:?}, {:.0} MiB/s, peak RSS {} MiB",
        wall,
        mib as f64 / wall.as_secs_f64(),
        peak / 1024
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // nothing to run under `cargo test`
    }
    // FERRY_BENCH_ONLY picks sections (comma-separated: `validate,transfer`)
    let only = std::env::var("FERRY_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    if wanted("validate") {
        validate_figures();
    }
    if wanted("transfer") {
        transfer_figures();
    }
}
