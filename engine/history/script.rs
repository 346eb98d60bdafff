//! Statements sent to the database together.
//!
//! sqlx runs an SQLite connection on a thread of its own: each query is a hand-off to that
//! thread and back, and a journal write of five statements waited for five of them. A
//! [`Script`] sends its statements to SQLite as one multi-statement query (one hand-off);
//! PostgreSQL's protocol takes one statement with parameters per query, so there they go
//! one by one, as before.
//!
//! Each statement is written with its own placeholders, `$1` to `$n`. On SQLite a `$n` is a
//! parameter *named* `$n`, and sqlx binds the parameter named `$n` of every statement of a
//! query to the query's `n`-th value: the script renumbers each statement's placeholders
//! past those of the statements before it, so the statements keep their own numbering. The
//! statements given to a script hold `$` only in placeholders (they are generated here, and
//! name no literal with a `$` followed by a digit).

use super::HistoryError;
use super::store::Param;

/// The most values one SQLite query of a script binds; a longer script goes as several
/// queries (a value costs SQLite a look-up in its statement's list, not in the query's).
const MAX_SCRIPT_PARAMS: usize = 8_192;

/// Rows per multi-row INSERT, at most: statements of one size repeat, so a connection's
/// statement cache prepares each once; and SQLite's cost of named parameters (each one
/// looked up in the statement's list of them, when prepared and when bound) grows with the
/// square of their number (a 900-parameter statement cost ~2.4 million instructions to
/// prepare).
const MAX_ROWS: usize = 32;

/// Bound parameters per statement (SQLite's historical limit is 999).
const MAX_PARAMS: usize = 900;

/// Statements to run in order on one connection (inside the caller's transaction).
#[derive(Debug, Default)]
pub(super) struct Script {
    statements: Vec<(String, Vec<Param>)>,
}

impl Script {
    /// Adds `sql`, whose placeholders `$1` … `$n` take `params`.
    pub(super) fn push(&mut self, sql: impl Into<String>, params: Vec<Param>) {
        self.statements.push((sql.into(), params));
    }

