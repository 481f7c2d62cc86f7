//! Opens the store a `--database-url` names.

use std::sync::Arc;

use anyhow::{bail, Context};
use sagaflow_core::Store;

/// Opens `sqlite://…` (or a plain path) as SQLite and `postgres://…` as PostgreSQL.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = sagaflow_postgres::PgStore::connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
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

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
