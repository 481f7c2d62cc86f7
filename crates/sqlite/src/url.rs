//! Where the database lives: `sqlite://./file.db`, `sqlite:file.db`, `sqlite:///abs/file.db`,
//! a plain path, or `:memory:` (in any of those spellings) for a throwaway database.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sagaflow_core::StoreError;

/// A parsed database location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A database file (created if missing).
    File(PathBuf),
    /// A database nobody else will open, gone when the store is dropped.
    Throwaway,
}

/// Parses a SQLite URL or path.
pub(crate) fn parse(url: &str) -> Result<Location, StoreError> {
    let bad = |why: &str| StoreError::Unavailable(format!("SQLite location {url:?}: {why}"));
    let trimmed = url.trim();
    let rest = if let Some(rest) = trimmed.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("sqlite:") {
        rest
    } else if trimmed.contains("://") {
        return Err(bad(
            "not a SQLite URL (use sqlite://PATH, sqlite:PATH, a plain path or :memory:)",
        ));
    } else {
        trimmed
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        // `mode=rwc` (read, write, create) is what sqlx-style URLs carry and what we do anyway.
        if !(param.is_empty() || param == "mode=rwc") {
            return Err(bad(&format!(
                "unsupported parameter {param:?} (only mode=rwc is understood)"
            )));
        }
    }
    match path {
        "" => Err(bad("no path given")),
        ":memory:" => Ok(Location::Throwaway),
        path => Ok(Location::File(PathBuf::from(path))),
    }
}

/// A fresh file name in the temp directory for a throwaway database.
///
/// A temp file rather than SQLite's shared-cache memory database: shared cache locks whole
/// tables (SQLITE_LOCKED, which busy_timeout does not wait out), so it cannot give the one
/// writer plus concurrent readers that WAL gives.
pub(crate) fn throwaway_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("sagaflow-{}-{nanos}-{n}.db", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> Result<Location, String> {
        parse(p).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_usual_spellings() {
        let f = |p: &str| Ok(Location::File(PathBuf::from(p)));
        assert_eq!(file("sqlite://./data/saga.db"), f("./data/saga.db"));
        assert_eq!(file("sqlite:saga.db"), f("saga.db"));
        assert_eq!(file("sqlite:///var/lib/saga.db"), f("/var/lib/saga.db"));
        assert_eq!(file("sqlite://saga.db?mode=rwc"), f("saga.db"));
        assert_eq!(file("  ./saga.db "), f("./saga.db"));
        assert_eq!(file("/tmp/x.db"), f("/tmp/x.db"));
        for mem in [":memory:", "sqlite::memory:", "sqlite://:memory:"] {
            assert_eq!(file(mem), Ok(Location::Throwaway), "{mem}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (url, why) in [
            ("postgres://localhost/db", "not a SQLite URL"),
            ("sqlite://", "no path"),
            ("", "no path"),
            ("sqlite:x.db?mode=ro", "unsupported parameter"),
        ] {
            let e = file(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn throwaway_paths_differ() {
        assert_ne!(throwaway_path(), throwaway_path());
    }
}
