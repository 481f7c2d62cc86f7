//! A participant's own transaction on the store's database: its SQL and its inbox commit
//! together. Values are bound with the types `SqlValue` names and read back by column
//! type. As PostgreSQL does, a statement that fails aborts the whole transaction: the
//! caller rolls back.

use async_trait::async_trait;
use sagaflow_core::{ParticipantTx, SqlValue, StoreError};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgRow, PgTypeInfo, PgValueRef};
use sqlx::query::Query;
use sqlx::{Decode, PgPool, Postgres, Row, Transaction, TypeInfo, ValueRef};

use crate::error::{query_error, sqlstate, store_error, UNIQUE_VIOLATION};

/// Begins a participant transaction.
pub(crate) async fn begin(pool: &PgPool) -> Result<Box<dyn ParticipantTx>, StoreError> {
    let tx = pool.begin().await.map_err(store_error)?;
    Ok(Box::new(PgParticipantTx { tx }))
}

/// A pooled connection's transaction, held until commit or rollback (dropping it rolls back).
struct PgParticipantTx {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl ParticipantTx for PgParticipantTx {
    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let sql = typed_sql(sql, params);
        let done = bind_all(sqlx::query(&sql), params)
            .execute(&mut *self.tx)
            .await
            .map_err(query_error)?;
        Ok(done.rows_affected())
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let sql = typed_sql(sql, params);
        let rows = bind_all(sqlx::query(&sql), params)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(query_error)?;
        rows.iter().map(read_row).collect()
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

/// The SQL with its parameter types appended as a comment. sqlx caches one prepared
/// statement per SQL text and per connection, with the parameter types of its first use;
/// the same text bound later with other types (text where an integer was, or a NULL whose
/// type the server inferred) would send bytes of one type for another.
fn typed_sql(sql: &str, params: &[SqlValue]) -> String {
    if params.is_empty() {
        return sql.to_string();
    }
    let types: String = params
        .iter()
        .map(|p| match p {
            SqlValue::Null => 'n',
            SqlValue::Integer(_) => 'i',
            SqlValue::Real(_) => 'r',
            SqlValue::Text(_) => 't',
        })
        .collect();
    format!("{sql}\n-- sagaflow params: {types}")
}

fn bind_all<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: &'q [SqlValue],
) -> Query<'q, Postgres, PgArguments> {
    for param in params {
        query = match param {
            SqlValue::Null => query.bind(UntypedNull),
            SqlValue::Integer(i) => query.bind(*i),
            SqlValue::Real(f) => query.bind(*f),
            SqlValue::Text(s) => query.bind(s.as_str()),
        };
    }
    query
}

/// A NULL of no declared type (OID 0), so the server infers it from where it is used. Bound
/// as text, it would be refused wherever a number is expected (`column is of type bigint
/// but expression is of type text`).
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

fn read_row(row: &PgRow) -> Result<Vec<SqlValue>, StoreError> {
    (0..row.len())
        .map(|i| {
            let value = row.try_get_raw(i).map_err(query_error)?;
            read_value(value).map_err(|e| {
                let name = row.columns().get(i).map(sqlx::Column::name).unwrap_or("?");
                StoreError::Query(format!("column {name:?}: {e}"))
            })
        })
        .collect()
}

/// One value, by its column type: integers and booleans as Integer, floats as Real,
/// strings (and JSON) as Text.
fn read_value(value: PgValueRef<'_>) -> Result<SqlValue, BoxDynError> {
    if value.is_null() {
        return Ok(SqlValue::Null);
    }
    let type_info = value.type_info().into_owned();
    Ok(match type_info.name() {
        "INT2" => SqlValue::Integer(i16::decode(value)?.into()),
        "INT4" => SqlValue::Integer(i32::decode(value)?.into()),
        "INT8" => SqlValue::Integer(i64::decode(value)?),
        "BOOL" => SqlValue::Integer(bool::decode(value)?.into()),
        "FLOAT4" => SqlValue::Real(f32::decode(value)?.into()),
        "FLOAT8" => SqlValue::Real(f64::decode(value)?),
        "NUMERIC" => numeric(value.as_bytes()?)?,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => {
            SqlValue::Text(String::decode(value)?)
        }
        "JSON" => SqlValue::Text(std::str::from_utf8(value.as_bytes()?)?.to_string()),
        // Binary JSONB is a version byte (1), then the JSON text.
        "JSONB" => match value.as_bytes()? {
            [1, text @ ..] => SqlValue::Text(std::str::from_utf8(text)?.to_string()),
            _ => return Err("unknown JSONB format version".into()),
        },
        other => {
            return Err(format!(
                "type {other} cannot be read back; cast it to TEXT, BIGINT or DOUBLE PRECISION"
            )
            .into())
        }
    })
}

/// A binary NUMERIC: an Integer when it has no fractional digits and fits (as `sum` of
/// integers yields, matching SQLite), else a Real. The format is ndigits, weight, sign and
/// display scale (big-endian 16-bit each), then ndigits base-10000 digits, the first
/// worth 10000^weight.
fn numeric(bytes: &[u8]) -> Result<SqlValue, BoxDynError> {
    let word = |i: usize| -> Result<u16, BoxDynError> {
        match bytes.get(i * 2..i * 2 + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err("truncated NUMERIC".into()),
        }
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(i16::from_be_bytes(word(1)?.to_be_bytes()));
    let sign = word(2)?;
    let dscale = word(3)?;
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Ok(SqlValue::Real(f64::NAN)),
        0xD000 => return Ok(SqlValue::Real(f64::INFINITY)),
        0xF000 => return Ok(SqlValue::Real(f64::NEG_INFINITY)),
        _ => return Err(format!("unknown NUMERIC sign {sign:#x}").into()),
    };
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, _>>()?;
    // The value is the digits read as one base-10000 integer, times 10000^exponent.
    let exponent = weight + 1 - i64::try_from(ndigits)?;
    if dscale == 0 {
        if let Some(i) = integer(&digits, exponent, negative) {
            return Ok(SqlValue::Integer(i));
        }
    }
    let mut text = String::with_capacity(ndigits * 4 + 8);
    if negative {
        text.push('-');
    }
    text.push('0');
    for d in &digits {
        text.push_str(&format!("{d:04}"));
    }
    text.push_str(&format!("e{}", exponent * 4));
    Ok(SqlValue::Real(text.parse()?))
}

/// The NUMERIC's value as an i64, if it is a whole number that fits.
fn integer(digits: &[u16], exponent: i64, negative: bool) -> Option<i64> {
    if exponent < 0 {
        return None;
    }
    let mut value: i128 = 0;
    for d in digits {
        value = value.checked_mul(10_000)?.checked_add(i128::from(*d))?;
    }
    for _ in 0..exponent {
        value = value.checked_mul(10_000)?;
    }
    i64::try_from(if negative { -value } else { value }).ok()
}
