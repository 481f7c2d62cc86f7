//! From sqlx errors to the port's `StoreError`: whether trying again may help decides the
//! variant.

use sagaflow_core::StoreError;

/// SQLSTATEs after which the whole transaction can simply run again.
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
/// The SQLSTATE of a unique constraint violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// An error from the store's own SQL. The database refusing it counts as unavailable (the
/// schema is ours, so a refusal means the server is unwell, not that the input was bad);
/// data that cannot be read back is corrupt.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => StoreError::Corrupt(e.to_string()),
        sqlx::Error::Database(db) => StoreError::Unavailable(describe(db.as_ref())),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// An error from a participant's SQL: the database refusing it is the participant's query
/// failing; losing the connection is still unavailable.
pub(crate) fn query_error(e: sqlx::Error) -> StoreError {
    match e {
        // Class 23 (integrity constraint violation) and a trigger's RAISE EXCEPTION (P0001).
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("23") || c == "P0001") =>
        {
            StoreError::Constraint(describe(db.as_ref()))
        }
        sqlx::Error::Database(db) => StoreError::Query(describe(db.as_ref())),
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Encode(_) => StoreError::Query(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Whether the error is a deadlock or serialization failure: the transaction was rolled
/// back as a whole and running it again is safe.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|code| code == SERIALIZATION_FAILURE || code == DEADLOCK_DETECTED)
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The server's message with its SQLSTATE, which is what an operator searches for.
fn describe(db: &dyn sqlx::error::DatabaseError) -> String {
    match db.code() {
        Some(code) => format!("{} (SQLSTATE {code})", db.message()),
        None => db.message().to_string(),
    }
}

/// Stored JSON that does not parse back into the model.
pub(crate) fn corrupt_json(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A stored integer out of the model's range.
pub(crate) fn corrupt_number(what: &str, value: i64) -> StoreError {
    StoreError::Corrupt(format!("{what} out of range: {value}"))
}
