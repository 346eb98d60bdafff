//! The cluster tests' rig: the flows they run (a mover on a schedule over local
//! directories, a REST receiver, a tracked flow and its child), a slow HTTP peer that keeps
//! runs long, the project directory, `ferry serve` as real processes, the `ferry` binary,
//! and the waits and checks over the run history that the tests share. Taken by
//! tests/cluster.rs with `#[path = "support/cluster.rs"] mod cluster;` beside
//! `#[path = "support/postgres.rs"] mod postgres;`.

#![allow(dead_code)] // the tests use most of it, not every test crate all of it
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ferry::history::{FileAction, Outcome, RunFilter, RunSummary, Store};
use serde_json::Value;

use crate::postgres::Postgres;

pub const FLOW: &str = "MOVER";
pub const PREFIX: &str = "IN_";
pub const SENT: &str = "SENT_";

/// A scheduled (every second) and manual flow: list `src/IN_*`, and for each file fetch it,
/// wait for the slow peer, put it to `dst`, rename the source `SENT_<name>`.
pub const MOVER: &str = r#"id: MOVER
name: Mover
version: "1"
trigger:
  schedule: { cron: "* * * * * *", timezone: UTC }
  manual: true
steps:
  - id: list
    list: { connection: files, location: src, prefix: IN_ }
  - id: nothing
    when: "steps.list.count == 0"
    end: { outcome: no_files }
  - id: files
    for_each:
      items: "steps.list.files"
      as: file
      steps:
        - id: fetch
          fetch: { connection: files, location: src, name: "{{ file.name }}" }
        - id: pause
          invoke:
            request: { connection: slow, method: GET, path: "/pause/{{ file.name }}" }
        - id: put
          invoke:
            put: { connection: files, location: dst, name: "{{ file.name }}", file: "{{ steps.fetch.path }}" }
        - id: mark_sent
          rename: { connection: files, location: src, from: "{{ file.name }}", to: "SENT_{{ file.name }}" }
"#;

/// A REST-triggered flow: the posted file goes to `inbox`.
pub const RECEIVER: &str = r#"id: RECEIVER
name: Receiver
version: "1"
trigger:
  rest:
    method: POST
    path: /receive
    parts:
      file: { kind: file }
steps:
  - id: put
    invoke:
      put: { connection: files, location: inbox, name: "{{ input.file.name }}", file: "{{ input.file.path }}" }
"#;

/// A REST-triggered flow tracked by its message's event id: it hands the posted file to
/// the child flow KEEPER, which puts it to `inbox`.
pub const TRACKED: &str = r#"id: TRACKED
name: Tracked
version: "1"
trigger:
  rest:
    method: POST
    path: /outcome
    parts:
      message: { kind: json }
      file: { kind: file }
track:
  eventId: "{{ input.message.eventId }}"
steps:
  - id: keep
    invoke:
      flow: KEEPER
      with: { name: "{{ input.file.name }}", file: "{{ input.file.path }}" }
"#;

/// A child flow: puts `params.file` to `inbox` as `params.name`.
pub const KEEPER: &str = r#"id: KEEPER
name: Keeper
version: "1"
params:
  name: {}
  file: {}
steps:
  - id: put
    invoke:
      put: { connection: files, location: inbox, name: "{{ params.name }}", file: "{{ params.file }}" }
"#;

// ---------------------------------------------------------------------------------------
// A slow HTTP peer

/// An HTTP server answering every request `200 ok` after a delay (one thread a connection).
pub struct SlowPeer {
    pub port: u16,
}

