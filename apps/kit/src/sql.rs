//! Small helpers over the participant transaction, for apps that keep their own tables in
//! the sagaflow database (plain SQL that SQLite and PostgreSQL both accept; `$1…`).

use std::sync::Arc;

use sagaflow_core::{ParticipantTx, SqlValue, Store, StoreError};

/// Runs each statement (`CREATE TABLE IF NOT EXISTS …`) in a transaction of its own, tried
/// again on failure: processes starting together race to create the tables, and PostgreSQL
/// can refuse the loser of a concurrent create, which finds the table made on its next try.
pub async fn create_tables(store: &Arc<dyn Store>, statements: &[&str]) -> Result<(), StoreError> {
    for sql in statements {
        let mut tries = 0u64;
        loop {
            let mut tx = store.begin().await?;
            let done = match tx.execute(sql, &[]).await {
                Ok(_) => tx.commit().await,
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match done {
                Ok(()) => break,
                Err(e) if tries >= 10 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
                }
            }
        }
    }
    Ok(())
}

/// The rows of a read-only query, in a transaction of its own.
pub async fn read(
    store: &Arc<dyn Store>,
    sql: &str,
    params: &[SqlValue],
) -> Result<Vec<Vec<SqlValue>>, StoreError> {
    let mut tx = store.begin().await?;
    let rows = tx.query(sql, params).await;
    let _ = tx.rollback().await;
    rows
}

/// The first column of the first row as an integer.
pub async fn scalar_i64(
    tx: &mut dyn ParticipantTx,
    sql: &str,
    params: &[SqlValue],
) -> Result<Option<i64>, StoreError> {
    let rows = tx.query(sql, params).await?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64))
}

/// Text at column `i` of a row.
pub fn text(row: &[SqlValue], i: usize) -> String {
    row.get(i)
        .and_then(SqlValue::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Integer at column `i` of a row.
pub fn int(row: &[SqlValue], i: usize) -> i64 {
    row.get(i).and_then(SqlValue::as_i64).unwrap_or_default()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `f` in a transaction of its own and commits it.
pub async fn in_tx<T>(
    store: &Arc<dyn Store>,
    f: impl for<'a> FnOnce(
        &'a mut dyn ParticipantTx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>,
    >,
) -> Result<T, StoreError> {
    let mut tx = store.begin().await?;
    match f(tx.as_mut()).await {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// A random secret kept in the database under `{app}_identity_secrets`: made at first start,
/// the same for every process on that database.
pub async fn stored_secret(store: &Arc<dyn Store>, app: &str) -> Result<Vec<u8>, StoreError> {
    let table = format!("{app}_identity_secrets");
    create_tables(
        store,
        &[&format!(
            "CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )],
    )
    .await?;
    let candidate = crate::auth::random_secret();
    in_tx(store, move |tx| {
        Box::pin(async move {
            tx.execute(
                &format!("INSERT INTO {table} (name, value) VALUES ('jwt', $1) ON CONFLICT (name) DO NOTHING"),
                &[candidate.into()],
            )
            .await?;
            let rows = tx.query(&format!("SELECT value FROM {table} WHERE name = 'jwt'"), &[]).await?;
            Ok(rows.first().map(|r| text(r, 0)).unwrap_or_default().into_bytes())
        })
    })
    .await
}
