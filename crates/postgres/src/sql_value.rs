//! Participant values: `SqlValue`s bound as parameters and read back from rows by column
//! type, so the same participant code runs on SQLite and PostgreSQL.

use sagaflow_core::{SqlValue, StoreError};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgRow, PgTypeInfo, PgValueRef};
use sqlx::query::Query;
use sqlx::{Decode, Postgres, Row, TypeInfo, ValueRef};

use crate::error::query_error;

/// How a statement's NULL parameters are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nulls {
    /// Of no type: the server infers it from the context (`INSERT … VALUES ($1)` into a
    /// BIGINT column works). The default.
    Untyped,
    /// TEXT, for statements where the server cannot infer one (`WHERE $1 IS NULL`).
    Text,
}

/// The SQL with its parameter types appended as a comment. sqlx caches one prepared
/// statement per SQL text and per connection, with the parameter types of its first use;
/// the same text bound later with other types (text where an integer was, or a NULL whose
/// type the server inferred) would send bytes of one type for another.
pub(crate) fn typed_sql(sql: &str, params: &[SqlValue], nulls: Nulls) -> String {
    if params.is_empty() {
        return sql.to_string();
    }
    let types: String = params
        .iter()
        .map(|p| match (p, nulls) {
            (SqlValue::Null, Nulls::Untyped) => 'n',
            (SqlValue::Null, Nulls::Text) => 'z',
            (SqlValue::Integer(_), _) => 'i',
            (SqlValue::Real(_), _) => 'r',
            (SqlValue::Text(_), _) => 't',
        })
        .collect();
    format!("{sql}\n-- sagaflow params: {types}")
}

/// Binds every parameter, NULLs as `nulls` says.
pub(crate) fn bind_all<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: &'q [SqlValue],
    nulls: Nulls,
) -> Query<'q, Postgres, PgArguments> {
    for param in params {
        query = match param {
            SqlValue::Null if nulls == Nulls::Text => query.bind(None::<&str>),
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

/// One row, each value by its column type.
pub(crate) fn read_row(row: &PgRow) -> Result<Vec<SqlValue>, StoreError> {
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
    // Built-in type OIDs are fixed by PostgreSQL (pg_type.dat), unlike display names.
    let type_info = value.type_info().into_owned();
    Ok(match type_info.oid().map(|oid| oid.0) {
        Some(21) => SqlValue::Integer(i16::decode(value)?.into()),
        Some(23) => SqlValue::Integer(i32::decode(value)?.into()),
        Some(20) => SqlValue::Integer(i64::decode(value)?),
        Some(16) => SqlValue::Integer(bool::decode(value)?.into()),
        Some(700) => SqlValue::Real(f32::decode(value)?.into()),
        Some(701) => SqlValue::Real(f64::decode(value)?),
        Some(1700) => numeric(value.as_bytes()?)?,
        // text, varchar, char(n), name, unknown
        Some(25 | 1043 | 1042 | 19 | 705) => SqlValue::Text(String::decode(value)?),
        Some(114) => SqlValue::Text(std::str::from_utf8(value.as_bytes()?)?.to_string()),
        // Binary JSONB is a version byte (1), then the JSON text.
        Some(3802) => match value.as_bytes()? {
            [1, text @ ..] => SqlValue::Text(std::str::from_utf8(text)?.to_string()),
            _ => return Err("unknown JSONB format version".into()),
        },
        _ => {
            return Err(format!(
                "type {} cannot be read back; cast it to TEXT, BIGINT or DOUBLE PRECISION",
                type_info.name()
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
