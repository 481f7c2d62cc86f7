//! The unread-counter cache: Redis when a URL is given (every process of a distributed
//! deployment shares it), else a map in this process (the embedded default, one process).
//!
//! The database is the source of truth; the cache only ever follows it. Every counter row has
//! a version that grows with each change, and a cached counter is replaced only by a newer
//! version — so a write that failed (never committed) never reaches the cache, and two
//! writers or a writer and a reader filling a miss cannot leave an older value on top of a
//! newer one, whatever order their cache writes arrive in.
//!
//! Processes that share a database over a broker but have no Redis use no cache at all: a
//! map in one process would never see another's writes.
//!
//! One entry per user: a Redis hash `social:unread:{user}` whose fields are the user's dialogs
//! (`"version:unread:partner"`) plus `_loaded`, set only by a reader that filled the entry
//! with all of the user's counters; an entry without it is a miss (a writer may have created it
//! with one dialog). Entries expire ten minutes after a reader filled them, and a cache that
//! errs or takes longer than 250 ms is skipped: reads go to the database, and an entry whose
//! write failed is dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;

/// One cached counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    /// The dialog.
    pub dialog_id: String,
    /// The other member of the dialog.
    pub partner_id: String,
    /// Unread messages.
    pub unread: i64,
    /// The counter row's version.
    pub version: i64,
}

/// How long an entry stays after a reader filled it.
const TTL: Duration = Duration::from_secs(600);

/// The longest a cache call may take before the database is asked instead (or, for a
/// write, before the entry is dropped): a slow Redis must not hold up replies and reads.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// Sets each given field unless the cached one has the same or a newer version; a reader's
/// fill marks the entry loaded and renews its expiry, a writer's update only sets one on an
/// entry that has none — so every entry is refilled from the database within the expiry,
/// however busy its user. KEYS[1] the hash; ARGV: loaded (0/1), ttl ms,
/// then (field, value, version) triples.
const MERGE: &str = r#"
for i = 3, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local newer = true
  if cur then
    local v = tonumber(string.match(cur, '^(%d+):'))
    if v and v >= tonumber(ARGV[i + 2]) then newer = false end
  end
  if newer then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], '_loaded', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"#;

/// Users the in-process cache holds at most, so memory stays bounded however many read.
pub const MEMORY_USERS: usize = 10_000;

#[derive(Debug, Default)]
struct Entry {
    loaded: bool,
    dialogs: HashMap<String, Counter>,
}

/// The cache.
#[derive(Clone)]
pub struct UnreadCache {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Off,
    Memory(Arc<RwLock<HashMap<String, Entry>>>),
    Redis {
        redis: Arc<Lazy>,
        merge: Arc<redis::Script>,
    },
}

/// A Redis connection made on first use — so a process starts while Redis is away — and
/// then kept (a `ConnectionManager` reconnects by itself). After a failed connect, callers
/// skip the cache for a second instead of each waiting on a dead server.
struct Lazy {
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    retry_after_ms: std::sync::atomic::AtomicI64,
}

impl Lazy {
    async fn get(&self) -> Option<ConnectionManager> {
        use std::sync::atomic::Ordering;
        if let Some(c) = self.connection.get() {
            return Some(c.clone());
        }
        let now = sagaflow_app_kit::sql::now_ms();
        if now < self.retry_after_ms.load(Ordering::Relaxed) {
            return None;
        }
        let connect = self.connection.get_or_try_init(|| {
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone())
        });
        match tokio::time::timeout(CALL_TIMEOUT * 8, connect).await {
            Ok(Ok(c)) => Some(c.clone()),
            failed => {
                if let Ok(Err(e)) = failed {
                    tracing::warn!(error = %e, "Redis does not answer; the cache is skipped for now");
                }
                self.retry_after_ms.store(now + 1_000, Ordering::Relaxed);
                None
            }
        }
    }
}

