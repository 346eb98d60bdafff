//! What several `ferry serve` instances sharing one database coordinate through: instance
//! heartbeats (a crashed instance's runs are recognised and marked interrupted), leases
//! (a named lock that expires unless renewed) and schedule ticks (each tick of a flow is
//! claimed by exactly one instance, through the table's primary key).
//!
//! Every statement is plain SQL that SQLite and PostgreSQL both run, so one instance on the
//! embedded SQLite store goes through the same code. Times in leases and heartbeats are the
//! instances' clocks in milliseconds since the epoch: keep the hosts' clocks in sync (NTP),
//! and keep lease times well above the skew.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row as _;

use super::store::now;
use super::{HistoryError, Outcome, Store};

/// A server instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// When it started.
    pub started_at: String,
    /// Its last heartbeat (ms since the epoch).
    pub heartbeat_ms: i64,
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
}

impl TickStatus {
    fn as_str(self) -> &'static str {
        match self {
            TickStatus::Claimed => "claimed",
            TickStatus::Started => "started",
            TickStatus::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Result<TickStatus, HistoryError> {
        Ok(match s {
            "claimed" => TickStatus::Claimed,
            "started" => TickStatus::Started,
            "skipped" => TickStatus::Skipped,
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

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn tick_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// This store handle, with the runs it begins owned by server instance `instance`.
    pub fn owned_by(&self, instance: &str) -> Store {
        let mut s = self.clone();
        s.instance = Some(instance.to_string());
        s
    }

    /// Registers (or refreshes) instance `id` with a heartbeat now.
    pub async fn register_instance(&self, id: &str, host: &str) -> Result<(), HistoryError> {
        sqlx::query(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
        )
        .bind(id.to_string())
        .bind(host.to_string())
        .bind(i64::from(std::process::id()))
        .bind(now())
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Refreshes instance `id`'s heartbeat. An instance that another took for dead (its
    /// heartbeats did not reach the store for the stale time) was forgotten by
    /// [`Store::mark_orphaned_runs`]: it is registered again, else its later runs would
    /// never be recognised as orphaned should it die.
    pub async fn heartbeat(&self, id: &str, host: &str) -> Result<(), HistoryError> {
        self.register_instance(id, host).await
    }

    /// Forgets instance `id` (a clean shutdown) and the leases it holds.
    pub async fn remove_instance(&self, id: &str) -> Result<(), HistoryError> {
        sqlx::query("DELETE FROM leases WHERE holder = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Known instances, most recent heartbeat first.
    pub async fn instances(&self) -> Result<Vec<Instance>, HistoryError> {
        let rows = sqlx::query(
            "SELECT id, host, pid, started_at, heartbeat_ms FROM instances
             ORDER BY heartbeat_ms DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Instance {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_ms: r.try_get("heartbeat_ms")?,
                })
            })
            .collect()
    }

    /// Marks `interrupted` every run still `running` whose instance has had no heartbeat
    /// for `stale` (it crashed or was killed), then forgets such instances. Returns how
    /// many runs. Runs begun outside a server (no instance) are left alone.
    pub async fn mark_orphaned_runs(&self, stale: Duration) -> Result<usize, HistoryError> {
        let cutoff = millis(Utc::now()) - ttl_ms(stale);
        let done = sqlx::query(
            "UPDATE runs SET outcome = $1, finished_at = $2,
                error_message = 'the ferry instance running it stopped'
             WHERE outcome = $3
               AND instance IN (SELECT id FROM instances WHERE heartbeat_ms < $4)",
        )
        .bind(Outcome::Interrupted.as_str())
        .bind(now())
        .bind(Outcome::Running.as_str())
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM instances WHERE heartbeat_ms < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    /// Marks run `run_id` `interrupted` if it is still `running` (a shutdown deadline
    /// passed while it ran). Returns whether it was.
    pub async fn mark_interrupted(&self, run_id: &str, why: &str) -> Result<bool, HistoryError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = $1, finished_at = $2, error_message = $3
             WHERE id = $4 AND outcome = $5",
        )
        .bind(Outcome::Interrupted.as_str())
        .bind(now())
        .bind(why.to_string())
        .bind(run_id.to_string())
        .bind(Outcome::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Takes lease `name` for `holder` for `ttl`, if it is free or expired. Returns whether
    /// `holder` now holds it. A lease `holder` already holds is not taken again: the runs of
    /// one instance exclude each other too (a tick or "run now" while the instance's own
    /// run of the flow is going is refused); the holder extends it with
    /// [`Store::renew_lease`].
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, HistoryError> {
        let now = millis(Utc::now());
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                SET holder = excluded.holder, expires_ms = excluded.expires_ms
                WHERE leases.expires_ms < $4",
        )
        .bind(name.to_string())
        .bind(holder.to_string())
        .bind(now.saturating_add(ttl_ms(ttl)))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Extends `holder`'s lease `name` by `ttl` from now. Returns false when `holder` lost it.
    pub async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, HistoryError> {
        let done = sqlx::query("UPDATE leases SET expires_ms = $1 WHERE name = $2 AND holder = $3")
            .bind(millis(Utc::now()).saturating_add(ttl_ms(ttl)))
            .bind(name.to_string())
            .bind(holder.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives lease `name` up, if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), HistoryError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name.to_string())
            .bind(holder.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds lease `name`, if anyone holds it unexpired.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>, HistoryError> {
        let row = sqlx::query("SELECT holder FROM leases WHERE name = $1 AND expires_ms >= $2")
            .bind(name.to_string())
            .bind(millis(Utc::now()))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("holder")?),
            None => None,
        })
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
