//! `ferry serve` as several real processes: two instances sharing one PostgreSQL run history
//! (tests/support/postgres.rs starts a throwaway cluster) split the ticks of a scheduled flow
//! and never run it twice at once; an instance killed mid-run hands the flow over once its
//! lease expires, and its run is recorded interrupted; an instance restarted under the same
//! id leaves no run `running`; a database outage longer than the lease stops the run before
//! its next step (its fence) and nothing overlaps; `ferry run` and `ferry resubmit` take the
//! flow's lease beside the instances; `/readyz` answers during an outage; a REST delivery
//! posted to one instance is visible from the other, and one kept by an instance is
//! resubmitted by another that does not share its disk; SIGTERM stops a run between steps
//! and a resubmit finishes it.
//!
//! The flow moves files between two local directories (`src` → `dst`, then renames the
//! source `SENT_…`); a step in the loop calls a slow HTTP peer of the test's own, so runs
//! last long enough to overlap ticks and to be killed in the middle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cluster::{
    FLOW, PREFIX, Project, SENT, Serve, accepted_body, assert_no_overlap, elsewhere, ferry, files,
    on_postgres, once_each, puts_and_renames, runs_of, sent_names, terminate_both, text, time,
    wait_for, wait_none_running,
};
use ferry::history::{FileAction, Outcome, RunSummary, Store, TickStatus};
use postgres::Postgres;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// The tests

/// Two instances on one PostgreSQL history, files arriving while they run: every file is
/// moved exactly once, each tick fired by exactly one instance (both fire some), no two runs
/// overlap, and ticks that found the previous run still going are recorded skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_move_every_file_once_and_share_the_ticks() {
    let (pg, url, project) = on_postgres("cluster", Duration::from_millis(250));
    let mut a = Serve::start(&project, "a", Some(&url), &[]);
    let mut b = Serve::start(&project, "b", Some(&url), &[]);

    // 30 files in waves, one a second; the bursts of 10 and 8 make runs longer than the
    // second between ticks
    let mut expected = BTreeMap::new();
    let mut next = 1;
    for n in [10, 2, 2, 2, 8, 2, 2, 2] {
        for (name, bytes) in files(next, n) {
            project.drop_source(&name, &bytes);
            expected.insert(name, bytes);
        }
        next += n;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    project
        .wait_all_moved(&expected, Duration::from_secs(30), "every file moved")
        .await;
    // both take part (which one wins a tick is a race; over a dozen ticks both win some)
    let store = project.store(&url).await;
    wait_for(
        Duration::from_secs(10),
        "both instances fire ticks",
        || async {
            let ticks = store.ticks(Some(FLOW), 10_000).await.unwrap();
            ["a", "b"]
                .iter()
                .all(|i| ticks.iter().any(|t| t.instance == *i))
        },
    )
    .await;
    assert!(
        a.terminate(Duration::from_secs(20)).success(),
        "{}",
        a.log_text()
    );
    assert!(
        b.terminate(Duration::from_secs(20)).success(),
        "{}",
        b.log_text()
    );
    let logs = format!("--- a\n{}\n--- b\n{}", a.log_text(), b.log_text());

    // the files: each in dst once with its bytes, each source renamed, nothing else
    let dst = project.listing("dst");
    assert_eq!(dst, expected, "dst holds exactly the files, byte for byte");
    let (src, renamed) = (project.names("src"), sent_names(&expected));
    assert_eq!(
        src, renamed,
        "src holds each file renamed once, nothing else"
    );

    let runs = runs_of(&store, FLOW).await;
    assert!(
        runs.iter().all(|r| r.outcome != Outcome::Running),
        "a run is still running: {runs:#?}"
    );
    // each file put once and renamed once over all runs of both instances
    let (puts, renames) = puts_and_renames(&store, &runs).await;
    let once = once_each(&expected);
    assert_eq!(puts, once, "each file put exactly once");
    assert_eq!(renames, once, "each file renamed exactly once");
    assert_no_overlap(&runs);

    // the ticks: one row per tick (the key), claimed by one of the two, both claiming some
    let ticks = store.ticks(Some(FLOW), 10_000).await.unwrap();
    let by: BTreeMap<&str, usize> = ticks.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.instance.as_str()).or_insert(0) += 1;
        m
    });
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        ["a", "b"],
        "both instances claim ticks, nobody else: {by:?}\n{logs}"
    );
    let distinct: BTreeSet<&str> = ticks.iter().map(|t| t.tick_at.as_str()).collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick claimed twice");
    // every started tick names a run of the flow; every run was started by one tick
    let run_ids: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let started: Vec<&str> = ticks
        .iter()
        .filter(|t| t.status == TickStatus::Started)
        .map(|t| t.run_id.as_deref().expect("a started tick names its run"))
        .collect();
    assert_eq!(
        started.iter().copied().collect::<BTreeSet<_>>(),
        run_ids,
        "the runs are exactly the started ticks' runs"
    );
    assert_eq!(started.len(), run_ids.len(), "a run started by two ticks");
    // the runs longer than a tick made the next tick skip
    let skipped: Vec<_> = ticks
        .iter()
        .filter(|t| t.status == TickStatus::Skipped)
        .collect();
    assert!(
        !skipped.is_empty(),
        "no tick was skipped although runs outlasted ticks: {ticks:#?}"
    );
    for t in &skipped {
        let note = t.note.as_deref().unwrap_or_default();
        assert!(
            note.contains("already running"),
            "tick {} skipped for another reason: {note}",
            t.tick_at
        );
    }
    // a tick is left `claimed` only when an instance stopped between claim and start
    let claimed = ticks
        .iter()
        .filter(|t| t.status == TickStatus::Claimed)
        .count();
    assert!(claimed <= 2, "{claimed} ticks never settled: {ticks:#?}");
    drop(pg);
}

