//! Figures for the closing notes, printed, never asserted (`cargo bench --bench figures`):
//!
//! 1. `ferry validate` wall time on the shipped flows, and on 1,000 copies of them;
//! 2. moving a 1 GiB file between two local-directory connections with `ferry run`: wall
//!    time, throughput and the peak RSS of the ferry process (VmHWM from /proc).
//!
//! `FERRY_BENCH_MIB` changes the file size (default 1024).

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

    // 1,000 copies of every shipped flow, ids made unique
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("lookups"), &dir.path().join("lookups"));
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::copy(
        repo().join("flows/connections.yaml"),
        flows.join("connections.yaml"),
    )
    .unwrap();
    let mut sources = Vec::new();
    for d in ["flows", "flows/common"] {
        for e in std::fs::read_dir(repo().join(d)).unwrap() {
            let p = e.unwrap().path();
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
    for copy in 0..1000 {
        for (i, src) in sources.iter().enumerate() {
            let mut text = src.clone();
            for id in &ids {
                // rename the flow and the child flows it calls, consistently within a copy
                text = text.replace(&format!("id: {id}\n"), &format!("id: {id}-C{copy}\n"));
                text = text.replace(&format!("flow: {id}\n"), &format!("flow: {id}-C{copy}\n"));
            }
            std::fs::write(flows.join(format!("c{copy}_{i}.yaml")), text).unwrap();
        }
    }
    let t = Instant::now();
    let o = Command::new(&bin)
        .args(["validate", "flows"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let wall = t.elapsed();
    println!(
        "validate, 1,000 copies ({} flows): `ferry validate flows` {:?} -> {}",
        sources.len() * 1000,
        wall,
        String::from_utf8_lossy(&o.stdout).trim()
    );
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
    validate_figures();
    transfer_figures();
}
