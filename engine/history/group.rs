//! Group commit: the history's frequent writes — a delivery's record, a run's journal
//! batches, a run's end — are queued and written by one writer at a time, as many as are
//! waiting in one transaction. The group is first tried as a whole, without a savepoint
//! per write (each savepoint is two more statements, each a hand-off to the database's
//! connection); when one of its writes fails, the transaction is rolled back and the group
//! written again with each write in a savepoint of its own (the failing write is rolled
//! back alone and its caller told; the others commit). A write is therefore one that can
//! be written again: it borrows what it writes.
//!
//! A caller queues its write, then either finds a writer at work, whose next group takes
//! it, or becomes the writer: it takes everything queued (at most [`MAX_GROUP`]) and
//! commits it in a task of its own, so that a caller that goes away (a client that
//! disconnects) cuts no group short. Each caller returns once its write is committed:
//! what it acknowledges survives a killed process (SQLite in WAL mode at `synchronous =
//! NORMAL` writes its log at each commit and syncs it at checkpoints, so a power cut can
//! lose the last commits; PostgreSQL syncs each commit). Under load one commit covers many
//! writes; alone, a write is committed at once, without waiting for company.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::store::{Param, begin_write, insert_rows, insert_rows_ignoring};
use super::{HistoryError, Store};

/// The most writes one transaction takes.
pub(super) const MAX_GROUP: usize = 256;

/// A boxed write's future, borrowing the connection.
pub(super) type WriteFuture<'c> =
    Pin<Box<dyn Future<Output = Result<(), HistoryError>> + Send + 'c>>;

/// What the writes of one transaction share: whether this process's heartbeat is written
/// already (many writes of a group upsert it; once a transaction is enough).
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The owner's heartbeat is written in this transaction.
    pub heartbeat: bool,
}

/// The rows of one table a write inserts ([`Write::rows`]).
pub(super) struct TableRows {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    /// The conflict target of rows that may be there already (`ON CONFLICT … DO NOTHING`).
    pub ignoring: Option<&'static str>,
    pub rows: Vec<Vec<Param>>,
}

/// What a write that only inserts rows writes: the group inserts the rows of all such
/// writes together, table by table, in multi-row statements (a group of 16 deliveries is
/// four statements, not 64).
pub(super) struct Rows {
    /// The owner's heartbeat, written first.
    pub heartbeat: Option<(Arc<super::cluster::Me>, &'static str)>,
    /// In the order they are inserted (a table referenced by another first).
    pub tables: Vec<TableRows>,
}

/// One write of a group: it owns what it writes, and can write it again (a group that
/// failed as a whole is written again write by write).
pub(super) trait Write: Send + Sync + 'static {
    /// Writes on `conn`, inside the group's transaction.
    fn write<'c>(
        &'c self,
        conn: &'c mut sqlx::AnyConnection,
        shared: &'c mut Shared,
    ) -> WriteFuture<'c>;

    /// Its rows, when all it does is insert them (the group may insert them with others').
    fn rows(&self) -> Option<Rows> {
        None
    }
}

/// Inserts `rows`, after the heartbeat unless `shared` says it is written.
pub(super) async fn insert_all(
    conn: &mut sqlx::AnyConnection,
    rows: Rows,
    shared: &mut Shared,
) -> Result<(), HistoryError> {
    if let Some((me, now_ms)) = &rows.heartbeat
        && !shared.heartbeat
    {
        super::cluster::heartbeat_on(conn, me, now_ms).await?;
        shared.heartbeat = true;
    }
    for t in rows.tables {
        match t.ignoring {
            Some(key) => insert_rows_ignoring(conn, t.table, t.columns, key, t.rows).await?,
            None => insert_rows(conn, t.table, t.columns, t.rows).await?,
        }
    }
    Ok(())
}

struct Pending {
    write: Box<dyn Write>,
    done: oneshot::Sender<Result<(), HistoryError>>,
}

/// The queue of writes waiting for a group, and the writer's turn.
#[derive(Default)]
pub(super) struct Group {
    queue: Mutex<Vec<Pending>>,
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

/// An error told to every write of a group whose transaction failed as a whole.
fn shared(e: &HistoryError) -> HistoryError {
    HistoryError::Db(sqlx::Error::Io(std::io::Error::other(e.to_string())))
}

impl Store {
    /// Writes `write` in the next group commit; returns once it is committed.
    pub(super) async fn group_write(&self, write: Box<dyn Write>) -> Result<(), HistoryError> {
        let (done, mut answer) = oneshot::channel();
        self.group
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending { write, done });
        let stopped = || {
            Err(HistoryError::Invalid(
                "the history's writer stopped before the write was committed".into(),
            ))
        };
        loop {
            tokio::select! {
                biased;
                a = &mut answer => return a.unwrap_or_else(|_| stopped()),
                turn = self.group.writer.clone().lock_owned() => {
                    let batch: Vec<Pending> = {
                        let mut q = self.group.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        let n = q.len().min(MAX_GROUP);
                        q.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        // an earlier writer took this write and has answered (it answers
                        // before it gives up its turn)
                        drop(turn);
                        return answer.await.unwrap_or_else(|_| stopped());
                    }
                    let store = self.clone();
                    tokio::spawn(async move {
                        store.commit_group(batch).await;
                        drop(turn);
                    });
                }
            }
        }
    }

