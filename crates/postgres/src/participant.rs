//! A participant's own transaction on the store's database: its SQL and its inbox commit
//! together. As PostgreSQL does, a statement that fails aborts the whole transaction: the
//! caller rolls back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sagaflow_core::{ParticipantTx, SqlValue, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{Executor, PgPool, Postgres, Transaction};

use crate::error::{query_error, sqlstate, store_error, UNIQUE_VIOLATION};
use crate::sql_value::{bind_all, read_row, typed_sql, Nulls};

/// The server could not infer a parameter's type: indeterminate_datatype, and
/// ambiguous_parameter (inferred differently in two places, e.g. `$1 IS NULL OR x = $1`).
const UNTYPABLE_PARAMETER: [&str; 2] = ["42P18", "42P08"];

/// Forget what was learnt about NULLs past this many SQL texts (SQL built with inlined
/// values would otherwise grow the map forever).
const MAX_LEARNT: usize = 4_096;

/// Per SQL text (with its parameter types): how its NULLs bind, learnt on first use.
#[derive(Default)]
pub(crate) struct NullTyping(Mutex<HashMap<String, Nulls>>);

impl NullTyping {
    fn get(&self, sql: &str) -> Option<Nulls> {
        self.0.lock().ok()?.get(sql).copied()
    }

    fn learn(&self, sql: String, nulls: Nulls) {
        if let Ok(mut learnt) = self.0.lock() {
            if learnt.len() >= MAX_LEARNT {
                learnt.clear();
            }
            learnt.insert(sql, nulls);
        }
    }
}

/// Begins a participant transaction.
pub(crate) async fn begin(
    pool: &PgPool,
    nulls: &Arc<NullTyping>,
) -> Result<Box<dyn ParticipantTx>, StoreError> {
    let tx = pool.begin().await.map_err(store_error)?;
    Ok(Box::new(PgParticipantTx {
        tx,
        nulls: Arc::clone(nulls),
    }))
}

/// A pooled connection's transaction, held until commit or rollback (dropping it rolls back).
struct PgParticipantTx {
    tx: Transaction<'static, Postgres>,
    nulls: Arc<NullTyping>,
}

/// What a statement gave back.
enum Done {
    Changed(u64),
    Rows(Vec<PgRow>),
}

impl PgParticipantTx {
    /// Runs participant SQL. NULLs go untyped, so the server types them from where they are
    /// used; where it cannot (`$1 IS NULL`), they go as TEXT instead. Which one a statement
    /// needs is learnt on its first run with NULLs, under a savepoint so that the failed
    /// try does not abort the transaction; later runs pay nothing.
    async fn run(
        &mut self,
        sql: &str,
        params: &[SqlValue],
        rows: bool,
    ) -> Result<Done, StoreError> {
        if !params.contains(&SqlValue::Null) {
            return self
                .once(sql, params, Nulls::Untyped, rows)
                .await
                .map_err(query_error);
        }
        let key = typed_sql(sql, params, Nulls::Untyped);
        if let Some(nulls) = self.nulls.get(&key) {
            return self
                .once(sql, params, nulls, rows)
                .await
                .map_err(query_error);
        }
        self.savepoint("SAVEPOINT sagaflow_nulls").await?;
        match self.once(sql, params, Nulls::Untyped, rows).await {
            Ok(done) => {
                self.savepoint("RELEASE SAVEPOINT sagaflow_nulls").await?;
                self.nulls.learn(key, Nulls::Untyped);
                Ok(done)
            }
            Err(e) if sqlstate(&e).is_some_and(|c| UNTYPABLE_PARAMETER.contains(&c.as_str())) => {
                self.savepoint(
                    "ROLLBACK TO SAVEPOINT sagaflow_nulls; RELEASE SAVEPOINT sagaflow_nulls",
                )
                .await?;
                self.nulls.learn(key, Nulls::Text);
                self.once(sql, params, Nulls::Text, rows)
                    .await
                    .map_err(query_error)
            }
            Err(e) => Err(query_error(e)),
        }
    }

    async fn once(
        &mut self,
        sql: &str,
        params: &[SqlValue],
        nulls: Nulls,
        rows: bool,
    ) -> Result<Done, sqlx::Error> {
        let sql = typed_sql(sql, params, nulls);
        let query = bind_all(sqlx::query(&sql), params, nulls);
        if rows {
            Ok(Done::Rows(query.fetch_all(&mut *self.tx).await?))
        } else {
            Ok(Done::Changed(
                query.execute(&mut *self.tx).await?.rows_affected(),
            ))
        }
    }

    async fn savepoint(&mut self, sql: &'static str) -> Result<(), StoreError> {
        (&mut *self.tx)
            .execute(sqlx::raw_sql(sql))
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl ParticipantTx for PgParticipantTx {
    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        match self.run(sql, params, false).await? {
            Done::Changed(n) => Ok(n),
            Done::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        match self.run(sql, params, true).await? {
            Done::Rows(rows) => rows.iter().map(read_row).collect(),
            Done::Changed(_) => Ok(Vec::new()),
        }
    }

    async fn inbox_get(
        &mut self,
        consumer: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT reply FROM inbox WHERE consumer = $1 AND key = $2")
            .bind(consumer)
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(store_error)
    }

    async fn inbox_put(
        &mut self,
        consumer: &str,
        key: &str,
        reply: &[u8],
    ) -> Result<(), StoreError> {
        // A plain INSERT, never an upsert: a concurrent delivery holding the same key makes
        // this wait for it, then fail, so the command has its effect once.
        sqlx::query("INSERT INTO inbox (consumer, key, reply) VALUES ($1, $2, $3)")
            .bind(consumer)
            .bind(key)
            .bind(reply)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
                    StoreError::Query(format!(
                        "inbox already holds a reply for consumer {consumer:?} and key {key:?}"
                    ))
                } else {
                    query_error(e)
                }
            })?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(query_error)
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(store_error)
    }
}