/// Instance A, on another machine (as far as B can tell: its locality is rewritten), is
/// killed (SIGKILL) in the middle of a run, holding the flow's lease: B skips the flow's
/// ticks until the lease expires (3 s plus the margin), then takes over and moves the rest;
/// A's run is recorded interrupted once its heartbeat is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_hands_its_flow_over_after_the_lease() {
    let (pg, url, project) = on_postgres("takeover", Duration::from_millis(800));
    let expected = project.drop_sources(1, 6);
    let fast = ["--lease", "3s", "--heartbeat", "500ms"];
    let mut a = Serve::start(&project, "a", Some(&url), &fast);
    let store = project.store(&url).await;
    // A is in the middle of its run: one file sent, more to go
    project
        .wait_sent_one(Duration::from_secs(15), "A has sent a file")
        .await;
    elsewhere(&url, "a").await;
    let b = Serve::start(&project, "b", Some(&url), &fast);
    a.kill();
    let killed = chrono::Utc::now();

    project
        .wait_all_moved(&expected, Duration::from_secs(20), "B moved the rest")
        .await;
    wait_none_running(
        &store,
        Duration::from_secs(10),
        "A's run recorded interrupted",
    )
    .await;

    let runs = runs_of(&store, FLOW).await;
    let ticks = store.ticks(Some(FLOW), 1000).await.unwrap();
    let instance_of = |run: &RunSummary| {
        ticks
            .iter()
            .find(|t| t.run_id.as_deref() == Some(&run.id))
            .map(|t| t.instance.clone())
            .unwrap_or_default()
    };
    let first = &runs[0];
    assert_eq!(instance_of(first), "a", "A ran first: {runs:#?}");
    assert_eq!(first.outcome, Outcome::Interrupted, "{first:#?}");
    assert!(
        first
            .error
            .as_deref()
            .is_some_and(|e| e.contains("instance running it stopped")),
        "{first:#?}"
    );
    // B's first run began after A's lease ran out (at least 2 s after the kill: the lease
    // is renewed every second for 3 s)
    let taken = runs
        .iter()
        .find(|r| instance_of(r) == "b")
        .unwrap_or_else(|| panic!("B never ran the flow: {runs:#?}\n{ticks:#?}"));
    let waited = time(&taken.started_at) - killed;
    assert!(
        waited >= chrono::Duration::milliseconds(1500),
        "B started {waited} after the kill, inside A's lease"
    );
    // meanwhile B skipped the ticks it claimed: A still held the flow
    assert!(
        ticks.iter().any(|t| t.instance == "b"
            && t.status == TickStatus::Skipped
            && t.note
                .as_deref()
                .is_some_and(|n| n.contains("on instance a"))),
        "B skipped no tick for A's lease: {ticks:#?}"
    );
    // every file arrived whole; the sources were each renamed once
    assert_eq!(project.listing("dst"), expected);
    let (src, renamed) = (project.names("src"), sent_names(&expected));
    assert_eq!(src, renamed);
    let (_, renames) = puts_and_renames(&store, &runs).await;
    assert!(
        renames.values().all(|&n| n == 1),
        "a source renamed twice: {renames:?}"
    );
    drop(b);
    drop(pg);
}

