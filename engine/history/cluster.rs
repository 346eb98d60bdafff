//! What the processes sharing a run history coordinate through: run owners, fenced leases
//! and schedule ticks.
//!
//! - **Owners.** Every process that runs flows (`ferry serve`, `ferry run`, `ferry
//!   resubmit`) registers an *incarnation* ([`Store::register`]): its instance name plus a
//!   unique start id, with host, pid, process start time and a heartbeat. The runs it begins
//!   record the incarnation. Opening a store ([`Store::sweep_dead_owners`]) marks the runs of
//!   dead incarnations `interrupted`, keeping what they recorded: an incarnation on this
//!   machine (same boot, same PID namespace) is dead as soon as its process is gone (pid and
//!   start time), any other once its heartbeat is older than its stale time. A new incarnation
//!   of an instance name interrupts the runs of the earlier ones at once (a restart).
//! - **Leases** (a named lock that expires unless renewed) with a **fencing token**: each
//!   change of hands increments the lease's epoch, and a renewal succeeds only for the
//!   incarnation and epoch that took it. A [`HeldLease`] renews itself in the background and
//!   is a [`Fence`]: it answers, from memory, whether the holder may still start a step —
//!   not after its deadline (the moment of the last successful renewal's *request*, plus
//!   the lease time), and never again once a renewal found the lease taken over.
//! - **Ticks**: each tick of a flow is claimed by exactly one instance, through the table's
//!   primary key.
//!
//! # Time
//!
//! Expiries and heartbeats are in the database server's clock (milliseconds since the
//! epoch), read in the statement that uses them, so the hosts' clocks need not agree. A lease
//! row's expiry is the holder's deadline plus a margin ([`lease_margin`], a fifth of the
//! lease): another process takes the lease only after that. The holder measures its
//! deadline on its own monotonic clock from *before* it sent the renewal, so it stops
//! starting steps before the database lets anybody take over, provided that clocks run at
//! the same rate and that the database server's clock does not jump forward by more than
//! the margin.
//!
//! Every statement is plain SQL that SQLite and PostgreSQL both run (only "now" differs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use super::store::{Backend, now};
use super::{HistoryError, Store};
use crate::run::{Fence, RunReport};

/// Heartbeats an owner may miss before it is taken for dead.
pub const STALE_HEARTBEATS: u32 = 6;
/// How often an owner heartbeats unless told otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// The margin another process waits beyond a lease's deadline before taking it over: a
/// fifth of the lease (6 s of the default 30 s).
pub fn lease_margin(ttl: Duration) -> Duration {
    ttl / 5
}

/// The lease that keeps two runs of flow `flow` from overlapping, whichever process runs
/// them.
pub fn flow_lease(flow: &str) -> String {
    format!("flow:{flow}")
}

/// A process registered as an owner of runs (an incarnation of an instance).
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// The instance name (`--instance`; `cli-<host>-<pid>` for a command).
    pub id: String,
    /// This incarnation: unique per process start.
    pub incarnation: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// When it started.
    pub started_at: String,
    /// Its last heartbeat (ms since the epoch, the database's clock).
    pub heartbeat_ms: i64,
}

/// This process as an owner: what its row in `owners` says.
#[derive(Debug)]
pub(super) struct Me {
    pub(super) id: String,
    pub(super) instance: String,
    host: String,
    pid: i64,
    pid_start: Option<i64>,
    locality: Option<String>,
    started_at: String,
    stale_ms: i64,
}

impl Me {
    fn new(instance: &str, stale: Duration) -> Me {
        let pid = std::process::id();
        Me {
            id: uuid::Uuid::now_v7().to_string(),
            instance: instance.to_string(),
            host: host_name(),
            pid: i64::from(pid),
            pid_start: process_start(pid).and_then(|t| i64::try_from(t).ok()),
            locality: locality(),
            started_at: now(),
            stale_ms: ms(stale),
        }
    }
}

/// Who holds a lease.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseHolder {
    /// Its instance name.
    pub instance: String,
    /// Its host, when it is registered.
    pub host: Option<String>,
    /// Its process id, when it is registered.
    pub pid: Option<i64>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.instance)?;
        if let (Some(host), Some(pid)) = (&self.host, self.pid) {
            write!(f, ", pid {pid} on host {host}")?;
        }
        Ok(())
    }
}