    /// Writes `batch` in one transaction, and tells each caller how its write ended: first
    /// as a whole; when a write fails, again with each write in a savepoint.
    async fn commit_group(&self, batch: Vec<Pending>) {
        let (writes, dones): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.write, p.done)).unzip();
        tracing::trace!(writes = writes.len(), "group commit");
        if writes.len() > 1 {
            match self.commit_whole(&writes).await {
                Ok(()) => {
                    for d in dones {
                        let _ = d.send(Ok(()));
                    }
                    return;
                }
                // a write failed, or the commit: each write on its own, in savepoints
                Err(e) => tracing::debug!(error = %e, writes = writes.len(),
                    "a group commit failed as a whole; writing it again write by write"),
            }
        }
        let results = self.commit_each(&writes).await;
        for (d, r) in dones.into_iter().zip(results) {
            let _ = d.send(r);
        }
    }

    /// Writes `writes` in one transaction without savepoints, and commits it; any failure
    /// rolls it all back.
    async fn commit_whole(&self, writes: &[Box<dyn Write>]) -> Result<(), HistoryError> {
        let mut tx = begin_write(&self.pool, self.backend).await?;
        let mut shared = Shared::default();
        // the rows of the writes that only insert rows, together
        let mut merged = Rows {
            heartbeat: None,
            tables: Vec::new(),
        };
        let mut others = Vec::new();
        for w in writes {
            let Some(rows) = w.rows() else {
                others.push(w);
                continue;
            };
            merged.heartbeat = merged.heartbeat.take().or(rows.heartbeat);
            for t in rows.tables {
                match merged.tables.iter_mut().find(|m| m.table == t.table) {
                    Some(m) => m.rows.extend(t.rows),
                    None => merged.tables.push(t),
                }
            }
        }
        insert_all(&mut tx, merged, &mut shared).await?;
        for w in others {
            w.write(&mut tx, &mut shared).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes `writes` in one transaction, each in a savepoint when there are several (a
    /// failing write is rolled back alone); returns how each ended.
    async fn commit_each(&self, writes: &[Box<dyn Write>]) -> Vec<Result<(), HistoryError>> {
        let all = |e: &HistoryError| writes.iter().map(|_| Err(shared(e))).collect();
        let mut tx = match begin_write(&self.pool, self.backend).await {
            Ok(tx) => tx,
            Err(e) => return all(&e),
        };
        let alone = writes.len() == 1;
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            // a write rolled back may have written the heartbeat: each writes its own
            let mut own = Shared::default();
            if alone {
                results.push(w.write(&mut tx, &mut own).await);
                continue;
            }
            if let Err(e) = sqlx::query("SAVEPOINT group_write").execute(&mut *tx).await {
                results.push(Err(e.into()));
                continue;
            }
            let r = w.write(&mut tx, &mut own).await;
            let end = if r.is_ok() {
                "RELEASE SAVEPOINT group_write"
            } else {
                "ROLLBACK TO SAVEPOINT group_write"
            };
            let ended = sqlx::query(end).execute(&mut *tx).await;
            // a rolled-back savepoint stays open: release it as well
            let ended = match ended {
                Ok(_) if r.is_err() => sqlx::query("RELEASE SAVEPOINT group_write")
                    .execute(&mut *tx)
                    .await
                    .map(|_| ()),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match ended {
                Ok(()) => results.push(r),
                Err(e) => {
                    // the transaction is in an unknown state: nothing of it commits
                    let e = HistoryError::from(e);
                    drop(tx);
                    return all(&e);
                }
            }
        }
        if results.iter().any(Result::is_ok) {
            if let Err(e) = tx.commit().await {
                let e = HistoryError::from(e);
                return results
                    .into_iter()
                    .map(|r| match r {
                        Ok(()) => Err(shared(&e)),
                        Err(own) => Err(own),
                    })
                    .collect();
            }
        } else {
            drop(tx);
        }
        results
    }
}
