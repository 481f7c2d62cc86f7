//! Participant transaction checks: portable `$N` SQL, values, commit and rollback, and the
//! inbox that makes a redelivered command have no second effect.

use std::sync::Arc;

use sagaflow_core::{ParticipantTx, SqlValue, Store, StoreError};

async fn begin(store: &dyn Store) -> Box<dyn ParticipantTx> {
    store
        .begin()
        .await
        .unwrap_or_else(|e| panic!("begin failed: {e}"))
}

async fn exec(tx: &mut dyn ParticipantTx, sql: &str, params: &[SqlValue]) -> u64 {
    tx.execute(sql, params)
        .await
        .unwrap_or_else(|e| panic!("execute({sql}) failed: {e}"))
}

async fn query(tx: &mut dyn ParticipantTx, sql: &str, params: &[SqlValue]) -> Vec<Vec<SqlValue>> {
    tx.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("query({sql}) failed: {e}"))
}

async fn commit(tx: Box<dyn ParticipantTx>) {
    tx.commit()
        .await
        .unwrap_or_else(|e| panic!("commit failed: {e}"));
}

async fn create_table(store: &dyn Store, ddl: &str) {
    let mut tx = begin(store).await;
    exec(&mut *tx, ddl, &[]).await;
    commit(tx).await;
}

async fn count(store: &dyn Store, table: &str) -> i64 {
    let mut tx = begin(store).await;
    let rows = query(&mut *tx, &format!("SELECT COUNT(*) FROM {table}"), &[]).await;
    tx.rollback()
        .await
        .unwrap_or_else(|e| panic!("rollback failed: {e}"));
    match rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
    {
        Some(n) => n,
        None => panic!("COUNT(*) should give one integer, got {rows:?}"),
    }
}

const ACCOUNTS: &str = "CREATE TABLE conformance_accounts \
    (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance DOUBLE PRECISION, note TEXT)";

/// `$1, $2, …` placeholders bind integers, reals, text and NULL, and read back as such; a
/// `$1` inside a string literal is text, not a placeholder; `execute` counts changed rows.
pub async fn participant_sql_round_trips_values(store: Arc<dyn Store>) {
    create_table(&*store, ACCOUNTS).await;
    let mut tx = begin(&*store).await;
    let insert =
        "INSERT INTO conformance_accounts (id, owner, balance, note) VALUES ($1, $2, $3, $4)";
    let n = exec(
        &mut *tx,
        insert,
        &[1.into(), "ada".into(), SqlValue::Real(12.5), SqlValue::Null],
    )
    .await;
    assert_eq!(n, 1, "an insert changes one row");
    let literal = "INSERT INTO conformance_accounts (id, owner, balance, note) \
                   VALUES ($1, $2, $3, 'costs $1, not $2')";
    exec(
        &mut *tx,
        literal,
        &[2.into(), "bob".into(), SqlValue::Real(-3.25)],
    )
    .await;
    let rows = query(
        &mut *tx,
        "SELECT id, owner, balance, note FROM conformance_accounts WHERE id >= $1 ORDER BY id",
        &[1.into()],
    )
    .await;
    assert_eq!(
        rows,
        vec![
            vec![1.into(), "ada".into(), SqlValue::Real(12.5), SqlValue::Null],
            vec![
                2.into(),
                "bob".into(),
                SqlValue::Real(-3.25),
                "costs $1, not $2".into()
            ],
        ],
        "values read back with their types; '$1' in a literal stays text"
    );
    let n = exec(
        &mut *tx,
        "UPDATE conformance_accounts SET balance = balance + $1",
        &[SqlValue::Real(1.0)],
    )
    .await;
    assert_eq!(n, 2, "an update of two rows reports 2");
    let rows = query(
        &mut *tx,
        "SELECT balance FROM conformance_accounts WHERE owner = $2 AND id = $1",
        &[2.into(), "bob".into()],
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![SqlValue::Real(-2.25)]],
        "placeholders bind by number, in any order"
    );
    let none = query(
        &mut *tx,
        "SELECT id FROM conformance_accounts WHERE id = $1",
        &[99.into()],
    )
    .await;
    assert!(none.is_empty(), "no rows is an empty result");
    let bad = tx
        .execute("INSERT INTO no_such_table VALUES ($1)", &[1.into()])
        .await;
    assert!(
        matches!(bad, Err(StoreError::Query(_))),
        "refused participant SQL is a Query error, got {bad:?}"
    );
    // PostgreSQL aborts the transaction after an error: end it without relying on it.
    let _ = tx.rollback().await;
}

