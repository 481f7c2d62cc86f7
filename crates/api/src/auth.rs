//! API keys. With none configured everything is open (the embedded default, on loopback).
//! Once keys are configured, every request but the open ones (health, readiness, metrics,
//! the OpenAPI document and its UI) needs a key: `read` for GET, `operate` for everything
//! else — unless `read_open` leaves GET to anyone.
//!
//! Keys are kept only as SHA-256 digests; a presented key is hashed and compared with every
//! configured digest in constant time.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::Problem;

/// The `X-API-Key` header, the alternative to `Authorization: Bearer`.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// What a key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// Start, cancel and resume sagas, send signals, register definitions, replay and
    /// discard dead letters: every method but GET.
    Operate,
    /// GET endpoints (unless `read_open`).
    Read,
}

impl Right {
    /// Every right, in the order they are printed.
    pub const ALL: [Right; 2] = [Right::Operate, Right::Read];

    /// Its name in configuration: `operate` or `read`.
    pub fn name(self) -> &'static str {
        match self {
            Right::Operate => "operate",
            Right::Read => "read",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Right {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Right::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown right {s:?}; the rights are operate and read"))
    }
}

/// A set of rights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    operate: bool,
    read: bool,
}

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights {
        operate: false,
        read: false,
    };

    /// These rights and `right`.
    pub fn with(mut self, right: Right) -> Rights {
        match right {
            Right::Operate => self.operate = true,
            Right::Read => self.read = true,
        }
        self
    }

    /// Whether `right` is in the set.
    pub fn has(self, right: Right) -> bool {
        match right {
            Right::Operate => self.operate,
            Right::Read => self.read,
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        !self.operate && !self.read
    }

    /// The rights in the set.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Self {
        iter.into_iter().fold(Rights::NONE, Rights::with)
    }
}

/// `operate+read`, the form `SAGAFLOW_API_KEYS` takes.
impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Right::name).collect();
        f.write_str(&names.join("+"))
    }
}

/// A configured key: its name (for logs and messages), the SHA-256 of the key, its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who holds it, e.g. `ops`; never the key itself.
    pub name: String,
    /// SHA-256 of the key's text.
    pub sha256: [u8; 32],
    /// What it allows.
    pub rights: Rights,
}

/// SHA-256 of a key's text: what the configuration stores instead of the key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lowercase hex of a digest.
pub fn to_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from its 64 hex digits (either case); the error says what is wrong with it.
pub fn parse_sha256_hex(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 {
        return Err(format!(
            "a SHA-256 is 64 hex digits, this has {} characters{}",
            hex.chars().count(),
            if hex.starts_with("sfk_") {
                " (it looks like a key itself: configure its hash, as `sagaflow key new` prints it)"
            } else {
                ""
            }
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
            _ => return Err("a SHA-256 is 64 hex digits (0-9, a-f)".to_string()),
        }
    }
    Ok(out)
}

/// What the middleware checks against.
pub(crate) struct Auth {
    keys: Vec<ApiKey>,
    read_open: bool,
    /// The apps' routes that ask for no API key (public, or guarded by a credential of
    /// their own). Every other route needs one.
    exempt: Vec<crate::routes::RouteRule>,
}

impl Auth {
    pub(crate) fn new(
        keys: Vec<ApiKey>,
        read_open: bool,
        table: &[crate::routes::RouteRule],
    ) -> Arc<Auth> {
        let exempt = table
            .iter()
            .filter(|r| r.access != crate::routes::Access::ApiKey)
            .cloned()
            .collect();
        Arc::new(Auth {
            keys,
            read_open,
            exempt,
        })
    }

    /// Whether the request is for an app route that asks for no API key.
    fn exempt(&self, req: &Request) -> bool {
        let path = req.uri().path();
        self.exempt.iter().any(|r| r.matches(req.method(), path))
    }

    /// The key whose digest matches, comparing with every configured digest in constant
    /// time so the answer's timing says nothing about how close a guess was.
    fn find(&self, presented: &str) -> Option<&ApiKey> {
        let digest = hash_key(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.sha256.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}

/// Paths anyone may call: probes, metrics and the API's description.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/api/v1/openapi.json" | "/api/docs"
    ) || path.starts_with("/api/docs/")
        || crate::dashboard::is_open(path)
}

/// The key a request carries: `Authorization: Bearer KEY`, else `X-API-Key: KEY`.
fn presented(req: &Request) -> Option<&str> {
    presented_in(req.headers())
}

/// The cookie the dashboard keeps a browser's key in (set by `/ui/key`).
pub(crate) const KEY_COOKIE: &str = "sagaflow_key";

fn presented_in(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|k| !k.is_empty());
    bearer
        .or_else(|| {
            headers
                .get(&X_API_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
        })
        .or_else(|| {
            // A browser on the dashboard presents its key in a same-site cookie.
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(name, _)| *name == KEY_COOKIE)
                .map(|(_, key)| key.trim())
                .filter(|k| !k.is_empty())
        })
}