/// What became of a schedule tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TickStatus {
    /// Claimed; the run is starting.
    Claimed,
    /// A run started.
    Started,
    /// Skipped: the flow's previous run was still going.
    Skipped,
    /// Not run: the flow is paused.
    Paused,
}

impl TickStatus {
    fn as_str(self) -> &'static str {
        match self {
            TickStatus::Claimed => "claimed",
            TickStatus::Started => "started",
            TickStatus::Skipped => "skipped",
            TickStatus::Paused => "paused",
        }
    }

    fn parse(s: &str) -> Result<TickStatus, HistoryError> {
        Ok(match s {
            "claimed" => TickStatus::Claimed,
            "started" => TickStatus::Started,
            "skipped" => TickStatus::Skipped,
            "paused" => TickStatus::Paused,
            _ => {
                return Err(HistoryError::Corrupt {
                    what: "tick status",
                    value: s.to_string(),
                });
            }
        })
    }
}

/// A schedule tick.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Flow id.
    pub flow: String,
    /// The scheduled time (RFC 3339, UTC).
    pub tick_at: String,
    /// The instance that claimed it.
    pub instance: String,
    /// What became of it.
    pub status: TickStatus,
    /// The run it started.
    pub run_id: Option<String>,
    /// Why it was skipped.
    pub note: Option<String>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn tick_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// This machine's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ferry".into())
}

/// Where a pid means one process: this kernel's boot and this PID namespace (Linux). Two
/// owners with the same locality see each other's pids; `None` elsewhere.
fn locality() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// The start time of process `pid` (clock ticks since boot), `None` when there is no such
/// live process (gone, or a zombie).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses; fields after the
    // last ')' are numbered from 3 (state); starttime is field 22
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&("Z" | "X" | "x"))) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process of a registered owner on this machine still runs.
fn process_alive(pid: i64, start: Option<i64>) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    match (process_start(pid), start) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(now), Some(then)) => i64::try_from(now).is_ok_and(|n| n == then),
    }
}

/// Whether a database failure may pass (the server is down, restarting, busy): such
/// writes are retried.
fn transient(e: &HistoryError) -> bool {
    let HistoryError::Db(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => match db.code() {
            // PostgreSQL: connection exception, operator intervention (shutdown, starting
            // up), insufficient resources, transaction rollback (serialization, deadlock)
            Some(c) if ["08", "57", "53", "40"].iter().any(|p| c.starts_with(p)) => true,
            // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes
            Some(c) => c.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
            None => false,
        },
        _ => false,
    }
}

/// Why a dead owner's runs are interrupted.
enum Verdict {
    Alive,
    /// Its process is gone (seen on this machine).
    Gone,
    /// No heartbeat for this many milliseconds.
    Silent(i64),
}

