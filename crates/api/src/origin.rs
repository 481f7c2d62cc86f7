//! Where a request comes from: a browser's state-changing request sent from another site
//! (cross-site request forgery) is refused on every route an API key would guard — in every
//! mode, since with no keys, or with the dashboard's key in a cookie, nothing else tells the
//! operator's own click from a page elsewhere — and, when the server is open on loopback, a
//! request naming a host that is not loopback (DNS rebinding) is refused too.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::routes::{Access, RouteRule};

/// What the guard knows.
pub(crate) struct Origins {
    /// App routes guarded by a credential of their own or public: a browser app elsewhere
    /// may call them (its user's token is no cookie a forger could ride on).
    exempt: Vec<RouteRule>,
    /// The host names requests may name (`None`: any).
    allowed_hosts: Option<Vec<String>>,
}

impl Origins {
    pub(crate) fn new(table: &[RouteRule], allowed_hosts: Option<Vec<String>>) -> Arc<Origins> {
        Arc::new(Origins {
            exempt: table
                .iter()
                .filter(|r| r.access != Access::ApiKey)
                .cloned()
                .collect(),
            allowed_hosts,
        })
    }
}

/// The host names of a server open on loopback.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// A browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); a request that
/// says nothing (curl, a script, a service) is not a browser's and is let through.
pub(crate) fn from_another_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.split_once("://").map_or(o, |(_, rest)| rest));
    fetch_site == "cross-site"
        || fetch_site == "same-site"
        || origin_host.is_some_and(|o| o == "null" || o != host)
}

/// The host a request names, without its port.
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let name = if host.starts_with('[') {
        host.split_once(']').map(|(v6, _)| format!("{v6}]"))?
    } else {
        host.split(':').next()?.to_string()
    };
    Some(name.to_ascii_lowercase())
}

fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: refuses a request for a host not allowed (421 `unknown_host`) and a
/// cross-site state-changing request (403 `cross_site`; a page on the dashboard).
pub(crate) async fn guard(
    State(origins): State<Arc<Origins>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(allowed) = &origins.allowed_hosts {
        let named = host_name(req.headers());
        // No Host at all is no browser's request (every browser names the host).
        let known = named
            .as_deref()
            .is_none_or(|n| allowed.iter().any(|a| a == n) || n.ends_with(".localhost"));
        if !known {
            return Problem::new(
                StatusCode::MISDIRECTED_REQUEST,
                "unknown_host",
                format!(
                    "this server is open on loopback and answers only for {}; the request named {:?}",
                    allowed.join(", "),
                    named.unwrap_or_default()
                ),
            )
            .into_response();
        }
    }
    let path = req.uri().path();
    if !safe(req.method())
        && !origins.exempt.iter().any(|r| r.matches(req.method(), path))
        && from_another_site(req.headers())
    {
        if crate::dashboard::is_page(path) {
            return crate::dashboard::refused_from_another_site();
        }
        return Problem::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!(
                "{} {path} was sent by a browser from another site; this server takes state-changing requests only from its own pages and from clients that are not browsers",
                req.method()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_browser_elsewhere_is_told_from_this_site_and_from_a_script() {
        assert!(!from_another_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!from_another_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8080"),
        ])));
        assert!(from_another_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(from_another_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ])));
        assert!(from_another_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
        ])));
    }

    #[test]
    fn host_names_lose_their_port() {
        let name = |h: &str| host_name(&headers(&[("host", h)]));
        assert_eq!(name("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(name("LocalHost").as_deref(), Some("localhost"));
        assert_eq!(name("evil.example:80").as_deref(), Some("evil.example"));
    }
}
