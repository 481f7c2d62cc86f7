//! A service bound to a base URL: `--service NAME=URL`, `SAGAFLOW_SERVICES`, TOML
//! `[services.NAME]`.

use std::time::Duration;

/// How long one call may take, answer included, unless the service says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls to one service under way at once, unless the service says otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// One participant service reached over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpService {
    /// The service name: commands `NAME.cmd` go to this service.
    pub name: String,
    /// The base URL; command `cmd` is POSTed to `{url}/{cmd}`.
    pub url: String,
    /// How long one call may take, from connecting to the answer's last byte.
    pub timeout: Duration,
    /// Calls under way at once; more wait their turn.
    pub max_in_flight: usize,
}

impl HttpService {
    /// A service at `url` with the default timeout and concurrency; says what is wrong with
    /// a bad name or URL.
    pub fn new(name: &str, url: &str) -> Result<Self, String> {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!(
                "service name {name:?} must be non-empty and use only letters, digits, '_' and '-'"
            ));
        }
        // Credentials first, and never the URL itself in an error from here on: it may
        // hold a secret.
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        if authority.contains('@') {
            return Err(format!(
                "the URL of service {name:?} holds credentials (user:password@), which would be logged; the protocol has no place for them"
            ));
        }
        if url.starts_with("https://") {
            return Err(format!(
                "{url:?}: https is not built into this sagaflow; reach the service over http:// on a private network, or through a local TLS-terminating proxy"
            ));
        }
        if !url.starts_with("http://") {
            return Err(format!(
                "{url:?} is not an http:// URL (e.g. http://127.0.0.1:9000/billing)"
            ));
        }
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        if url.contains('?') || url.contains('#') {
            return Err(format!(
                "{url:?}: a base URL takes no query or fragment; the command's name is appended as a path segment"
            ));
        }
        // What the client will make of it: a bad port or host is refused here, not on
        // every call.
        if let Err(e) = reqwest::Url::parse(url) {
            return Err(format!("{url:?} is not a valid URL: {e}"));
        }
        Ok(HttpService {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        })
    }

    /// Parses `NAME=URL`.
    pub fn parse(binding: &str) -> Result<Self, String> {
        let Some((name, url)) = binding.split_once('=') else {
            return Err(format!(
                "{binding:?} is not NAME=URL (e.g. billing=http://127.0.0.1:9000)"
            ));
        };
        HttpService::new(name.trim(), url.trim())
    }

    /// Sets the timeout (at least 1 ms).
    pub fn timeout_ms(mut self, ms: u64) -> Result<Self, String> {
        if ms == 0 || ms > 3_600_000 {
            return Err(format!(
                "timeout_ms = {ms} must be from 1 to 3600000 (an hour)"
            ));
        }
        self.timeout = Duration::from_millis(ms);
        Ok(self)
    }

    /// Sets the concurrency (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Result<Self, String> {
        if n == 0 || n > 100_000 {
            return Err(format!("max_in_flight = {n} must be from 1 to 100000"));
        }
        self.max_in_flight = n;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_parse_and_bad_ones_say_why() {
        let s = HttpService::parse("billing=http://127.0.0.1:9000/api/").unwrap();
        assert_eq!(s.name, "billing");
        assert_eq!(s.url, "http://127.0.0.1:9000/api");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        for (bad, says) in [
            ("billing", "NAME=URL"),
            ("bill ing=http://x", "service name"),
            ("billing=ftp://x", "not an http://"),
            ("billing=https://x", "https"),
            ("billing=http://", "no host"),
            ("billing=http://x/?a=1", "query"),
            ("billing=http://u:p@x/", "credentials"),
            ("billing=https://u:p@x/", "credentials"),
            ("billing=http://u:p#s@x/", "credentials"),
            ("billing=http://x:99999/", "not a valid URL"),
            ("billing=http://ho st/", "not a valid URL"),
        ] {
            let e = HttpService::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("u:p"), "a secret repeated: {e}");
        }
        assert!(s.clone().timeout_ms(0).is_err());
        assert!(s.max_in_flight(0).is_err());
    }
}