/// A REST delivery posted to instance B is recorded in the shared history: instance A lists
/// it in `/api/v1/runs`, and its file was put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_one_instance_is_visible_from_the_other() {
    let (pg, url, project) = on_postgres("delivery", Duration::from_millis(1));
    let a = Serve::start(&project, "a", Some(&url), &["--no-schedules"]);
    let b = Serve::start(&project, "b", Some(&url), &["--no-schedules"]);
    let client = reqwest::Client::new();
    let body = b"id,outcome\n4011,OK\n".to_vec();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(body.clone()).file_name("outcome.csv"),
    );
    let resp = client
        .post(b.url("/receive"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let accepted = accepted_body(resp).await;
    let run_id = accepted["run_id"].as_str().expect("a run id").to_string();

    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let list: Value = client
            .get(a.url("/api/v1/runs?limit=100"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == run_id.as_str())
            .cloned();
        if let Some(run) = found.filter(|r| r["outcome"] != "running") {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "A never lists B's run {run_id} finished: {list:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seen["flow"], "RECEIVER", "{seen:#}");
    assert_eq!(seen["trigger"], "rest", "{seen:#}");
    assert_eq!(seen["outcome"], "succeeded", "{seen:#}");
    assert_eq!(project.listing("inbox").get("outcome.csv"), Some(&body));
    drop((a, b, pg));
}

/// `n` bytes that do not repeat: the SHA-256 of 0, 1, 2, … one after the other.
fn distinct_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_le_bytes()).as_ref(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

/// The run `run_id` as `serve` shows it, once it no longer runs.
async fn finished_run(client: &reqwest::Client, serve: &Serve, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = client
            .get(serve.url(&format!("/api/v1/runs/{run_id}")))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            let run: Value = resp.json().await.unwrap();
            if run["outcome"] != "running" {
                return run;
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never finished on {}",
            serve.instance
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Instances that share no disk (each its own `--data`) on one PostgreSQL history: a REST
/// delivery kept by instance A — its run failed, the target `inbox` being a file — is
/// resubmitted through instance B after A stopped and its data directory was deleted; B's
/// run puts the delivered bytes, byte for byte (2.5 MiB: three chunks in the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_kept_by_one_instance_is_resubmitted_by_another_without_its_disk() {
    let (pg, url, project) = on_postgres("kept", Duration::from_millis(1));
    let inbox = project.files("inbox");
    std::fs::remove_dir(&inbox).unwrap();
    std::fs::write(&inbox, b"a file where the inbox should be").unwrap();
    let mut a = Serve::start(&project, "a", Some(&url), &["--no-schedules"]);
    let b = Serve::start(&project, "b", Some(&url), &["--no-schedules"]);
    let client = reqwest::Client::new();
    let body = distinct_bytes(2 * 1024 * 1024 + 512 * 1024 + 3);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(body.clone()).file_name("outcome.csv"),
    );
    let resp = client
        .post(a.url("/receive"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let accepted = accepted_body(resp).await;
    let run_id = accepted["run_id"].as_str().expect("a run id").to_string();
    let first = finished_run(&client, &a, &run_id).await;
    assert_eq!(first["outcome"], "failed", "{first:#}");
    assert_eq!(first["inputs"][0]["size"], body.len(), "{first:#}");

    // A stops and its disk is gone; the target is fixed
    let status = a.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status}:\n{}", a.log_text());
    let disk_a = project.path().join("data/a");
    assert!(disk_a.is_dir());
    std::fs::remove_dir_all(&disk_a).unwrap();
    std::fs::remove_file(&inbox).unwrap();
    std::fs::create_dir(&inbox).unwrap();

    let resp = client
        .post(b.url(&format!("/api/v1/runs/{run_id}/resubmit")))
        .send()
        .await
        .unwrap();
    let again = accepted_body(resp).await;
    assert_eq!(again["resubmit_of"], run_id.as_str());
    let again = again["run_id"].as_str().expect("a run id").to_string();
    let run = finished_run(&client, &b, &again).await;
    assert_eq!(run["outcome"], "succeeded", "{run:#}\n{}", b.log_text());
    assert_eq!(run["trigger"], "resubmit", "{run:#}");
    assert_eq!(run["resubmit_of"], run_id.as_str(), "{run:#}");
    let put = project.listing("inbox");
    assert_eq!(put.keys().collect::<Vec<_>>(), ["outcome.csv"]);
    assert!(put["outcome.csv"] == body, "the resubmit put other bytes");
    // the resubmit kept the same input for itself, in the database
    let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(run["inputs"][0]["sha256"], sha.as_str(), "{run:#}");
    assert_eq!(first["inputs"][0]["sha256"], sha.as_str(), "{first:#}");
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    let chunks: Vec<(String, i64)> = sqlx::query_as(
        "SELECT run_id, COUNT(*) FROM run_input_chunks GROUP BY run_id ORDER BY run_id",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    let mut expected = vec![(run_id.clone(), 3), (again.clone(), 3)];
    expected.sort();
    assert_eq!(chunks, expected);
    raw.close().await;
    // nothing was read from (or written to) a shared `<data>/inputs`
    assert!(!disk_a.exists());
    assert!(!project.path().join("data/b/inputs").exists());
    drop((b, pg));
}

/// SIGTERM to a single instance (SQLite history) in the middle of a run, with a 1 s grace:
/// the run stops between steps and is recorded interrupted, no source is renamed before its
/// target is written, the process exits 0; a resubmit after a restart finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_between_steps_and_a_resubmit_finishes() {
    let project = Project::with_peer(Duration::from_millis(600));
    let expected = project.drop_sources(1, 8);
    let opts = ["--no-schedules", "--grace", "1s"];
    let mut serve = Serve::start(&project, "solo", None, &opts);
    let client = reqwest::Client::new();
    let resp = client
        .post(serve.url(&format!("/api/v1/flows/{FLOW}/runs")))
        .send()
        .await
        .unwrap();
    let accepted = accepted_body(resp).await;
    let run_id = accepted["run_id"].as_str().expect("a run id").to_string();
    project
        .wait_sent_one(Duration::from_secs(10), "a file sent")
        .await;
    let status = serve.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status}:\n{}", serve.log_text());

    // stopped between steps: every renamed source has its whole target; some are left
    let src = project.listing("src");
    let dst = project.listing("dst");
    for name in expected.keys() {
        if src.contains_key(&format!("{SENT}{name}")) {
            assert_eq!(dst.get(name), expected.get(name), "{name} renamed, not put");
        }
    }
    let left = src.keys().filter(|n| n.starts_with(PREFIX)).count();
    assert!(left > 0, "the run was not interrupted: nothing left");
    let data = project.path().join("data/solo");
    {
        let store = Store::open_sqlite(&data).await.unwrap();
        let run = store.get(&run_id).await.unwrap().unwrap();
        assert_eq!(run.summary.outcome, Outcome::Interrupted, "{run:#?}");
        // the engine stopped it before a step (not the deadline marking it afterwards)
        let failure = run.failure.as_ref().expect("the interruption is recorded");
        assert!(failure.message.contains("shutting down"), "{failure:#?}");
        store.close().await;
    }

    // a restart, a resubmit: the rest is moved
    let serve = Serve::start(&project, "solo", None, &opts);
    let resp = client
        .post(serve.url(&format!("/api/v1/runs/{run_id}/resubmit")))
        .send()
        .await
        .unwrap();
    let again = accepted_body(resp).await;
    let again = again["run_id"].as_str().expect("a run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let outcome = loop {
        let run: Value = client
            .get(serve.url(&format!("/api/v1/runs/{again}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["outcome"] != "running" {
            break run["outcome"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the resubmit never finished: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(outcome, "succeeded");
    assert!(project.all_moved(&expected), "{:?}", project.listing("src"));
    assert_eq!(project.listing("dst"), expected);
}

/// Regression: an instance whose heartbeats did not reach the store for the stale time was
/// forgotten by another's sweep, and its next heartbeat did not bring it back, so its later
/// runs could never be recognised as orphaned. An owner on another machine (its locality
/// rewritten here) is judged by its heartbeat alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_taken_for_dead_comes_back_with_its_next_heartbeat() {
    let pg = Postgres::start();
    let url = pg.database("heartbeat");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_postgres(&url, dir.path()).await.unwrap();
    // stale after 6 × 5 ms
    let owned = store
        .register("slowpoke", Duration::from_millis(5))
        .await
        .unwrap();
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE owners SET locality = 'another-machine'")
        .execute(&raw)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.sweep_dead_owners().await.unwrap(),
        0,
        "no run to mark"
    );
    assert!(
        store.instances().await.unwrap().is_empty(),
        "taken for dead"
    );
    owned.heartbeat().await.unwrap();
    let ids: Vec<String> = store
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["slowpoke"]);
    // it begins a run, then falls silent: the run is interrupted by the next sweep
    let run = owned
        .begin(&ferry::history::NewRun {
            flow: FLOW,
            flow_name: "Mover",
            trigger: ferry::history::Trigger::Manual,
            input_summary: None,
            resubmit_of: None,
            dry_run: false,
        })
        .await
        .unwrap();
    sqlx::query("UPDATE owners SET locality = 'another-machine'")
        .execute(&raw)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.sweep_dead_owners().await.unwrap(), 1);
    let detail = store.get(&run).await.unwrap().unwrap();
    assert_eq!(detail.summary.outcome, Outcome::Interrupted);
    let error = detail.summary.error.unwrap_or_default();
    assert!(
        error.contains("instance 'slowpoke'") && error.contains("sent no heartbeat"),
        "{error}"
    );
    drop(pg);
}

/// Instance A, on another machine as far as the store can tell, is killed in the middle of a
/// run and started again under the same `--instance` id, with heartbeats so slow (stale
/// after a minute) that only the restart can tell the first process died: its run is
/// recorded interrupted as the new process starts, the new one moves the rest once the dead
/// process's lease has expired, and no run is left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_the_same_instance_id_leaves_no_run_running() {
    let (pg, url, project) = on_postgres("restart", Duration::from_millis(600));
    let expected = project.drop_sources(1, 6);
    let opts = ["--lease", "3s", "--heartbeat", "10s"];
    let mut a = Serve::start(&project, "a", Some(&url), &opts);
    let store = project.store(&url).await;
    project
        .wait_sent_one(Duration::from_secs(15), "A has sent a file")
        .await;
    elsewhere(&url, "a").await;
    a.kill();
    let first = runs_of(&store, FLOW).await.remove(0);
    assert_eq!(first.outcome, Outcome::Running, "{first:#?}");

    // the same id again: it registers before it listens
    let mut again = Serve::start(&project, "a", Some(&url), &opts);
    let run = store.get(&first.id).await.unwrap().unwrap().summary;
    assert_eq!(run.outcome, Outcome::Interrupted, "{run:#?}");
    let error = run.error.clone().unwrap_or_default();
    assert!(
        error.contains("instance 'a' restarted") && error.contains("is gone"),
        "{error}"
    );
    assert!(run.finished_at.is_some(), "{run:#?}");
    // one registered process per name: the new one
    let instances = store.instances().await.unwrap();
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0].id, "a");

    project
        .wait_all_moved(&expected, Duration::from_secs(30), "the rest moved")
        .await;
    wait_none_running(&store, Duration::from_secs(10), "no run left running").await;
    assert!(
        again.terminate(Duration::from_secs(20)).success(),
        "{}",
        again.log_text()
    );
    let runs = runs_of(&store, FLOW).await;
    assert!(
        runs.iter().all(|r| r.outcome != Outcome::Running),
        "{runs:#?}"
    );
    assert_no_overlap(&runs);
    assert_eq!(project.listing("dst"), expected);
    let (_, renames) = puts_and_renames(&store, &runs[1..]).await;
    assert!(
        renames.values().all(|&n| n == 1),
        "a source renamed twice: {renames:?}"
    );
    drop(pg);
}

/// The database stops for 5 s, longer than the 2 s lease, while instance A is in a long run
/// and B stands by: A's run goes on while its lease is valid, stops before its next step
/// once the lease lapsed (its fence), and records how it ended once the database is back —
/// interrupted by the lapse, with the files it moved, not `interrupted` with none. No run
/// starts before that; every file arrives once with its bytes, every source is renamed
/// once, a file is put twice only when the fence stopped the run between its put and its
/// rename, and no two runs overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_lease_stops_the_run_and_nothing_overlaps() {
    let (pg, url, project) = on_postgres("outage", Duration::from_millis(500));
    let expected = project.drop_sources(1, 12);
    let opts = ["--lease", "2s", "--heartbeat", "500ms"];
    let mut a = Serve::start(&project, "a", Some(&url), &opts);
    project
        .wait_sent_one(Duration::from_secs(15), "A has sent a file")
        .await;
    let mut b = Serve::start(&project, "b", Some(&url), &opts);
    pg.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // what A's run did during the outage; no other run could start meanwhile
    let renamed_by_first = project
        .listing("src")
        .keys()
        .filter(|n| n.starts_with(SENT))
        .count();
    pg.start_again();
    assert!(
        renamed_by_first < expected.len(),
        "the run finished before its lease lapsed: nothing to check"
    );

    project
        .wait_all_moved(&expected, Duration::from_secs(60), "every file moved")
        .await;
    let store = project.store(&url).await;
    wait_none_running(&store, Duration::from_secs(30), "no run left running").await;
    let logs = terminate_both(&mut a, &mut b);

    let runs = runs_of(&store, FLOW).await;
    let first = store.get(&runs[0].id).await.unwrap().unwrap();
    assert_eq!(
        first.summary.outcome,
        Outcome::Interrupted,
        "{first:#?}\n{logs}"
    );
    let failure = first.failure.as_ref().expect("the lapse is recorded");
    assert!(
        failure.message.contains("lapsed") && failure.kind == "interrupted",
        "{failure:#?}"
    );
    let renamed: Vec<&str> = first
        .files
        .iter()
        .filter(|f| f.action == FileAction::Renamed)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        renamed.len(),
        renamed_by_first,
        "the first run's record holds what it did: {first:#?}"
    );
    assert!(first.summary.files >= 1, "{first:#?}");
    assert!(first.summary.finished_at.is_some());
    assert_no_overlap(&runs);

    // the target: each file once with its bytes; each source renamed once
    assert_eq!(project.listing("dst"), expected);
    let (puts, renames) = puts_and_renames(&store, &runs).await;
    let once = once_each(&expected);
    assert_eq!(renames, once, "each source renamed exactly once");
    // put twice only where the fence fell between the first run's put and its rename
    let put_not_renamed: BTreeSet<&str> = first
        .files
        .iter()
        .filter(|f| f.action == FileAction::Put && !renamed.contains(&f.name.as_str()))
        .map(|f| f.name.as_str())
        .collect();
    assert!(put_not_renamed.len() <= 1, "{first:#?}");
    for (name, n) in &puts {
        let allowed = if put_not_renamed.contains(name.as_str()) {
            2
        } else {
            1
        };
        assert_eq!(*n, allowed, "{name} put {n} times: {puts:?}");
    }
    assert_eq!(puts.len(), expected.len());
    drop(pg);
}