impl SlowPeer {
    pub fn start(delay: Duration) -> SlowPeer {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    std::thread::sleep(delay);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                });
            }
        });
        SlowPeer { port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

// ---------------------------------------------------------------------------------------
// The project and its directories

/// A flow directory (the mover and the receiver) over local directories `src`, `dst`,
/// `inbox` in one temp dir.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(slow_url: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["flows", "lookups", "files/src", "files/dst", "files/inbox"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(
            root.join("flows/connections.yaml"),
            format!(
                "connections:\n  files: {{ kind: local, root: {} }}\n  slow: {{ kind: http, base_url: \"{slow_url}\", timeout_secs: 60 }}\n",
                root.join("files").display()
            ),
        )
        .unwrap();
        std::fs::write(root.join("flows/mover.yaml"), MOVER).unwrap();
        std::fs::write(root.join("flows/receiver.yaml"), RECEIVER).unwrap();
        std::fs::write(root.join("flows/tracked.yaml"), TRACKED).unwrap();
        std::fs::write(root.join("flows/keeper.yaml"), KEEPER).unwrap();
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn files(&self, location: &str) -> PathBuf {
        self.dir.path().join("files").join(location)
    }

    /// Drops `name` into `src` atomically (written under another name, then renamed), so a
    /// listing never sees half a file.
    pub fn drop_source(&self, name: &str, bytes: &[u8]) {
        let tmp = self.files("src").join(format!(".arriving-{name}"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.files("src").join(name)).unwrap();
    }

    /// File names in `location`, with their bytes. A file renamed away between the listing
    /// and its read (an instance marking a source sent meanwhile) is left out.
    pub fn listing(&self, location: &str) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.files(location))
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                match std::fs::read(e.path()) {
                    Ok(bytes) => Some((e.file_name().into_string().unwrap(), bytes)),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                    Err(err) => panic!("{}: {err}", e.path().display()),
                }
            })
            .collect()
    }

    /// The flow directory over a [`SlowPeer`] answering after `delay`.
    pub fn with_peer(delay: Duration) -> Project {
        Project::new(&SlowPeer::start(delay).url())
    }

    /// Drops `n` files numbered from `first` into `src` (see [`files`]); returns them.
    pub fn drop_sources(&self, first: usize, n: usize) -> BTreeMap<String, Vec<u8>> {
        let dropped: BTreeMap<String, Vec<u8>> = files(first, n).into_iter().collect();
        for (name, bytes) in &dropped {
            self.drop_source(name, bytes);
        }
        dropped
    }

    /// The file names in `location`.
    pub fn names(&self, location: &str) -> BTreeSet<String> {
        self.listing(location).into_keys().collect()
    }

    /// The history on PostgreSQL at `url`, opened by the test (its spool under `check`).
    pub async fn store(&self, url: &str) -> Store {
        Store::open_postgres(url, &self.path().join("check"))
            .await
            .unwrap()
    }

    /// Waits until a first source is renamed `SENT_…`.
    pub async fn wait_sent_one(&self, within: Duration, what: &str) {
        wait_for(within, what, || async {
            self.listing("src").keys().any(|n| n.starts_with(SENT))
        })
        .await;
    }

    /// Waits until every expected file is moved (see [`Project::all_moved`]).
    pub async fn wait_all_moved(
        &self,
        expected: &BTreeMap<String, Vec<u8>>,
        within: Duration,
        what: &str,
    ) {
        wait_for(within, what, || async { self.all_moved(expected) }).await;
    }

    /// Whether every expected file is in `dst` and renamed in `src`, with nothing left.
    pub fn all_moved(&self, expected: &BTreeMap<String, Vec<u8>>) -> bool {
        let src = self.listing("src");
        let dst = self.listing("dst");
        expected.iter().all(|(name, bytes)| {
            dst.get(name) == Some(bytes) && src.contains_key(&format!("{SENT}{name}"))
        }) && !src.keys().any(|n| n.starts_with(PREFIX))
    }
}

/// `n` files numbered from `first`, each with distinct bytes.
pub fn files(first: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    (first..first + n)
        .map(|i| {
            (
                format!("{PREFIX}{i:03}.csv"),
                format!("id,value\n{i},{}\n", "x".repeat(i)).into_bytes(),
            )
        })
        .collect()
}

/// The names the sources of `expected` bear once sent.
pub fn sent_names(expected: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    expected.keys().map(|n| format!("{SENT}{n}")).collect()
}

/// Each name of `expected`, once.
pub fn once_each(expected: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, usize> {
    expected.keys().map(|n| (n.clone(), 1)).collect()
}

/// A throwaway PostgreSQL with the database `db` (and its URL), and the flow directory
/// over a [`SlowPeer`] answering after `delay`.
pub fn on_postgres(db: &str, delay: Duration) -> (Postgres, String, Project) {
    let pg = Postgres::start();
    let url = pg.database(db);
    (pg, url, Project::with_peer(delay))
}

// ---------------------------------------------------------------------------------------
// `ferry serve` processes

/// A running `ferry serve`; killed on drop.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    pub instance: String,
}