impl std::fmt::Debug for UnreadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.backend {
            Backend::Off => "UnreadCache::Off",
            Backend::Memory(_) => "UnreadCache::Memory",
            Backend::Redis { .. } => "UnreadCache::Redis",
        })
    }
}

impl Default for UnreadCache {
    fn default() -> Self {
        UnreadCache::memory()
    }
}

fn key(user: &str) -> String {
    format!("social:unread:{user}")
}

impl UnreadCache {
    /// A cache in this process.
    pub fn memory() -> Self {
        UnreadCache {
            backend: Backend::Memory(Arc::default()),
        }
    }

    /// No cache: every read goes to the database. For processes that share counters with
    /// others but have no Redis: a cache in one process would not see the others' writes.
    pub fn off() -> Self {
        UnreadCache {
            backend: Backend::Off,
        }
    }

    /// A cache in Redis at `url` (`redis://HOST:PORT[/DB]`): an invalid URL is an error; a
    /// Redis that does not answer yet is not (the cache is skipped until it does).
    pub async fn redis(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "the Redis URL {:?} is not valid: {e}",
                sagaflow_core::redact_url(url)
            )
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let redis = Arc::new(Lazy {
            client,
            config,
            connection: tokio::sync::OnceCell::new(),
            retry_after_ms: std::sync::atomic::AtomicI64::new(0),
        });
        if redis.get().await.is_none() {
            tracing::warn!(
                url,
                "Redis does not answer at start; counters are read from the database until it does"
            );
        }
        Ok(UnreadCache {
            backend: Backend::Redis {
                redis,
                merge: Arc::new(redis::Script::new(MERGE)),
            },
        })
    }

    /// Whether this is Redis.
    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis { .. })
    }

    /// A user's counters when the entry is loaded; `None` on a miss or when the cache errs.
    pub async fn get(&self, user: &str) -> Option<Vec<Counter>> {
        match &self.backend {
            Backend::Off => None,
            Backend::Memory(map) => {
                let map = map.read().unwrap_or_else(|p| p.into_inner());
                let entry = map.get(user).filter(|e| e.loaded)?;
                Some(entry.dialogs.values().cloned().collect())
            }
            Backend::Redis { redis, .. } => {
                let mut c = redis.get().await?;
                let read = tokio::time::timeout(
                    CALL_TIMEOUT,
                    redis::cmd("HGETALL").arg(key(user)).query_async(&mut c),
                )
                .await;
                let fields: HashMap<String, String> = match read {
                    Ok(Ok(f)) => f,
                    _ => {
                        tracing::debug!("cache read failed; reading the database");
                        return None;
                    }
                };
                if !fields.contains_key("_loaded") {
                    return None;
                }
                Some(
                    fields
                        .into_iter()
                        .filter(|(f, _)| f != "_loaded")
                        .filter_map(|(dialog_id, v)| parse(dialog_id, &v))
                        .collect(),
                )
            }
        }
    }

    /// Writes counters read from the database (committed), newer versions only; `loaded`
    /// when they are all of the user's counters. An error is logged: the entry expires, or
    /// the next write or reconciliation repairs it.
    pub async fn merge(&self, user: &str, counters: &[Counter], loaded: bool) {
        match &self.backend {
            Backend::Off => {}
            Backend::Memory(map) => {
                let mut map = map.write().unwrap_or_else(|p| p.into_inner());
                if map.len() >= MEMORY_USERS && !map.contains_key(user) {
                    // Full: make room by forgetting one user (any: the cache is only a
                    // shortcut; that user's next read goes to the database).
                    if let Some(other) = map.keys().next().cloned() {
                        map.remove(&other);
                    }
                }
                let entry = map.entry(user.to_string()).or_default();
                for c in counters {
                    let newer = entry
                        .dialogs
                        .get(&c.dialog_id)
                        .is_none_or(|cur| cur.version < c.version);
                    if newer {
                        entry.dialogs.insert(c.dialog_id.clone(), c.clone());
                    }
                }
                entry.loaded |= loaded;
            }
            Backend::Redis { redis, merge } => {
                let Some(mut c) = redis.get().await else {
                    return;
                };
                let mut invocation = merge.key(key(user));
                invocation
                    .arg(if loaded { "1" } else { "0" })
                    .arg(TTL.as_millis() as u64);
                for counter in counters {
                    invocation
                        .arg(&counter.dialog_id)
                        .arg(format!(
                            "{}:{}:{}",
                            counter.version, counter.unread, counter.partner_id
                        ))
                        .arg(counter.version);
                }
                let written =
                    tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<i64>(&mut c))
                        .await;
                if !matches!(written, Ok(Ok(_))) {
                    tracing::warn!(user, "cache write failed; dropping the entry");
                    // An entry that missed a write must not be read: drop it (best effort;
                    // if Redis is away, its expiry and reconciliation bound the staleness).
                    let _ = tokio::time::timeout(
                        CALL_TIMEOUT,
                        redis::cmd("DEL").arg(key(user)).query_async::<i64>(&mut c),
                    )
                    .await;
                }
            }
        }
    }

    /// Forgets every entry (for tests and operators; the next reads refill from the
    /// database).
    pub async fn clear(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Off => Ok(()),
            Backend::Memory(map) => {
                map.write().unwrap_or_else(|p| p.into_inner()).clear();
                Ok(())
            }
            Backend::Redis { redis, .. } => {
                let mut c = redis
                    .get()
                    .await
                    .ok_or_else(|| "Redis does not answer".to_string())?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("social:unread:*")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(keys)
                        .query_async::<i64>(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }
}

fn parse(dialog_id: String, value: &str) -> Option<Counter> {
    let mut parts = value.splitn(3, ':');
    let version = parts.next()?.parse().ok()?;
    let unread = parts.next()?.parse().ok()?;
    let partner_id = parts.next()?.to_string();
    Some(Counter {
        dialog_id,
        partner_id,
        unread,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(dialog: &str, unread: i64, version: i64) -> Counter {
        Counter {
            dialog_id: dialog.to_string(),
            partner_id: "p".to_string(),
            unread,
            version,
        }
    }

    #[tokio::test]
    async fn the_memory_cache_holds_a_bounded_number_of_users() {
        let cache = UnreadCache::memory();
        for i in 0..MEMORY_USERS + 500 {
            cache
                .merge(&format!("u{i}"), &[counter("d", 1, 1)], true)
                .await;
        }
        let Backend::Memory(map) = &cache.backend else {
            unreachable!()
        };
        assert_eq!(map.read().unwrap().len(), MEMORY_USERS);
        // The newest is there; an evicted user is a miss, read from the database again.
        assert!(cache
            .get(&format!("u{}", MEMORY_USERS + 499))
            .await
            .is_some());
        let misses = (0..MEMORY_USERS + 500)
            .filter(|i| map.read().unwrap().get(&format!("u{i}")).is_none())
            .count();
        assert_eq!(misses, 500);
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one_and_partial_entries_are_misses() {
        let cache = UnreadCache::memory();
        cache.merge("u", &[counter("d1", 3, 5)], false).await;
        assert_eq!(
            cache.get("u").await,
            None,
            "written by a writer only: a miss"
        );
        cache
            .merge("u", &[counter("d1", 1, 4), counter("d2", 0, 1)], true)
            .await;
        let mut got = cache.get("u").await.unwrap();
        got.sort_by(|a, b| a.dialog_id.cmp(&b.dialog_id));
        assert_eq!(got, vec![counter("d1", 3, 5), counter("d2", 0, 1)]);
    }

    #[test]
    fn values_parse_back() {
        assert_eq!(
            parse("d".into(), "7:2:p"),
            Some(Counter {
                dialog_id: "d".into(),
                partner_id: "p".into(),
                unread: 2,
                version: 7
            })
        );
        assert_eq!(parse("d".into(), "x"), None);
    }
}