/// While instances A and B run the flow on its schedule, the command line keeps clear of
/// them through the flow's lease: `ferry run` refuses (exit 4) and names the instance that
/// holds it, `ferry resubmit --wait` waits for the run under way and then runs; every file
/// is put once and renamed once over all runs, the command line's included, no two runs
/// overlap, and the commands leave no `ferry-data` in their working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_takes_the_flow_lease_beside_the_instances() {
    let (pg, url, project) = on_postgres("cli", Duration::from_millis(500));
    let opts = ["--lease", "3s", "--heartbeat", "500ms"];
    let mut a = Serve::start(&project, "a", Some(&url), &opts);
    let mut b = Serve::start(&project, "b", Some(&url), &opts);
    let store = project.store(&url).await;
    // a first run (nothing to do) to resubmit later
    wait_for(Duration::from_secs(15), "a first run", || async {
        runs_of(&store, FLOW)
            .await
            .iter()
            .any(|r| r.outcome == Outcome::NoFiles)
    })
    .await;
    let original = runs_of(&store, FLOW)
        .await
        .into_iter()
        .find(|r| r.outcome == Outcome::NoFiles)
        .unwrap();

    // a run of 10 files under way on an instance (5 s: time for the command to start)
    let mut expected = project.drop_sources(1, 10);
    project
        .wait_sent_one(Duration::from_secs(15), "a file sent")
        .await;
    let root = project.path().to_path_buf();
    let flows = root.join("flows").display().to_string();
    let refused = ferry(
        &root,
        &["run", FLOW, "--flows", &flows, "--database-url", &url],
    )
    .await;
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("flow 'MOVER' is already running: its lease is held by instance a, pid ")
            || err
                .contains("flow 'MOVER' is already running: its lease is held by instance b, pid "),
        "{}",
        text(&refused)
    );
    assert!(err.contains("--wait"), "{err}");

    // more files; the resubmit and a run wait their turn
    for (name, bytes) in files(11, 6) {
        project.drop_source(&name, &bytes);
        expected.insert(name, bytes);
    }
    let resubmit = ferry(
        &root,
        &[
            "resubmit",
            &original.id,
            "--flows",
            &flows,
            "--database-url",
            &url,
            "--wait",
            "60s",
        ],
    );
    let run = ferry(
        &root,
        &[
            "run",
            FLOW,
            "--flows",
            &flows,
            "--database-url",
            &url,
            "--wait",
            "60s",
        ],
    );
    let (resubmit, run) = tokio::join!(resubmit, run);
    assert_eq!(resubmit.status.code(), Some(0), "{}", text(&resubmit));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    project
        .wait_all_moved(&expected, Duration::from_secs(30), "every file moved")
        .await;
    wait_none_running(&store, Duration::from_secs(10), "no run left running").await;
    let logs = terminate_both(&mut a, &mut b);

    let runs = runs_of(&store, FLOW).await;
    let resubmitted: Vec<&RunSummary> = runs
        .iter()
        .filter(|r| r.resubmit_of.as_deref() == Some(original.id.as_str()))
        .collect();
    assert_eq!(resubmitted.len(), 1, "{runs:#?}");
    assert_eq!(
        resubmitted[0].trigger,
        ferry::history::Trigger::Resubmit,
        "{runs:#?}"
    );
    // the command line's two runs and the instances' ones, one at a time
    let manual = runs
        .iter()
        .filter(|r| r.trigger == ferry::history::Trigger::Manual)
        .count();
    assert_eq!(manual, 1, "the refused run was not recorded: {runs:#?}");
    assert_no_overlap(&runs);
    assert_eq!(project.listing("dst"), expected);
    let (puts, renames) = puts_and_renames(&store, &runs).await;
    let once = once_each(&expected);
    assert_eq!(puts, once, "each file put exactly once\n{logs}");
    assert_eq!(renames, once, "each file renamed exactly once");
    assert!(
        !root.join("ferry-data").exists(),
        "a command made ./ferry-data"
    );
    // the commands deregistered: only the instances were ever left, and they are gone too
    assert!(store.instances().await.unwrap().is_empty());
    drop(pg);
}

