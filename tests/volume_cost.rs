//! The executor's cost per item does not grow with the number of items. Alone in its test
//! binary, so that the CPU time it measures is its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Workspace;

const ENROLL_OS: &str = "OUTL-BA-DACS_OUAI_OS_ENROLL";
const DACS_OS: (&str, &str) = ("dacs-os", "dacsnamespace/DACS_EnrollFolder");
const OUAI_ENROLL: (&str, &str) = ("ouai-os", "ouainamespace/OUAIEnrollFolder");

/// CPU time of this process so far, in seconds: (user, system), from /proc.
///
/// The test bounds user time, ferry's own work. System time is printed but not bounded: it
/// is mostly ext4 creating and renaming files, whose cost depends on the filesystem's
/// history (a profile of a 4,000-file run that came out 5.7× the 1,000-file one spent a
/// quarter of its time in ext4's `recently_deleted` inode scan on file creation), not on
/// ferry.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // the fields after the command name (which may hold spaces), from the last ')'
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // USER_HZ is 100 on Linux
    let secs = |i: usize| f[i].parse::<f64>().unwrap() / 100.0;
    (secs(11), secs(12))
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
    let mut system = Vec::new();
    for n in [1_000, 4_000] {
        let ws = Workspace::new().await;
        ws.set_config("notification.email.process.complete.flag", "false");
        seed_files(&ws, n);
        let (user0, sys0) = cpu_seconds();
        let report = ws.run(ENROLL_OS).await;
        let (user1, sys1) = cpu_seconds();
        assert_eq!(report.outcome, ferry::run::Outcome::Succeeded);
        assert_eq!(report.files_moved(), n);
        assert_eq!(ws.list_files(OUAI_ENROLL.0, OUAI_ENROLL.1).len(), n);
        times.push(user1 - user0);
        system.push(sys1 - sys0);
    }
    let ratio = times[1] / times[0];
    eprintln!(
        "user CPU: 1,000 files {:.2} s, 4,000 files {:.2} s, ratio {ratio:.2}; \
         system CPU (not bounded): {:.2} s, {:.2} s",
        times[0], times[1], system[0], system[1]
    );
    assert!(
        ratio <= 5.0,
        "4,000 files took {ratio:.2} times the user CPU of 1,000 ({times:?})"
    );
}