impl Serve {
    /// Starts `ferry serve` on `project` with data dir `data/<instance>`, on a port of its
    /// choosing, and waits until it listens.
    pub fn start(
        project: &Project,
        instance: &str,
        database_url: Option<&str>,
        extra: &[&str],
    ) -> Serve {
        let root = project.path();
        let data = root.join("data").join(instance);
        let log = root.join(format!("{instance}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("serve")
            .arg("--flows")
            .arg(root.join("flows"))
            .arg("--data")
            .arg(&data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--instance",
                instance,
                "--no-watch",
            ])
            .args(extra)
            .env_remove("FERRY_DATABASE_URL")
            .env("FERRY_DERMS_TRIGGER_USER", "derms")
            .env("FERRY_DERMS_TRIGGER_PASSWORD", "derms-secret")
            .env("FERRY_LOG", "ferry=info")
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        let child = cmd.spawn().unwrap();
        let mut serve = Serve {
            child,
            addr: String::new(),
            log,
            instance: instance.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = serve.log_text();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                serve.addr = rest.split_whitespace().next().unwrap().to_string();
                return serve;
            }
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("ferry serve {instance} exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "ferry serve {instance} does not listen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let out = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ferry serve {} still runs {within:?} after SIGTERM:\n{}",
                self.instance,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process dies without a word to the store.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to both instances; each must exit 0 within 20 s. Returns their logs.
pub fn terminate_both(a: &mut Serve, b: &mut Serve) -> String {
    let logs = format!("--- a\n{}\n--- b\n{}", a.log_text(), b.log_text());
    assert!(a.terminate(Duration::from_secs(20)).success(), "{logs}");
    assert!(b.terminate(Duration::from_secs(20)).success(), "{logs}");
    logs
}

/// The body of an answer that must be `202 Accepted`.
pub async fn accepted_body(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// Waits until no run of the flow is `running`.
pub async fn wait_none_running(store: &Store, within: Duration, what: &str) {
    wait_for(within, what, || async {
        runs_of(store, FLOW)
            .await
            .iter()
            .all(|r| r.outcome != Outcome::Running)
    })
    .await;
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `within`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

pub async fn runs_of(store: &Store, flow: &str) -> Vec<RunSummary> {
    let mut runs = store
        .list(&RunFilter {
            flow: Some(flow.into()),
            limit: Some(10_000),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    runs.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    runs
}

/// How often each file name was put and renamed, over `runs`.
pub async fn puts_and_renames(
    store: &Store,
    runs: &[RunSummary],
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (mut puts, mut renames) = (BTreeMap::new(), BTreeMap::new());
    for run in runs {
        let detail = store.get(&run.id).await.unwrap().unwrap();
        for f in detail.files {
            match f.action {
                FileAction::Put => *puts.entry(f.name).or_insert(0) += 1,
                FileAction::Renamed => *renames.entry(f.name).or_insert(0) += 1,
                FileAction::Fetched | FileAction::Skipped => {}
            }
        }
    }
    (puts, renames)
}

/// Asserts that no two of `runs` overlapped in time (each ended before the next began).
pub fn assert_no_overlap(runs: &[RunSummary]) {
    for pair in runs.windows(2) {
        let end = pair[0]
            .finished_at
            .as_deref()
            .unwrap_or_else(|| panic!("run {} never finished", pair[0].id));
        assert!(
            time(end) <= time(&pair[1].started_at),
            "runs overlap: {} ran {}..{end}, {} started {}",
            pair[0].id,
            pair[0].started_at,
            pair[1].id,
            pair[1].started_at
        );
    }
}

/// Makes instance `instance`'s processes look as if they ran on another machine (their pid
/// cannot be checked from here), so that only heartbeats and leases tell whether they live.
pub async fn elsewhere(url: &str, instance: &str) {
    let raw = sqlx::PgPool::connect(url).await.unwrap();
    let done = sqlx::query("UPDATE owners SET locality = 'another-machine' WHERE instance = $1")
        .bind(instance)
        .execute(&raw)
        .await
        .unwrap();
    assert!(
        done.rows_affected() > 0,
        "instance {instance} is not registered"
    );
    raw.close().await;
}

/// Runs the `ferry` binary in `dir` (off the async runtime's threads) and waits for it.
pub fn ferry(
    dir: &Path,
    args: &[&str],
) -> impl std::future::Future<Output = std::process::Output> + use<> {
    let (dir, args) = (
        dir.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let child = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .env_remove("FERRY_DATABASE_URL")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    async move { child.await.unwrap() }
}

pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
