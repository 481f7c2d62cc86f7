//! Participant SQL on PostgreSQL: NULLs bind wherever SQLite would take them, one SQL text
//! may be bound with different types, and column types map onto `SqlValue`.

mod support;

use sagaflow_core::{ParticipantTx, SqlValue, Store, StoreError};
use SqlValue::{Integer, Null, Real, Text};

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

fn text(s: &str) -> SqlValue {
    Text(s.to_string())
}

#[tokio::test]
async fn untyped_nulls_bind_into_every_column_type() {
    let (store, _guard) = support::fresh().await;
    let mut tx = store.begin().await.expect("begin");
    exec(
        &mut *tx,
        "CREATE TABLE typed (id BIGINT PRIMARY KEY, small INT4, flag BOOLEAN, \
         amount NUMERIC, ratio DOUBLE PRECISION, note TEXT, doc JSONB)",
        &[],
    )
    .await;
    let insert = "INSERT INTO typed (id, small, flag, amount, ratio, note, doc) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7)";
    exec(
        &mut *tx,
        insert,
        &[Integer(1), Null, Null, Null, Null, Null, Null],
    )
    .await;
    exec(
        &mut *tx,
        "UPDATE typed SET small = COALESCE($1, small), note = $2 WHERE id = $3",
        &[Null, Null, Integer(1)],
    )
    .await;
    let rows = query(
        &mut *tx,
        "SELECT small, flag, amount, ratio, note, doc FROM typed WHERE id = $1",
        &[Integer(1)],
    )
    .await;
    assert_eq!(rows, vec![vec![Null; 6]]);
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn one_sql_text_bound_with_different_types_each_time() {
    let (store, _guard) = support::fresh().await;
    let mut tx = store.begin().await.expect("begin");
    exec(
        &mut *tx,
        "CREATE TABLE notes (id BIGINT, small INT4, note TEXT)",
        &[],
    )
    .await;
    let insert = "INSERT INTO notes (id, small, note) VALUES ($1, $2, $3)";
    exec(&mut *tx, insert, &[Integer(1), Integer(7), text("a")]).await;
    exec(&mut *tx, insert, &[Integer(2), Null, Null]).await;
    exec(&mut *tx, insert, &[Integer(3), Integer(9), Null]).await;
    exec(&mut *tx, insert, &[Integer(4), Null, text("d")]).await;
    let rows = query(
        &mut *tx,
        "SELECT id, small, note FROM notes ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(
        rows,
        vec![
            vec![Integer(1), Integer(7), text("a")],
            vec![Integer(2), Null, Null],
            vec![Integer(3), Integer(9), Null],
            vec![Integer(4), Null, text("d")],
        ]
    );
    let echo = "SELECT $1";
    assert_eq!(
        query(&mut *tx, echo, &[Integer(5)]).await,
        vec![vec![Integer(5)]]
    );
    assert_eq!(
        query(&mut *tx, echo, &[text("x")]).await,
        vec![vec![text("x")]]
    );
    assert_eq!(
        query(&mut *tx, echo, &[Real(0.5)]).await,
        vec![vec![Real(0.5)]]
    );
    assert_eq!(query(&mut *tx, echo, &[Null]).await, vec![vec![Null]]);
    assert_eq!(
        query(&mut *tx, echo, &[Integer(6)]).await,
        vec![vec![Integer(6)]]
    );
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_null_whose_type_cannot_be_inferred_binds_as_text() {
    let (store, _guard) = support::fresh().await;
    let mut tx = store.begin().await.expect("begin");
    exec(&mut *tx, "CREATE TABLE people (name TEXT)", &[]).await;
    exec(
        &mut *tx,
        "INSERT INTO people (name) VALUES ('ada'), ('bob')",
        &[],
    )
    .await;
    // The optional-filter idiom: the server cannot type $1 from `$1 IS NULL`.
    let filter = "SELECT count(*) FROM people WHERE $1 IS NULL OR name = $1";
    for _ in 0..2 {
        // The second run uses what the first learnt.
        assert_eq!(
            query(&mut *tx, filter, &[Null]).await,
            vec![vec![Integer(2)]]
        );
    }
    assert_eq!(
        query(&mut *tx, filter, &[text("ada")]).await,
        vec![vec![Integer(1)]]
    );
    // The failed first try was undone: the transaction goes on and commits.
    exec(
        &mut *tx,
        "INSERT INTO people (name) VALUES ($1)",
        &[text("cy")],
    )
    .await;
    tx.commit().await.expect("commit after learning");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        query(&mut *tx, "SELECT count(*) FROM people", &[]).await,
        vec![vec![Integer(3)]]
    );
    tx.rollback().await.expect("rollback");
}

#[tokio::test]
async fn column_types_read_back_as_sql_values() {
    let (store, _guard) = support::fresh().await;
    let mut tx = store.begin().await.expect("begin");
    let rows = query(
        &mut *tx,
        "SELECT 1::int2, 2::int4, 3000000000::int8, true, false, 1.5::float4, 2.25::float8, \
         12::numeric, -12.34::numeric, 100000000::numeric, 0::numeric, 0.0001::numeric, \
         1e30::numeric, -9223372036854775808::numeric, 'NaN'::numeric, \
         'x'::varchar, 'y'::char(2), 'z'::text, '{\"a\": 1}'::jsonb, '{\"b\":2}'::json, \
         NULL::int8, NULL::text",
        &[],
    )
    .await;
    let want = vec![
        Integer(1),
        Integer(2),
        Integer(3_000_000_000),
        Integer(1),
        Integer(0),
        Real(1.5),
        Real(2.25),
        Integer(12),
        Real(-12.34),
        Integer(100_000_000),
        Integer(0),
        Real(0.0001),
        Real(1e30),
        Integer(i64::MIN),
        // NaN != NaN: checked below.
        Null,
        text("x"),
        text("y "),
        text("z"),
        text("{\"a\": 1}"),
        text("{\"b\":2}"),
        Null,
        Null,
    ];
    let mut got = rows.into_iter().next().expect("one row");
    assert!(
        matches!(got[14], Real(f) if f.is_nan()),
        "NaN: {:?}",
        got[14]
    );
    got[14] = Null;
    assert_eq!(got, want);

    exec(&mut *tx, "CREATE TABLE ledger (amount BIGINT)", &[]).await;
    exec(
        &mut *tx,
        "INSERT INTO ledger (amount) VALUES ($1), ($2), ($3)",
        &[Integer(5), Integer(7), Integer(9_000_000_000)],
    )
    .await;
    assert_eq!(
        query(
            &mut *tx,
            "SELECT sum(amount), avg(amount) FROM ledger WHERE amount < $1",
            &[Integer(100)]
        )
        .await,
        vec![vec![Integer(12), Real(6.0)]],
        "sum of integers stays an integer, as on SQLite; avg is a real"
    );
    let bad = tx.query("SELECT now()", &[]).await;
    assert!(
        matches!(&bad, Err(StoreError::Query(m)) if m.contains("cast")),
        "an unreadable column type is a Query error saying what to do, got {bad:?}"
    );
    tx.rollback().await.expect("rollback");
}

#[tokio::test]
async fn inbox_put_waits_for_a_concurrent_holder_then_fails() {
    let (store, _guard) = support::fresh().await;
    let mut first = store.begin().await.expect("begin");
    first
        .inbox_put("billing", "k", b"first")
        .await
        .expect("first put");
    let pid: i32 = {
        let rows = first
            .query("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid");
        match rows.first().and_then(|r| r.first()) {
            Some(Integer(pid)) => i32::try_from(*pid).expect("pid fits"),
            other => panic!("pg_backend_pid gave {other:?}"),
        }
    };
    let second_store = store.clone();
    let second = tokio::spawn(async move {
        let mut tx = second_store.begin().await.expect("begin");
        let put = tx.inbox_put("billing", "k", b"second").await;
        let _ = tx.rollback().await;
        put
    });
    support::wait_until_blocked_by(&store, pid).await;
    first.commit().await.expect("first commits");
    let put = second.await.expect("second task");
    assert!(
        matches!(&put, Err(StoreError::Query(m)) if m.contains("inbox")),
        "the second delivery fails once the first committed, got {put:?}"
    );
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        tx.inbox_get("billing", "k").await.expect("get").as_deref(),
        Some(&b"first"[..])
    );
    tx.rollback().await.expect("rollback");
}