    /// Adds multi-row INSERTs of `rows` into `table`, with `tail` after each statement's
    /// values (a conflict clause, or nothing).
    pub(super) fn insert(
        &mut self,
        table: &str,
        columns: &[&str],
        tail: &str,
        rows: Vec<Vec<Param>>,
    ) {
        let per = (MAX_PARAMS / columns.len().max(1)).clamp(1, MAX_ROWS);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Param>> = rows.by_ref().take(per).collect();
            let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
            let mut n = 0;
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for c in 0..columns.len() {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    n += 1;
                    sql.push_str(&format!("${n}"));
                }
                sql.push(')');
            }
            sql.push_str(tail);
            self.push(sql, chunk.into_iter().flatten().collect());
        }
    }

    /// Adds multi-row INSERTs of `rows` into `table` that leave out rows whose `key` (the
    /// conflict target, e.g. `(run_id, kind, value)`) is already there.
    pub(super) fn insert_ignoring(
        &mut self,
        table: &str,
        columns: &[&str],
        key: &str,
        rows: Vec<Vec<Param>>,
    ) {
        self.insert(
            table,
            columns,
            &format!(" ON CONFLICT {key} DO NOTHING"),
            rows,
        );
    }

    /// Adds multi-row INSERTs of `rows` into `table`, a row whose `key` is already there
    /// replacing its `update` columns. No two rows may share a key (PostgreSQL refuses a
    /// statement that updates one row twice).
    pub(super) fn upsert(
        &mut self,
        table: &str,
        columns: &[&str],
        key: &str,
        update: &[&str],
        rows: Vec<Vec<Param>>,
    ) {
        let set = update
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.insert(
            table,
            columns,
            &format!(" ON CONFLICT {key} DO UPDATE SET {set}"),
            rows,
        );
    }

    /// Runs the statements on `conn`, in order; stops at the first that fails.
    pub(super) async fn run(self, conn: &mut sqlx::AnyConnection) -> Result<(), HistoryError> {
        if conn.backend_name() != "SQLite" {
            for (sql, params) in self.statements {
                bind(sqlx::query(&sql), params).execute(&mut *conn).await?;
            }
            return Ok(());
        }
        for (sql, params) in joined(self.statements) {
            bind(sqlx::query(&sql), params).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl Script {
    /// Runs the statements on SQLite in a transaction of their own, which takes the write
    /// lock at once (`BEGIN IMMEDIATE`, see [`super::store::begin_write`]) and commits: one
    /// query, one hand-off to the connection's thread where a transaction began and
    /// committed took three. Any failure rolls the transaction back; a connection that
    /// cannot roll back is closed, not given back to the pool.
    pub(super) async fn commit_sqlite(self, pool: &sqlx::AnyPool) -> Result<(), HistoryError> {
        let mut conn = pool.acquire().await?;
        let mut statements = Vec::with_capacity(self.statements.len() + 2);
        statements.push(("BEGIN IMMEDIATE".to_string(), Vec::new()));
        statements.extend(self.statements);
        statements.push(("COMMIT".to_string(), Vec::new()));
        for (sql, params) in joined(statements) {
            if let Err(e) = bind(sqlx::query(&sql), params).execute(&mut *conn).await {
                match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    Ok(_) => {}
                    // SQLite rolled it back itself (an I/O error, a full disk), or it never began
                    Err(r) if r.to_string().contains("no transaction is active") => {}
                    Err(r) => {
                        tracing::warn!(error = %r, "cannot roll back a failed history write; closing its connection");
                        conn.close_on_drop();
                    }
                }
                return Err(e.into());
            }
        }
        Ok(())
    }
}

/// `statements` as few queries as [`MAX_SCRIPT_PARAMS`] allows, each statement's
/// placeholders renumbered past those of the statements before it in its query.
fn joined(statements: Vec<(String, Vec<Param>)>) -> Vec<(String, Vec<Param>)> {
    let mut queries: Vec<(String, Vec<Param>)> = Vec::new();
    for (sql, params) in statements {
        let start_new = match queries.last() {
            None => true,
            Some((_, p)) => !p.is_empty() && p.len() + params.len() > MAX_SCRIPT_PARAMS,
        };
        if start_new {
            queries.push((String::with_capacity(sql.len() + 1), Vec::new()));
        }
        let Some((query, values)) = queries.last_mut() else {
            continue;
        };
        renumber(query, &sql, values.len());
        query.push(';');
        values.extend(params);
    }
    queries
}

/// Appends `sql` to `out` with each placeholder `$n` written as `$(n + offset)`.
fn renumber(out: &mut String, sql: &str, offset: usize) {
    if offset == 0 {
        out.push_str(sql);
        return;
    }
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

/// `q` with `params` bound in order.
fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: Vec<Param>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Text(v) => q.bind(v),
            Param::OptText(v) => q.bind(v),
            Param::Int(v) => q.bind(v),
            Param::OptInt(v) => q.bind(v),
            Param::Bytes(v) => q.bind(v),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_past_the_statements_before() {
        let mut s = Script::default();
        s.push(
            "UPDATE t SET a = $1 WHERE id = $2",
            vec![Param::Int(1), Param::Int(2)],
        );
        s.insert(
            "u",
            &["x", "y"],
            " ON CONFLICT (x) DO NOTHING",
            vec![
                vec![Param::Int(3), Param::Int(4)],
                vec![Param::Int(5), Param::Int(6)],
            ],
        );
        s.push("DELETE FROM v WHERE id = $1", vec![Param::Int(7)]);
        let q = joined(s.statements);
        assert_eq!(q.len(), 1);
        assert_eq!(
            q[0].0,
            "UPDATE t SET a = $1 WHERE id = $2;\
             INSERT INTO u (x, y) VALUES ($3, $4), ($5, $6) ON CONFLICT (x) DO NOTHING;\
             DELETE FROM v WHERE id = $7;"
        );
        let values: Vec<i64> = q[0]
            .1
            .iter()
            .map(|p| match p {
                Param::Int(n) => *n,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn a_long_script_is_cut_into_queries_of_bounded_values() {
        let mut s = Script::default();
        let row = |i: i64| vec![Param::Int(i); 100];
        for i in 0..200 {
            s.push(
                format!(
                    "INSERT INTO t VALUES ({})",
                    super::super::store::placeholders(1, 100)
                ),
                row(i),
            );
        }
        let q = joined(s.statements);
        // 81 statements of 100 values fit in 8,192: 81, 81 and 38
        assert_eq!(q.len(), 3);
        for (sql, values) in &q {
            assert!(values.len() <= MAX_SCRIPT_PARAMS);
            // each query numbers its values from 1: its last placeholder is its last value
            assert!(sql.starts_with("INSERT INTO t VALUES ($1, $2,"), "{sql}");
            assert!(sql.ends_with(&format!("${});", values.len())), "{sql}");
        }
        assert_eq!(q.iter().map(|(_, v)| v.len()).sum::<usize>(), 20_000);
    }
}
