//! The executor's cost per item does not grow with the number of items. Alone in its test
//! binary, so that the CPU time it measures is its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Workspace;

const ENROLL_OS: &str = "OUTL-BA-DACS_OUAI_OS_ENROLL";
const DACS_OS: (&str, &str) = ("dacs-os", "dacsnamespace/DACS_EnrollFolder");
const OUAI_ENROLL: (&str, &str) = ("ouai-os", "ouainamespace/OUAIEnrollFolder");

/// CPU time of this process so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // the fields after the command name (which may hold spaces), from the last ')'
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux
    ticks / 100.0
}

/// Seeds `n` 2 KB enrollment files in the DACS bucket.
fn seed_files(ws: &Workspace, n: usize) {
    let body = vec![b'x'; 2048];
    for i in 0..n {
        ws.put_file(
            DACS_OS.0,
            DACS_OS.1,
            &format!("ENROLL_SYNC_{i:06}.csv"),
            body.clone(),
        );
    }
}

/// A loop's cost per item does not grow with the items: 4,000 files cost at most 5 times
/// what 1,000 files cost (10 times the work took 85 times as long before templates stopped
/// copying the whole listing on every render).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_of_a_file_does_not_grow_with_the_files() {
    let mut times = Vec::new();
    for n in [1_000, 4_000] {
        let ws = Workspace::new().await;
        ws.set_config("notification.email.process.complete.flag", "false");
        seed_files(&ws, n);
        let started = cpu_seconds();
        let report = ws.run(ENROLL_OS).await;
        let took = cpu_seconds() - started;
        assert_eq!(report.outcome, ferry::run::Outcome::Succeeded);
        assert_eq!(report.files_moved(), n);
        assert_eq!(ws.list_files(OUAI_ENROLL.0, OUAI_ENROLL.1).len(), n);
        times.push(took);
    }
    let ratio = times[1] / times[0];
    eprintln!(
        "1,000 files: {:.2} CPU-s; 4,000 files: {:.2} CPU-s; ratio {ratio:.2}",
        times[0], times[1]
    );
    assert!(
        ratio <= 5.0,
        "4,000 files took {ratio:.2} times as long as 1,000 ({times:?})"
    );
}
