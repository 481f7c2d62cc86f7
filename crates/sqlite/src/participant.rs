//! Participant transactions: a pooled connection in `BEGIN IMMEDIATE`, so the participant's
//! effects and its inbox entry commit together, and two deliveries of one command cannot
//! both record it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, params_from_iter, Connection, ErrorCode};
use sagaflow_core::{ParticipantTx, SqlValue, StoreError};

use crate::commit::none_if_no_rows;
use crate::connection::{db, Pool, Pooled};

/// A participant's transaction on its own pooled connection.
pub(crate) struct SqliteTx {
    /// Taken while a statement runs on a blocking thread; `None` afterwards only if that
    /// thread panicked (the connection then rolled back as it was dropped).
    conn: Option<Pooled>,
}

impl SqliteTx {
    /// Takes a connection and begins. IMMEDIATE takes the write lock now (waiting up to the
    /// busy timeout), so the transaction cannot fail later just because it started reading.
    pub(crate) async fn begin(pool: Arc<Pool>) -> Result<SqliteTx, StoreError> {
        let conn = blocking(move || {
            let conn = pool.get()?;
            conn.prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut s| s.execute([]))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot begin a participant transaction: {e}"))
                })?;
            Ok(conn)
        })
        .await?;
        Ok(SqliteTx { conn: Some(conn) })
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn with<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.take().ok_or_else(|| {
            StoreError::Unavailable("the participant transaction was lost".into())
        })?;
        let (conn, result) = blocking(move || {
            let result = f(&conn);
            Ok((conn, result))
        })
        .await?;
        self.conn = Some(conn);
        result
    }

    /// Ends the transaction with `sql` (COMMIT or ROLLBACK).
    async fn end(mut self, sql: &'static str) -> Result<(), StoreError> {
        let conn = self.conn.take().ok_or_else(|| {
            StoreError::Unavailable("the participant transaction was lost".into())
        })?;
        // Dropping the connection on the blocking thread returns it to the pool there (and
        // rolls back a failed COMMIT), keeping that work off the async runtime.
        blocking(move || {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute([]))
                .map(drop)
                .map_err(|e| StoreError::Unavailable(format!("{sql} failed: {e}")))
        })
        .await
    }
}

#[async_trait]
impl ParticipantTx for SqliteTx {
    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let sql = translate_placeholders(sql).into_owned();
        let params = to_values(params);
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(query_error)?;
            let changed = stmt
                .execute(params_from_iter(params.iter()))
                .map_err(query_error)?;
            Ok(changed as u64)
        })
        .await
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let sql = translate_placeholders(sql).into_owned();
        let params = to_values(params);
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(query_error)?;
            let columns = stmt.column_count();
            let mut rows = stmt
                .query(params_from_iter(params.iter()))
                .map_err(query_error)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(query_error)? {
                let mut values = Vec::with_capacity(columns);
                for i in 0..columns {
                    values.push(from_value(row.get_ref(i).map_err(query_error)?, i)?);
                }
                out.push(values);
            }
            Ok(out)
        })
        .await
    }

    async fn inbox_get(
        &mut self,
        consumer: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (consumer, key) = (consumer.to_string(), key.to_string());
        self.with(move |conn| {
            conn.prepare_cached("SELECT reply FROM inbox WHERE consumer = ?1 AND key = ?2")
                .map_err(db)?
                .query_row([&consumer, &key], |row| row.get(0))
                .map(Some)
                .or_else(none_if_no_rows)
                .map_err(db)
        })
        .await
    }

    async fn inbox_put(
        &mut self,
        consumer: &str,
        key: &str,
        reply: &[u8],
    ) -> Result<(), StoreError> {
        let (consumer, key, reply) = (consumer.to_string(), key.to_string(), reply.to_vec());
        self.with(move |conn| {
            // A plain INSERT: a key recorded before must fail, never be overwritten.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO inbox (consumer, key, reply, at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db)?
                .execute(params![consumer, key, reply, now_millis()]);
            match inserted {
                Ok(_) => Ok(()),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    Err(StoreError::Query(format!(
                        "inbox of {consumer} already holds a reply for {key}"
                    )))
                }
                Err(e) => Err(db(e)),
            }
        })
        .await
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.end("COMMIT").await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.end("ROLLBACK").await
    }
}

/// Runs blocking SQLite work off the async runtime (works on current-thread and
/// multi-thread runtimes alike).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("a SQLite task failed: {e}")))?
}

/// Rewrites PostgreSQL-style `$1` placeholders as SQLite's `?1`, outside string literals,
/// quoted identifiers and comments, so participant SQL is the same on both stores.
///
/// SQLite would accept `$1` itself, but as a *named* parameter numbered by first
/// appearance, which binds `… $2 … $1 …` the wrong way round.
pub(crate) fn translate_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                // A doubled quote inside is an escaped quote: the loop sees it as the end
                // and an immediate restart, which copies the same characters.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut prev = '\0';
                for d in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn to_values(params: &[SqlValue]) -> Vec<Value> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(i) => Value::Integer(*i),
            SqlValue::Real(f) => Value::Real(*f),
            SqlValue::Text(s) => Value::Text(s.clone()),
        })
        .collect()
}

fn from_value(value: ValueRef<'_>, column: usize) -> Result<SqlValue, StoreError> {
    Ok(match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => SqlValue::Text(s.to_string()),
            Err(_) => {
                return Err(StoreError::Query(format!(
                    "column {column} holds binary data; participant SQL reads NULL, \
                     integers, reals and text"
                )))
            }
        },
    })
}

fn query_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // CHECK, UNIQUE, NOT NULL, foreign keys and a trigger's RAISE(ABORT, …).
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Constraint(e.to_string()),
        _ => StoreError::Query(e.to_string()),
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::translate_placeholders as t;

    #[test]
    fn placeholders_become_numbered_question_marks() {
        assert_eq!(t("SELECT 1"), "SELECT 1");
        assert_eq!(
            t("UPDATE a SET x = $2 WHERE id = $1"),
            "UPDATE a SET x = ?2 WHERE id = ?1"
        );
        assert_eq!(t("VALUES ($10,$11)"), "VALUES (?10,?11)");
    }

    #[test]
    fn literals_identifiers_and_comments_are_left_alone() {
        assert_eq!(
            t("INSERT INTO t VALUES ($1, 'costs $1, it''s $2')"),
            "INSERT INTO t VALUES (?1, 'costs $1, it''s $2')"
        );
        assert_eq!(
            t(r#"SELECT "$1" FROM t WHERE a = $1"#),
            r#"SELECT "$1" FROM t WHERE a = ?1"#
        );
        assert_eq!(t("SELECT $1 -- not $2\n, $3"), "SELECT ?1 -- not $2\n, ?3");
        assert_eq!(t("SELECT /* $1 */ $2"), "SELECT /* $1 */ ?2");
        assert_eq!(t("SELECT $a, $"), "SELECT $a, $");
    }
}