/// `/readyz` answers 503 within a second while the database is down (`/healthz` 200 all
/// along), and 200 once it is back; `ferry runs --database-url` reads the history and creates
/// nothing in its working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_within_a_second_during_an_outage() {
    let (pg, url, project) = on_postgres("ready", Duration::from_millis(1));
    let a = Serve::start(&project, "a", Some(&url), &["--no-schedules"]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let resp = client.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ready\n");

    pg.stop();
    for _ in 0..3 {
        let resp = client
            .get(a.url("/readyz"))
            .send()
            .await
            .expect("/readyz answers within a second");
        assert_eq!(resp.status(), 503);
        let body = resp.text().await.unwrap();
        assert!(body.starts_with("run history unreachable"), "{body}");
        let resp = client.get(a.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    pg.start_again();
    wait_for(Duration::from_secs(30), "ready again", || async {
        client
            .get(a.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    let empty = tempfile::tempdir().unwrap();
    let o = ferry(
        empty.path(),
        &["runs", "--database-url", &url, "--format", "json"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs, serde_json::json!([]));
    let made: Vec<_> = std::fs::read_dir(empty.path()).unwrap().collect();
    assert!(made.is_empty(), "ferry runs created {made:?}");
    drop((a, pg));
}

/// A delivery while the database is down is answered `503` with `Retry-After` within a
/// second (it waited 30 s for the pool), records nothing, and the next delivery once the
/// database is back is `202` and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_during_an_outage_is_refused_within_a_second_and_the_next_one_runs() {
    let (pg, url, project) = on_postgres("fast503", Duration::from_millis(1));
    let a = Serve::start(&project, "a", Some(&url), &["--no-schedules"]);
    let client = reqwest::Client::new();
    let deliver = |name: &'static str| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(format!("id,outcome\n{name},OK\n").into_bytes())
                .file_name(name),
        );
        client.post(a.url("/receive")).multipart(form).send()
    };

    pg.stop();
    for name in ["down-1.csv", "down-2.csv"] {
        let asked = Instant::now();
        let resp = deliver(name).await.unwrap();
        let took = asked.elapsed();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            took < Duration::from_millis(1500),
            "answered after {took:?}"
        );
        assert_eq!(retry_after.as_deref(), Some("5"), "{body}");
        assert!(body.contains("store_unavailable"), "{body}");
    }
    pg.start_again();

    // once the database answers again, the next delivery is accepted and runs
    let mut accepted = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.is_none() {
        let resp = deliver("up.csv").await.unwrap();
        if resp.status() == 202 {
            let v: Value = resp.json().await.unwrap();
            accepted = v["run_id"].as_str().map(str::to_string);
        } else {
            assert!(Instant::now() < deadline, "never accepted again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let run_id = accepted.unwrap();
    let store = Store::open_postgres(&url, project.path()).await.unwrap();
    wait_for(Duration::from_secs(20), "the accepted run ends", || async {
        store
            .get(&run_id)
            .await
            .unwrap()
            .is_some_and(|d| d.summary.outcome == Outcome::Succeeded)
    })
    .await;
    // the refused deliveries left no run behind
    let runs = runs_of(&store, "RECEIVER").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        project.listing("inbox").get("up.csv"),
        Some(&b"id,outcome\nup.csv,OK\n".to_vec())
    );
    assert_eq!(project.listing("inbox").get("down-1.csv"), None);
    store.close().await;
    drop((a, pg));
}

// ---------------------------------------------------------------------------------------
// Operating flows: pause and resume, runs found by file and business key

/// Delivers `file_name` with `eventId` to TRACKED on `serve`.
async fn deliver_outcome(
    client: &reqwest::Client,
    serve: &Serve,
    event_id: &str,
    file_name: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "message",
            reqwest::multipart::Part::text(format!("{{\"eventId\":\"{event_id}\"}}"))
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(format!("event,kw\n{event_id},42\n").into_bytes())
                .file_name(file_name.to_string()),
        );
    client
        .post(serve.url("/outcome"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// `GET path` on `serve`: the body as text.
async fn page(client: &reqwest::Client, serve: &Serve, path: &str) -> String {
    let resp = client.get(serve.url(path)).send().await.unwrap();
    resp.text().await.unwrap()
}

/// `GET path` on `serve`: status and JSON body.
async fn get(client: &reqwest::Client, serve: &Serve, path: &str) -> (u16, Value) {
    json_of(client.get(serve.url(path)).send().await.unwrap()).await
}

/// `POST path` on `serve`, with `body` as JSON: status and JSON body.
async fn post(
    client: &reqwest::Client,
    serve: &Serve,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.post(serve.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    json_of(req.send().await.unwrap()).await
}

/// The ids of the runs `serve`'s API finds for `search`.
async fn found(client: &reqwest::Client, serve: &Serve, search: &str) -> Vec<String> {
    let (status, list) = get(client, serve, &format!("/api/v1/runs?search={search}")).await;
    assert_eq!(status, 200, "{list:#}");
    list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// What an operator does every day, through the API of one instance and the command line,
/// seen by the other instance (`b` may be `a`): pause a scheduled flow (its ticks are
/// recorded `paused` and run nothing, run-now and `ferry run` are refused, the flow list
/// says who paused it and why), resume it from the command line (the next tick moves the
/// file); pause a REST flow from the command line (a delivery gets `503 paused` with
/// `Retry-After`, nothing is recorded), resume it through the API (the delivery runs); find
/// the run by its tracked event id and by a part of its file's name, from either instance
/// and the command line; a paused child flow fails the run that calls it, saying why.
async fn operate(project: &Project, a: &Serve, b: &Serve, history: &[&str]) {
    let client = reqwest::Client::new();
    // every command but `runs` reads the flows
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        if args[0] != "runs" {
            all.extend(["--flows", "flows"]);
        }
        all.extend(history);
        ferry(project.path(), &all)
    };

    // pause the scheduled mover through A's API, with a reason
    let (status, paused) = post(
        &client,
        a,
        "/api/v1/flows/MOVER/pause",
        Some(serde_json::json!({ "reason": "DACS maintenance" })),
    )
    .await;
    assert_eq!(status, 200, "{paused:#}");
    assert_eq!(
        (&paused["paused"], &paused["paused_by"], &paused["reason"]),
        (
            &Value::Bool(true),
            &Value::from("anonymous"),
            &Value::from("DACS maintenance")
        )
    );
    let paused_at = paused["paused_at"].as_str().unwrap().to_string();
    project.drop_source("IN_001.csv", b"id\n1\n");
    // ticks go by: recorded paused, nothing runs, the file stays
    wait_for(Duration::from_secs(10), "paused ticks", || async {
        let (_, ticks) = get(&client, b, "/api/v1/ticks?flow=MOVER").await;
        ticks["ticks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "paused" && t["tick_at"].as_str() > Some(&paused_at))
            .count()
            >= 2
    })
    .await;
    let (_, ticks) = get(&client, b, "/api/v1/ticks?flow=MOVER").await;
    let paused_tick = ticks["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["status"] == "paused")
        .unwrap();
    assert!(paused_tick["run_id"].is_null(), "{paused_tick:#}");
    assert!(
        paused_tick["note"]
            .as_str()
            .unwrap()
            .contains("flow 'MOVER' is paused (by anonymous at "),
        "{paused_tick:#}"
    );
    let (_, runs) = get(
        &client,
        b,
        &format!("/api/v1/runs?flow=MOVER&since={paused_at}"),
    )
    .await;
    // a tick claimed a moment before the pause may have started a run: none after it
    assert!(
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["started_at"].as_str() <= Some(paused_tick["tick_at"].as_str().unwrap())),
        "{runs:#}"
    );
    assert!(project.listing("src").contains_key("IN_001.csv"));
    let (status, refused) = post(&client, b, "/api/v1/flows/MOVER/runs", None).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (409, &Value::from("paused"))
    );
    let out = cli(&["run", "MOVER"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("error: flow 'MOVER' is paused (by anonymous at "),
        "{}",
        text(&out)
    );
    let (_, flows) = get(&client, b, "/api/v1/flows").await;
    let mover = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "MOVER")
        .unwrap();
    assert_eq!(
        (&mover["paused"], &mover["paused_at"], &mover["reason"]),
        (
            &Value::Bool(true),
            &Value::from(paused_at.as_str()),
            &Value::from("DACS maintenance")
        )
    );

    // resume from the command line: the next tick moves the file
    let out = cli(&["resume", "MOVER"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!(
            "flow MOVER resumed (paused by anonymous at {paused_at})"
        )),
        "{}",
        text(&out)
    );
    let expected: BTreeMap<String, Vec<u8>> =
        [("IN_001.csv".to_string(), b"id\n1\n".to_vec())].into();
    wait_for(
        Duration::from_secs(15),
        "the file moved after resume",
        || async { project.all_moved(&expected) },
    )
    .await;

    // pause the REST flow from the command line: deliveries wait at the sender
    let out = cli(&["pause", "TRACKED", "--reason", "OUAI bucket migration"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let r = deliver_outcome(&client, a, "EV00042", "Outcome_4011.csv").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "60");
    let (_, body) = json_of(r).await;
    assert_eq!(body["error"]["code"], "paused", "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OUAI bucket migration"),
        "{body:#}"
    );
    let (_, runs) = get(&client, b, "/api/v1/runs?flow=TRACKED").await;
    assert_eq!(runs["runs"], serde_json::json!([]), "nothing was accepted");
    let (status, resumed) = post(&client, b, "/api/v1/flows/TRACKED/resume", None).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["was_paused"], true);
    let (status, accepted) =
        json_of(deliver_outcome(&client, a, "EV00042", "Outcome_4011.csv").await).await;
    assert_eq!(status, 202, "{accepted:#}");
    let run_id = accepted["run_id"].as_str().unwrap().to_string();
    let run = finished_run(&client, a, &run_id).await;
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        run["tracked"],
        serde_json::json!([{ "name": "eventId", "value": "EV00042" }])
    );
    assert_eq!(
        project.listing("inbox").get("Outcome_4011.csv"),
        Some(&b"event,kw\nEV00042,42\n".to_vec())
    );

    // found by its event id (exactly) and by a part of its file's name (any case)
    assert_eq!(
        found(&client, b, "EV00042").await,
        std::slice::from_ref(&run_id)
    );
    assert_eq!(
        found(&client, b, "outcome_4011").await,
        std::slice::from_ref(&run_id)
    );
    assert!(found(&client, b, "ev00042").await.is_empty());
    assert!(found(&client, b, "EV0004").await.is_empty());
    let out = cli(&["runs", "--search", "EV00042", "--format", "json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], run_id.as_str(), "{listed:#}");
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // a paused child flow fails the run that calls it, saying why
    let (status, _) = post(&client, a, "/api/v1/flows/KEEPER/pause", None).await;
    assert_eq!(status, 200);
    let (status, accepted) =
        json_of(deliver_outcome(&client, b, "EV00043", "Outcome_4012.csv").await).await;
    assert_eq!(status, 202, "{accepted:#}");
    let failed = finished_run(&client, b, accepted["run_id"].as_str().unwrap()).await;
    assert_eq!(failed["outcome"], "failed", "{failed:#}");
    assert!(
        failed["failure"]["message"].as_str().unwrap().starts_with(
            "cannot call child flow 'KEEPER': flow 'KEEPER' is paused (by anonymous at "
        ),
        "{failed:#}"
    );
    assert!(!project.listing("inbox").contains_key("Outcome_4012.csv"));
    let out = cli(&["resume", "KEEPER"]).await;
    assert!(out.status.success(), "{}", text(&out));

    // the monitoring page: a pause pressed on one instance shows on the other, whose
    // Resume ends it; the search box finds the run
    let nofollow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = |serve: &Serve, path: &str, body: &'static str| {
        nofollow
            .post(serve.url(path))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = form(a, "/ui/flows/RECEIVER/pause", "reason=inbox+full")
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let dashboard = page(&client, b, "/ui").await;
    let row = dashboard
        .split("data-testid=\"flow-row\" data-flow=\"RECEIVER\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap()
        .to_string();
    assert!(
        row.contains("data-testid=\"pause-reason\">inbox full</span>"),
        "{row}"
    );
    assert!(row.contains("data-testid=\"resume\""), "{row}");
    let r = form(b, "/ui/flows/RECEIVER/resume", "").await.unwrap();
    assert_eq!(r.status(), 303);
    let (_, flows) = get(&client, a, "/api/v1/flows").await;
    let receiver = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "RECEIVER")
        .unwrap();
    assert_eq!(receiver["paused"], false, "{receiver:#}");
    let page = page(&client, a, "/ui/runs?search=Outcome_4011").await;
    assert_eq!(page.matches("data-testid=\"run-row\"").count(), 1, "{page}");
    assert!(page.contains(&format!("data-run-id=\"{run_id}\"")));

    // unknown flows are refused, with the likely one
    let (status, body) = post(&client, a, "/api/v1/flows/MOVR/pause", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &Value::from("unknown_flow"))
    );
    let out = cli(&["pause", "MOVR"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown flow 'MOVR' (did you mean 'MOVER'?)"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_and_search_on_sqlite() {
    let project = Project::with_peer(Duration::from_millis(1));
    let a = Serve::start(&project, "a", None, &[]);
    let data = project.path().join("data/a");
    let data = data.to_str().unwrap();
    operate(&project, &a, &a, &["--data", data]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_and_search_on_two_instances_sharing_postgres() {
    let (pg, url, project) = on_postgres("operate", Duration::from_millis(1));
    let a = Serve::start(&project, "a", Some(&url), &[]);
    let b = Serve::start(&project, "b", Some(&url), &[]);
    operate(&project, &a, &b, &["--database-url", &url]).await;
    drop((a, b, pg));
}