/// Committed effects are visible to the next transaction; rolled-back ones (inbox included)
/// are not.
pub async fn participant_commit_is_visible_rollback_is_not(store: Arc<dyn Store>) {
    create_table(&*store, ACCOUNTS).await;
    let insert = "INSERT INTO conformance_accounts (id, owner) VALUES ($1, $2)";
    let mut tx = begin(&*store).await;
    exec(&mut *tx, insert, &[1.into(), "ada".into()]).await;
    tx.inbox_put("billing", "rolled-back", b"r")
        .await
        .unwrap_or_else(|e| panic!("inbox_put failed: {e}"));
    tx.rollback()
        .await
        .unwrap_or_else(|e| panic!("rollback failed: {e}"));
    assert_eq!(
        count(&*store, "conformance_accounts").await,
        0,
        "a rolled-back insert is invisible"
    );
    let mut tx = begin(&*store).await;
    let seen = tx
        .inbox_get("billing", "rolled-back")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(seen, None, "a rolled-back inbox entry is invisible");
    exec(&mut *tx, insert, &[2.into(), "bob".into()]).await;
    commit(tx).await;
    assert_eq!(
        count(&*store, "conformance_accounts").await,
        1,
        "a committed insert is visible"
    );
}

/// A participant transaction dropped without commit or rollback is abandoned: its effects
/// vanish and it blocks nobody.
pub async fn dropped_participant_tx_is_abandoned(store: Arc<dyn Store>) {
    create_table(&*store, ACCOUNTS).await;
    let mut tx = begin(&*store).await;
    exec(
        &mut *tx,
        "INSERT INTO conformance_accounts (id, owner) VALUES ($1, $2)",
        &[1.into(), "ada".into()],
    )
    .await;
    drop(tx);
    assert_eq!(
        count(&*store, "conformance_accounts").await,
        0,
        "a dropped transaction's insert is invisible"
    );
    let mut tx = begin(&*store).await;
    exec(
        &mut *tx,
        "INSERT INTO conformance_accounts (id, owner) VALUES ($1, $2)",
        &[1.into(), "ada".into()],
    )
    .await;
    commit(tx).await;
    assert_eq!(count(&*store, "conformance_accounts").await, 1);
}

/// The inbox records one reply per consumer and key, readable in the same transaction and
/// after commit; recording a key again fails rather than overwriting.
pub async fn participant_inbox_records_replies(store: Arc<dyn Store>) {
    let mut tx = begin(&*store).await;
    let get = tx
        .inbox_get("billing", "s:charge:1:action")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(get, None, "an unseen key has no reply");
    tx.inbox_put("billing", "s:charge:1:action", b"{\"ok\":1}")
        .await
        .unwrap_or_else(|e| panic!("inbox_put failed: {e}"));
    let get = tx
        .inbox_get("billing", "s:charge:1:action")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(
        get.as_deref(),
        Some(&b"{\"ok\":1}"[..]),
        "the reply is readable in the same transaction"
    );
    let other = tx
        .inbox_get("shipping", "s:charge:1:action")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(other, None, "inboxes are per consumer");
    commit(tx).await;

    let mut tx = begin(&*store).await;
    let get = tx
        .inbox_get("billing", "s:charge:1:action")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(get.as_deref(), Some(&b"{\"ok\":1}"[..]), "committed reply");
    let put_again = tx.inbox_put("billing", "s:charge:1:action", b"other").await;
    let rejected = match put_again {
        Err(_) => {
            let _ = tx.rollback().await;
            true
        }
        Ok(()) => tx.commit().await.is_err(),
    };
    assert!(
        rejected,
        "recording a handled key again must fail (at inbox_put or commit), never overwrite"
    );
    let mut tx = begin(&*store).await;
    let get = tx
        .inbox_get("billing", "s:charge:1:action")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(
        get.as_deref(),
        Some(&b"{\"ok\":1}"[..]),
        "the first reply is kept"
    );
    let _ = tx.rollback().await;
}

/// Two deliveries of one command in concurrent transactions: exactly one commits its effect
/// and reply; the other fails at `inbox_put` or `commit`.
pub async fn concurrent_inbox_put_lets_one_commit(store: Arc<dyn Store>) {
    create_table(
        &*store,
        "CREATE TABLE conformance_effects (n BIGINT NOT NULL)",
    )
    .await;
    let deliver = |n: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await?;
            tx.execute(
                "INSERT INTO conformance_effects (n) VALUES ($1)",
                &[n.into()],
            )
            .await?;
            if let Err(e) = tx.inbox_put("billing", "dup-key", &n.to_be_bytes()).await {
                let _ = tx.rollback().await;
                return Err(e);
            }
            tx.commit().await?;
            Ok::<i64, StoreError>(n)
        })
    };
    let (first, second) = (deliver(1), deliver(2));
    let results = [first.await, second.await].map(|joined| match joined {
        Ok(result) => result,
        Err(e) => panic!("a delivery task failed: {e}"),
    });
    let winners: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of two concurrent deliveries commits, got {results:?}"
    );
    assert_eq!(
        count(&*store, "conformance_effects").await,
        1,
        "the losing delivery's effect is rolled back"
    );
    let mut tx = begin(&*store).await;
    let reply = tx
        .inbox_get("billing", "dup-key")
        .await
        .unwrap_or_else(|e| panic!("inbox_get failed: {e}"));
    assert_eq!(
        reply,
        Some(winners[0].to_be_bytes().to_vec()),
        "the winner's reply is recorded"
    );
    let _ = tx.rollback().await;
}
