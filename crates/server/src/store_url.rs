//! Opens the store a `--database-url` names.

use std::sync::Arc;

use anyhow::{bail, Context};
use sagaflow_core::Store;

/// Opens `sqlite://…` (or a plain path) as SQLite and `postgres://…` as PostgreSQL. A
/// PostgreSQL URL may name a schema to keep sagaflow's tables in, `?schema=NAME` (created if
/// missing), so several deployments can share one database.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (url, schema) = split_schema(url);
        let store = match &schema {
            Some(schema) => sagaflow_postgres::PgStore::connect_in_schema(&url, schema).await,
            None => sagaflow_postgres::PgStore::connect(&url).await,
        }
        .with_context(|| format!("connecting to {}", redact(&url)))?;
        return Ok(Arc::new(store));
    }
    if url.contains("://") && !url.starts_with("sqlite://") {
        bail!("unsupported --database-url {url:?}: use sqlite://PATH or postgres://USER@HOST/DB");
    }
    let store = sagaflow_sqlite::SqliteStore::open(url)
        .await
        .with_context(|| format!("opening {url}"))?;
    Ok(Arc::new(store))
}

/// Takes a `schema=NAME` query parameter out of a PostgreSQL URL.
pub fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(name) => {
                schema = Some(name.to_string());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    sagaflow_core::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::split_schema;

    #[test]
    fn a_schema_parameter_is_taken_out_of_the_url() {
        assert_eq!(
            split_schema("postgres://root@h/test?schema=a_b"),
            (
                "postgres://root@h/test".to_string(),
                Some("a_b".to_string())
            )
        );
        assert_eq!(
            split_schema("postgres://root@h/test?sslmode=disable&schema=s&x=1"),
            (
                "postgres://root@h/test?sslmode=disable&x=1".to_string(),
                Some("s".to_string())
            )
        );
        assert_eq!(
            split_schema("postgres://root@h/test"),
            ("postgres://root@h/test".to_string(), None)
        );
    }
}
