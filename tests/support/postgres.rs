//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl
//! start` on a free loopback port with its socket in that directory, one database per
//! [`Postgres::database`] call, and `pg_ctl stop` on drop.
//!
//! The server binaries are looked up under `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package; `.ci/run` installs it), then on `PATH`; `FERRY_TEST_PG_BIN` names
//! another directory. PostgreSQL refuses to run as root, so when the tests run as root
//! (CI does) the cluster belongs to the `postgres` user and its commands run through
//! `runuser -u postgres --`. A test never skips for want of PostgreSQL: it fails and says how
//! to install it.

#![allow(dead_code)] // each test crate uses part of it
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The system user that owns the cluster when the tests run as root.
const PG_USER: &str = "postgres";
/// The cluster's superuser (trust authentication on loopback and the socket).
const SUPERUSER: &str = "ferry";

/// A running throwaway PostgreSQL cluster; stopped and deleted on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The server options `pg_ctl start` was given (for [`Postgres::start_again`]).
    options: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The directory holding `initdb`, `pg_ctl` and `createdb`, or a panic saying how to get it.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FERRY_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "FERRY_TEST_PG_BIN={} holds no initdb",
            dir.display()
        );
        return dir;
    }
    // Debian: /usr/lib/postgresql/<major>/bin; the highest major wins
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    {
        return dir;
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin \
         or on PATH: install them (Debian: `apt-get install -y postgresql`, as .ci/run does) \
         or point FERRY_TEST_PG_BIN at their directory"
    );
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

impl Postgres {
    /// Initialises and starts a cluster (about a second); panics with the server's log when
    /// it cannot.
    pub fn start() -> Postgres {
        let bin = pg_bin_dir();
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .tempdir()
            .unwrap();
        if as_postgres {
            let out = Command::new("chown")
                .args([&format!("{PG_USER}:"), &dir.path().display().to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chown {PG_USER} {}: {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            as_postgres,
            options: String::new(),
        };
        let data = pg.data_dir();
        pg.run_ok(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "-D",
                &data.display().to_string(),
            ],
        );
        // a port found free may be taken before the server binds it: try a few
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
                pg.port,
                pg.dir.path().display()
            );
            let out = pg.pg_ctl_start(&options);
            if out.status.success() {
                pg.options = options;
                return pg;
            }
            last = format!(
                "{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(pg.log_path()).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed:\n{last}");
    }

    fn pg_ctl_start(&self, options: &str) -> Output {
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "30",
                "-D",
                &self.data_dir().display().to_string(),
                "-l",
                &self.log_path().display().to_string(),
                "-o",
                options,
            ],
        )
    }

    /// Stops the server (fast shutdown: sessions are cut off), keeping its data: an outage.
    pub fn stop(&self) {
        let data = self.data_dir().display().to_string();
        self.run_ok(
            "pg_ctl",
            &["stop", "-m", "fast", "-w", "-t", "30", "-D", &data],
        );
    }

    /// Starts the server [`Postgres::stop`] stopped, on the same port with the same data.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start(&self.options);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// A new empty database `name`; returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.run_ok(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                name,
            ],
        );
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs server command `name` (as `postgres` when we are root), in the cluster directory.
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    fn run_ok(&self, name: &str, args: &[&str]) {
        let out = self.run(name, args);
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server log so far (for a failure message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The cluster's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.data_dir().display().to_string();
        let _ = self.run("pg_ctl", &["stop", "-m", "immediate", "-w", "-D", &data]);
    }
}