/// Checks the API key a request carries against `keys`, for endpoints an application keeps
/// outside the engine's API (an internal endpoint of a reference system): `Ok` with no keys
/// configured (the open embedded default, as for the API itself) or with a key that has
/// `needed`; else 401 `unauthorized` or 403 `forbidden`.
pub fn authorize(keys: &[ApiKey], headers: &HeaderMap, needed: Right) -> Result<(), Problem> {
    if keys.is_empty() {
        return Ok(());
    }
    let Some(presented) = presented_in(headers) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("this endpoint needs an API key with the `{needed}` right: send it as `X-API-Key: KEY`"),
        ));
    };
    let auth = Auth {
        keys: keys.to_vec(),
        read_open: false,
        exempt: Vec::new(),
    };
    match auth.find(presented) {
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key sent is not one this server knows",
        )),
        Some(key) if !key.rights.has(needed) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the API key {:?} lacks the `{needed}` right", key.name),
        )),
        Some(_) => Ok(()),
    }
}

/// Middleware: lets a request through, or answers 401 `unauthorized` / 403 `forbidden`.
pub(crate) async fn require(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if auth.keys.is_empty() || is_open(req.uri().path()) || auth.exempt(&req) {
        return next.run(req).await;
    }
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if reading && auth.read_open {
        return next.run(req).await;
    }
    let needed = if reading { Right::Read } else { Right::Operate };
    let Some(key) = presented(&req) else {
        if crate::dashboard::is_page(req.uri().path()) {
            let page = crate::dashboard::key_form("This server asks for an API key with the `read` right to show the dashboard (and `operate` for its actions).");
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
        return unauthorized(format!(
            "{} {} needs an API key with the `{needed}` right: send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            req.method(),
            req.uri().path()
        ));
    };
    let Some(key) = auth.find(key) else {
        if crate::dashboard::is_page(req.uri().path()) {
            let page = crate::dashboard::key_form("The API key this browser holds is not one this server knows (any more); enter another.");
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
        return unauthorized(
            "the API key sent is not one this server knows; check it, or ask for one (`sagaflow key new` makes a key and the configuration line for it)"
                .to_string(),
        );
    };
    if !key.rights.has(needed) {
        tracing::info!(key = %key.name, %needed, path = %req.uri().path(), "API key lacks a right");
        if crate::dashboard::is_page(req.uri().path()) {
            return crate::dashboard::forbidden(&format!(
                "The key {:?} lacks the `{needed}` right this needs.",
                key.name
            ));
        }
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the API key {:?} lacks the `{needed}` right, which {} {} needs; it has: {}",
                key.name,
                req.method(),
                req.uri().path(),
                if key.rights.is_empty() {
                    "none".to_string()
                } else {
                    key.rights.to_string()
                }
            ),
        )
        .into_response();
    }
    next.run(req).await
}

fn unauthorized(detail: String) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sagaflow\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_hex_is_explained() {
        let digest = hash_key("sfk_secret");
        let hex = to_hex(&digest);
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_sha256_hex(&hex), Ok(digest));
        assert_eq!(parse_sha256_hex(&hex.to_uppercase()), Ok(digest));
        assert!(parse_sha256_hex("abc")
            .unwrap_err()
            .contains("3 characters"));
        let not_hex = "g".repeat(64);
        assert!(parse_sha256_hex(&not_hex).unwrap_err().contains("hex"));
        let key = format!("sfk_{hex}");
        assert!(parse_sha256_hex(&key)
            .unwrap_err()
            .contains("looks like a key"));
        // A well-known vector, so the digest is plain SHA-256 of the text.
        assert_eq!(
            to_hex(&hash_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rights_parse_and_print() {
        assert_eq!("operate".parse::<Right>(), Ok(Right::Operate));
        assert!("admin".parse::<Right>().unwrap_err().contains("\"admin\""));
        let both: Rights = [Right::Read, Right::Operate].into_iter().collect();
        assert_eq!(both.to_string(), "operate+read");
        assert!(both.has(Right::Read) && both.has(Right::Operate));
        assert!(!Rights::NONE.with(Right::Read).has(Right::Operate));
    }
}