impl Store {
    /// "Now" in the database's clock, milliseconds since the epoch, as SQL.
    fn now_ms(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// This store handle, with the runs it begins owned by a new incarnation of instance
    /// `instance` (registered by its first heartbeat or run; [`Store::register`] registers
    /// it at once). A handle already owned by `instance` is returned as it is.
    pub fn owned_by(&self, instance: &str) -> Store {
        if self.owner.as_ref().is_some_and(|m| m.instance == instance) {
            return self.clone();
        }
        let mut s = self.clone();
        s.owner = Some(Arc::new(Me::new(
            instance,
            DEFAULT_HEARTBEAT.saturating_mul(STALE_HEARTBEATS),
        )));
        s
    }

    /// Registers this process as a new incarnation of instance `instance`, heartbeating
    /// every `heartbeat` (it is taken for dead after [`STALE_HEARTBEATS`] missed ones, or at
    /// once when its process is seen gone). The runs of earlier incarnations of the same
    /// name are marked `interrupted` now: an instance name belongs to one process at a time.
    /// Returns the handle whose runs and leases this incarnation owns.
    pub async fn register(
        &self,
        instance: &str,
        heartbeat: Duration,
    ) -> Result<Store, HistoryError> {
        let mut owned = self.clone();
        owned.owner = Some(Arc::new(Me::new(
            instance,
            heartbeat.saturating_mul(STALE_HEARTBEATS),
        )));
        owned.heartbeat().await?;
        let n = owned.retire_earlier_incarnations().await?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                %instance,
                "runs of an earlier process of this instance are recorded as interrupted"
            );
        }
        Ok(owned)
    }

    /// The incarnation owning this handle's runs, if any.
    pub fn owner_id(&self) -> Option<&str> {
        self.owner.as_ref().map(|m| m.id.as_str())
    }

    /// Records that this handle's incarnation is alive (registering it again if another
    /// process took it for dead meanwhile: else its later runs would never be recognised
    /// as orphaned should it die). A handle without owner does nothing.
    pub async fn heartbeat(&self) -> Result<(), HistoryError> {
        let Some(me) = &self.owner else {
            return Ok(());
        };
        let mut conn = self.pool.acquire().await?;
        heartbeat_on(&mut conn, me, self.now_ms()).await
    }

    /// What [`Store::heartbeat`] writes, to write it inside another transaction: this
    /// handle's owner and the database's clock expression.
    pub(super) fn heartbeat_parts(&self) -> Option<(Arc<Me>, &'static str)> {
        self.owner.clone().map(|me| (me, self.now_ms()))
    }

    /// Heartbeats every `every` in the background until the returned token is cancelled
    /// (a failed heartbeat is logged and tried again at the next).
    pub fn keep_alive(&self, every: Duration) -> CancellationToken {
        let token = CancellationToken::new();
        let stop = token.clone();
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                if let Err(e) = store.heartbeat().await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        });
        token
    }

    /// Deregisters this handle's incarnation (a clean exit): gives its leases up, records
    /// its runs still `running` as interrupted, and forgets it.
    pub async fn deregister(&self) -> Result<(), HistoryError> {
        let Some(me) = &self.owner else {
            return Ok(());
        };
        self.interrupt_runs_of(&me.id, "ferry stopped before the run ended")
            .await?;
        sqlx::query("UPDATE leases SET expires_ms = 0 WHERE owner = $1")
            .bind(me.id.clone())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM owners WHERE id = $1")
            .bind(me.id.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Registered owners, most recent heartbeat first.
    pub async fn instances(&self) -> Result<Vec<Instance>, HistoryError> {
        let rows = sqlx::query(
            "SELECT id, instance, host, pid, started_at, heartbeat_ms FROM owners
             ORDER BY heartbeat_ms DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Instance {
                    id: r.try_get("instance")?,
                    incarnation: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_ms: r.try_get("heartbeat_ms")?,
                })
            })
            .collect()
    }

    /// Marks owner `owner`'s runs still `running` interrupted (keeping the counters and
    /// progress they recorded). Returns how many.
    async fn interrupt_runs_of(&self, owner: &str, why: &str) -> Result<u64, HistoryError> {
        super::store::stop_runs(&self.pool, "owner = $4", &[owner], why).await
    }

    /// The runs of earlier incarnations of this handle's instance name are interrupted
    /// (unless such an incarnation still runs on this machine: then the name is shared by
    /// mistake, and it is left alone); leases of those seen gone are given up.
    async fn retire_earlier_incarnations(&self) -> Result<u64, HistoryError> {
        let Some(me) = &self.owner else {
            return Ok(0);
        };
        let here = locality();
        let rows = sqlx::query(
            "SELECT id, host, pid, pid_start, locality FROM owners WHERE instance = $1 AND id <> $2",
        )
        .bind(me.instance.clone())
        .bind(me.id.clone())
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for r in rows {
            let id: String = r.try_get("id")?;
            let host: String = r.try_get("host")?;
            let pid: i64 = r.try_get("pid")?;
            let local = here.is_some() && r.try_get::<Option<String>, _>("locality")? == here;
            if local {
                if process_alive(pid, r.try_get("pid_start")?) {
                    tracing::warn!(
                        instance = %me.instance,
                        pid,
                        "another live ferry process uses this instance name; give each its own --instance"
                    );
                    continue;
                }
                sqlx::query("UPDATE leases SET expires_ms = 0 WHERE owner = $1")
                    .bind(id.clone())
                    .execute(&self.pool)
                    .await?;
            }
            let why = format!(
                "the ferry instance running it stopped: instance '{}' restarted (its earlier process, pid {pid} on host {host}, is gone)",
                me.instance
            );
            n += self.interrupt_runs_of(&id, &why).await?;
            sqlx::query("DELETE FROM owners WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        // runs recorded under this name before owners were incarnations
        let done = super::store::stop_runs(
            &self.pool,
            "owner IS NULL AND instance = $4",
            &[&me.instance],
            "the ferry instance running it stopped (it restarted)",
        )
        .await?;
        Ok(n + done)
    }

    /// Marks `interrupted` the runs still `running` of every dead owner — one on this
    /// machine whose process is gone, or any whose heartbeat is older than its stale time —
    /// keeping what they recorded, and forgets those owners (the leases of owners seen gone
    /// are given up; those of silent ones expire by themselves, as they may still run).
    /// Returns how many runs. Runs begun without an owner are left alone.
    pub async fn sweep_dead_owners(&self) -> Result<usize, HistoryError> {
        let here = locality();
        let sql = format!(
            "SELECT id, instance, host, pid, pid_start, locality, heartbeat_ms, stale_ms,
                {} AS now_ms
             FROM owners",
            self.now_ms()
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mine = self.owner_id();
        let mut n = 0u64;
        for r in rows {
            let id: String = r.try_get("id")?;
            if Some(id.as_str()) == mine {
                continue;
            }
            let instance: String = r.try_get("instance")?;
            let host: String = r.try_get("host")?;
            let pid: i64 = r.try_get("pid")?;
            let heartbeat: i64 = r.try_get("heartbeat_ms")?;
            let silent = r.try_get::<i64, _>("now_ms")? - heartbeat;
            let local = here.is_some() && r.try_get::<Option<String>, _>("locality")? == here;
            let verdict = if local {
                if process_alive(pid, r.try_get("pid_start")?) {
                    Verdict::Alive
                } else {
                    Verdict::Gone
                }
            } else if silent > r.try_get::<i64, _>("stale_ms")? {
                Verdict::Silent(silent)
            } else {
                Verdict::Alive
            };
            let why = match verdict {
                Verdict::Alive => continue,
                Verdict::Gone => format!(
                    "the ferry instance running it stopped: instance '{instance}' (pid {pid} on host {host}) is gone"
                ),
                Verdict::Silent(ms) => format!(
                    "the ferry instance running it stopped: instance '{instance}' (pid {pid} on host {host}) sent no heartbeat for {} s",
                    ms / 1000
                ),
            };
            n += self.interrupt_runs_of(&id, &why).await?;
            if matches!(verdict, Verdict::Gone) {
                sqlx::query("UPDATE leases SET expires_ms = 0 WHERE owner = $1")
                    .bind(id.clone())
                    .execute(&self.pool)
                    .await?;
            }
            // unless it heartbeat meanwhile
            sqlx::query("DELETE FROM owners WHERE id = $1 AND heartbeat_ms = $2")
                .bind(id)
                .bind(heartbeat)
                .execute(&self.pool)
                .await?;
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Marks run `run_id` `interrupted` if it is still `running` (a shutdown deadline
    /// passed while it ran; `abandoned` if its trigger input was never kept). Returns
    /// whether it was.
    pub async fn mark_interrupted(&self, run_id: &str, why: &str) -> Result<bool, HistoryError> {
        Ok(super::store::stop_runs(&self.pool, "id = $4", &[run_id], why).await? > 0)
    }

    /// Records how a begun run ended like [`Store::finish`], trying again while the
    /// database is unreachable (with backoff, up to 5 s between tries) until it is written:
    /// a run that finished during an outage is recorded finished once the database is back.
    /// A failure that is not an outage is returned at once.
    pub async fn finish_retrying(&self, report: &RunReport) -> Result<(), HistoryError> {
        let mut pause = Duration::from_millis(250);
        let mut tries = 0u32;
        loop {
            match self.finish(report).await {
                Ok(()) => {
                    if tries > 0 {
                        tracing::info!(run_id = %report.run_id, tries, "the run's end is recorded");
                    }
                    return Ok(());
                }
                Err(e) if transient(&e) => {
                    if tries.is_multiple_of(20) {
                        tracing::warn!(run_id = %report.run_id, error = %e, "cannot record the run's end yet; trying again until the run history answers");
                    }
                    tries += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn me(&self) -> Result<&Me, HistoryError> {
        self.owner.as_deref().ok_or_else(|| {
            HistoryError::Invalid("leases are taken by a registered owner (Store::register)".into())
        })
    }

    /// Takes lease `name` for this handle's incarnation for `ttl` (plus [`lease_margin`]
    /// before anybody else may take it), if it is free or expired. Returns the fencing
    /// token (the lease's epoch, one more than the last holder's) when it is now held. A
    /// lease this incarnation already holds is not taken again: its runs exclude each other
    /// too.
    pub async fn try_lease(&self, name: &str, ttl: Duration) -> Result<Option<i64>, HistoryError> {
        let me = self.me()?;
        let now = self.now_ms();
        let sql = format!(
            "INSERT INTO leases (name, holder, owner, expires_ms, epoch)
             VALUES ($1, $2, $3, {now} + $4, 1)
             ON CONFLICT (name) DO UPDATE
                SET holder = excluded.holder, owner = excluded.owner,
                    expires_ms = excluded.expires_ms, epoch = leases.epoch + 1
                WHERE leases.expires_ms < {now}
             RETURNING epoch"
        );
        let row = sqlx::query(&sql)
            .bind(name.to_string())
            .bind(me.instance.clone())
            .bind(me.id.clone())
            .bind(ms(ttl + lease_margin(ttl)))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("epoch")?),
            None => None,
        })
    }

    /// Extends lease `name` by `ttl` from now if this incarnation still holds it under
    /// fencing token `epoch`; returns the token, `None` when the lease changed hands.
    pub async fn renew_lease(
        &self,
        name: &str,
        epoch: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, HistoryError> {
        let me = self.me()?;
        let sql = format!(
            "UPDATE leases SET expires_ms = {} + $1
             WHERE name = $2 AND owner = $3 AND epoch = $4
             RETURNING epoch",
            self.now_ms()
        );
        let row = sqlx::query(&sql)
            .bind(ms(ttl + lease_margin(ttl)))
            .bind(name.to_string())
            .bind(me.id.clone())
            .bind(epoch)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("epoch")?),
            None => None,
        })
    }

    /// Gives lease `name` up if this incarnation holds it under `epoch` (it is free at once;
    /// its epoch stays, so the next holder's token is higher).
    pub async fn release_lease(&self, name: &str, epoch: i64) -> Result<(), HistoryError> {
        let me = self.me()?;
        sqlx::query(
            "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(name.to_string())
        .bind(me.id.clone())
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Who holds lease `name`, if anyone holds it unexpired.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>, HistoryError> {
        let sql = format!(
            "SELECT l.holder, o.host, o.pid FROM leases l LEFT JOIN owners o ON o.id = l.owner
             WHERE l.name = $1 AND l.expires_ms >= {}",
            self.now_ms()
        );
        let row = sqlx::query(&sql)
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(LeaseHolder {
                instance: r.try_get("holder")?,
                host: r.try_get("host")?,
                pid: r.try_get("pid")?,
            }),
            None => None,
        })
    }

    /// Takes lease `name` ([`Store::try_lease`]) and keeps it renewed in the background (every
    /// third of `ttl`) until the [`HeldLease`] is released or dropped. `None`: it is held.
    pub async fn acquire_lease(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<HeldLease>, HistoryError> {
        let asked = Instant::now();
        Ok(self
            .try_lease(name, ttl)
            .await?
            .map(|epoch| HeldLease::start(self.clone(), name, epoch, ttl, asked)))
    }

    /// Like [`Store::acquire_lease`], trying again every half second (or a tenth of the
    /// lease, if shorter) for up to `wait` while another process holds it.
    pub async fn acquire_lease_within(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<HeldLease>, HistoryError> {
        let deadline = Instant::now() + wait;
        let every = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            if let Some(held) = self.acquire_lease(name, ttl).await? {
                return Ok(Some(held));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(every.min(left)).await;
        }
    }

    /// Claims tick `at` of `flow` for `instance`. Exactly one claim of a tick succeeds,
    /// whichever instance makes it first.
    pub async fn claim_tick(
        &self,
        flow: &str,
        at: DateTime<Utc>,
        instance: &str,
    ) -> Result<bool, HistoryError> {
        let done = sqlx::query(
            "INSERT INTO ticks (flow, tick_at, instance, status) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, tick_at) DO NOTHING",
        )
        .bind(flow.to_string())
        .bind(tick_key(at))
        .bind(instance.to_string())
        .bind(TickStatus::Claimed.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records what became of a claimed tick.
    pub async fn settle_tick(
        &self,
        flow: &str,
        at: DateTime<Utc>,
        status: TickStatus,
        run_id: Option<&str>,
        note: Option<&str>,
    ) -> Result<(), HistoryError> {
        sqlx::query(
            "UPDATE ticks SET status = $1, run_id = $2, note = $3 WHERE flow = $4 AND tick_at = $5",
        )
        .bind(status.as_str())
        .bind(run_id.map(str::to_string))
        .bind(note.map(str::to_string))
        .bind(flow.to_string())
        .bind(tick_key(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ticks, newest first: of `flow` (all flows when `None`), at most `limit`.
    pub async fn ticks(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Tick>, HistoryError> {
        let rows = match flow {
            Some(f) => {
                sqlx::query(
                    "SELECT flow, tick_at, instance, status, run_id, note FROM ticks
                     WHERE flow = $1 ORDER BY tick_at DESC LIMIT $2",
                )
                .bind(f.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT flow, tick_at, instance, status, run_id, note FROM ticks
                     ORDER BY tick_at DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(Tick {
                    flow: r.try_get("flow")?,
                    tick_at: r.try_get("tick_at")?,
                    instance: r.try_get("instance")?,
                    status: TickStatus::parse(&status)?,
                    run_id: r.try_get("run_id")?,
                    note: r.try_get("note")?,
                })
            })
            .collect()
    }

    /// Deletes ticks older than `before`, in batches; returns how many.
    pub async fn purge_ticks(&self, before: DateTime<Utc>) -> Result<u64, HistoryError> {
        let done = sqlx::query("DELETE FROM ticks WHERE tick_at < $1")
            .bind(tick_key(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// A lease this process holds, renewed in the background every third of its time until it
/// is released or dropped. It is a run's [`Fence`] ([`HeldLease::fence`]).
#[derive(Debug)]
pub struct HeldLease {
    name: String,
    epoch: i64,
    fence: Arc<LeaseFence>,
    stop: CancellationToken,
    /// The renewal task (awaited on release, so that no renewal lands after it).
    renewal: Option<tokio::task::JoinHandle<()>>,
    store: Store,
}

/// The state the renewal keeps and [`Fence::check`] reads.
#[derive(Debug)]
struct LeaseFence {
    name: String,
    ttl: Duration,
    base: Instant,
    /// Milliseconds after `base` when the holder must stop starting steps.
    deadline_ms: AtomicU64,
    /// A renewal found the lease taken over.
    lost: AtomicBool,
}

impl LeaseFence {
    fn extend(&self, asked: Instant) {
        let at = (asked + self.ttl).saturating_duration_since(self.base);
        let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.deadline_ms.fetch_max(at, Ordering::SeqCst);
    }
}

impl Fence for LeaseFence {
    fn check(&self) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(format!(
                "another ferry process took the lease '{}' over",
                self.name
            ));
        }
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now >= self.deadline_ms.load(Ordering::SeqCst) {
            return Err(format!(
                "the lease '{}' lapsed: the run history did not answer for longer than the lease ({} s)",
                self.name,
                self.ttl.as_secs_f64()
            ));
        }
        Ok(())
    }
}

impl HeldLease {
    fn start(store: Store, name: &str, epoch: i64, ttl: Duration, asked: Instant) -> HeldLease {
        let fence = Arc::new(LeaseFence {
            name: name.to_string(),
            ttl,
            base: asked,
            deadline_ms: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        });
        fence.extend(asked);
        let stop = CancellationToken::new();
        let (keeper, token, lease) = (fence.clone(), stop.clone(), name.to_string());
        let renewer = store.clone();
        let renewal = tokio::spawn(async move {
            let regular = ttl / 3;
            let hurried = (ttl / 10).max(Duration::from_millis(50));
            let mut every = regular;
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                let asked = Instant::now();
                match renewer.renew_lease(&lease, epoch, ttl).await {
                    Ok(Some(_)) => {
                        keeper.extend(asked);
                        every = regular;
                    }
                    Ok(None) => {
                        keeper.lost.store(true, Ordering::SeqCst);
                        tracing::warn!(%lease, epoch, "lease taken over by another ferry process; the run stops before its next step");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%lease, error = %e, "cannot renew the lease; trying again");
                        every = hurried;
                    }
                }
            }
        });
        HeldLease {
            name: name.to_string(),
            epoch,
            fence,
            stop,
            renewal: Some(renewal),
            store,
        }
    }

    /// The fencing token: the lease's epoch when this process took it.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The fence a run holding this lease checks before every step.
    pub fn fence(&self) -> Arc<dyn Fence> {
        self.fence.clone()
    }

    /// Stops renewing and gives the lease up (a failure is logged: it then expires by
    /// itself).
    pub async fn release(mut self) {
        self.stop.cancel();
        // a renewal under way finishes first: landing after the release, it would hold the
        // flow for another lease time
        if let Some(renewal) = self.renewal.take() {
            let _ = renewal.await;
        }
        if let Err(e) = self.store.release_lease(&self.name, self.epoch).await {
            tracing::warn!(lease = %self.name, error = %e, "cannot release the lease (it expires by itself)");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Upserts owner `me`'s row with a fresh heartbeat (`now_ms`: the database's clock).
pub(super) async fn heartbeat_on(
    conn: &mut sqlx::AnyConnection,
    me: &Me,
    now_ms: &str,
) -> Result<(), HistoryError> {
    let sql = format!(
        "INSERT INTO owners (id, instance, host, pid, pid_start, locality, started_at,
            heartbeat_ms, stale_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, {now_ms}, $8)
         ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms"
    );
    sqlx::query(&sql)
        .bind(me.id.clone())
        .bind(me.instance.clone())
        .bind(me.host.clone())
        .bind(me.pid)
        .bind(me.pid_start)
        .bind(me.locality.clone())
        .bind(me.started_at.clone())
        .bind(me.stale_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("this process has a start time");
        assert!(process_alive(i64::from(me), i64::try_from(start).ok()));
        // the same pid with another start time is another process
        assert!(!process_alive(i64::from(me), i64::try_from(start + 1).ok()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(i64::from(pid), None));
        assert!(!process_alive(-1, None));
        assert!(locality().is_some_and(|l| l.contains("pid:[")));
    }

    #[test]
    fn outages_are_transient_and_mistakes_are_not() {
        let io = HistoryError::Db(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(transient(&io));
        assert!(transient(&HistoryError::Db(sqlx::Error::PoolTimedOut)));
        assert!(!transient(&HistoryError::Db(sqlx::Error::PoolClosed)));
        assert!(!transient(&HistoryError::Db(sqlx::Error::RowNotFound)));
        assert!(!transient(&HistoryError::UnknownRun("x".into())));
    }

    #[test]
    fn a_fence_holds_until_its_deadline_and_never_once_lost() {
        let asked = Instant::now();
        let fence = LeaseFence {
            name: flow_lease("F"),
            ttl: Duration::from_millis(200),
            base: asked,
            deadline_ms: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        };
        fence.extend(asked);
        assert_eq!(fence.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(250));
        let lapsed = fence.check().unwrap_err();
        assert!(lapsed.contains("'flow:F' lapsed"), "{lapsed}");
        // a renewal asked now extends it again
        fence.extend(Instant::now());
        assert_eq!(fence.check(), Ok(()));
        // an older renewal never shortens it
        fence.extend(asked);
        assert_eq!(fence.check(), Ok(()));
        fence.lost.store(true, Ordering::SeqCst);
        let lost = fence.check().unwrap_err();
        assert!(lost.contains("took the lease 'flow:F' over"), "{lost}");
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_lease() {
        assert_eq!(
            lease_margin(Duration::from_secs(30)),
            Duration::from_secs(6)
        );
    }
}
