//! The dashboard: server-rendered HTML pages (maud templates, checked at compile time) at
//! `/` and under `/ui`, with one small vendored script library (htmx) for partial updates.
//! Everything is embedded in the binary and works offline; every page reads without
//! JavaScript. Pages use the engine directly and sit behind the API's own key check: with keys
//! configured, a browser presents its key once (`/ui/key`, kept in a same-site cookie) and
//! operator actions need the `operate` right, exactly as over the HTTP API.
//!
//! One file per page: [`overview`], [`sagas`] (the list), [`saga`] (one saga, its timeline
//! and the actions), [`flows`], [`dead_letters`], [`definitions`]; [`timeline`] draws the SVG.

use axum::extract::Form;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use crate::ApiState;

pub(crate) mod dead_letters;
pub(crate) mod definitions;
pub(crate) mod flows;
pub(crate) mod overview;
pub(crate) mod saga;
pub(crate) mod sagas;
pub(crate) mod timeline;

/// htmx, vendored (BSD-0): partial updates without a build step.
const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");

const STYLE: &str = include_str!("../../assets/dashboard.css");

/// The dashboard's routes.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/ui/sagas", get(sagas::page))
        .route("/ui/sagas/rows", get(sagas::rows))
        .route("/ui/sagas/{id}", get(saga::page))
        .route("/ui/sagas/{id}/cancel", post(saga::cancel))
        .route("/ui/sagas/{id}/resume", post(saga::resume))
        .route("/ui/sagas/{id}/signal", post(saga::signal))
        .route("/ui/flows", get(flows::list))
        .route("/ui/flows/go", get(flows::go))
        .route("/ui/flows/{id}", get(flows::page))
        .route("/ui/dead-letters", get(dead_letters::page))
        .route("/ui/dead-letters/act", post(dead_letters::act))
        .route("/ui/definitions", get(definitions::page))
        .route("/ui/key", get(key_page).post(set_key))
        .route("/ui/assets/htmx.min.js", get(htmx))
        .route("/ui/assets/dashboard.css", get(style))
        .route_layer(axum::middleware::from_fn(no_framing))
}

/// The page for a form posted from another site (refused at the edge, `crate::origin`).
pub(crate) fn refused_from_another_site() -> Response {
    let page = layout(
        "Refused",
        "",
        None,
        html! { p.message.refused role="alert" { "This form was sent from another site; the dashboard only takes its own." } },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// The dashboard's pages are never shown inside another site's frame (clickjacking).
async fn no_framing(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// A path segment, percent-encoded (ids in links may hold `/`, `?`, `#` or spaces).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Paths the key check lets through: the key form and the assets.
pub(crate) fn is_open(path: &str) -> bool {
    path == "/ui/key" || path.starts_with("/ui/assets/")
}

/// Whether a path is one of the dashboard's pages (a refusal there is a page, not JSON).
pub(crate) fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

async fn htmx() -> Response {
    asset(HTMX, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The navigation's entries: (path, label).
const NAV: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/ui/sagas", "Sagas"),
    ("/ui/flows", "Flows"),
    ("/ui/dead-letters", "Dead letters"),
    ("/ui/definitions", "Definitions"),
];

/// A whole page: head, navigation (with `current` marked), an optional message, the body.
pub(crate) fn layout(
    title: &str,
    current: &str,
    message: Option<&Message>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sagaflow" }
                link rel="stylesheet" href="/ui/assets/dashboard.css";
                script src="/ui/assets/htmx.min.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Dashboard" {
                        span.brand { "sagaflow" }
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(m) = message {
                        p class=(if m.ok { "message ok" } else { "message refused" }) role="status" { (m.text) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A message shown once at the top of a page (after an action).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Message {
    /// Whether the action went through.
    pub ok: bool,
    /// What happened.
    pub text: String,
}

/// Redirects to `path` with a message for the next page.
pub(crate) fn redirect_with(path: &str, ok: bool, text: &str) -> Response {
    let query = serde_urlencoded::to_string([("ok", if ok { "1" } else { "0" }), ("msg", text)])
        .unwrap_or_default();
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}{query}")).into_response()
}

/// The message a redirect carried, if any.
pub(crate) fn message_from(ok: Option<&str>, msg: Option<&str>) -> Option<Message> {
    msg.filter(|m| !m.is_empty()).map(|m| Message {
        ok: ok == Some("1"),
        text: m.chars().take(500).collect(),
    })
}

/// A status as a labelled badge.
pub(crate) fn status_badge(status: &str) -> Markup {
    html! { span class={"badge " (status)} { (status) } }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn when(ms: i64) -> String {
    crate::utc_time(ms)
}

/// A duration in milliseconds, short.
pub(crate) fn took(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 7_200_000 => format!("{} min", ms / 60_000),
        ms => format!("{} h", ms / 3_600_000),
    }
}

/// The page for a key that lacks a right (an action with a read-only key).
pub(crate) fn forbidden(why: &str) -> Response {
    let page = layout(
        "Not allowed",
        "",
        None,
        html! { p.message.refused role="alert" { (why) } },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// A page for an engine failure.
pub(crate) fn failure(e: impl std::fmt::Display) -> Response {
    let page = layout(
        "Unavailable",
        "",
        None,
        html! { p.message.refused role="alert" { "The engine could not answer: " (e.to_string()) } },
    );
    (StatusCode::SERVICE_UNAVAILABLE, page).into_response()
}

/// A page saying there is no such thing.
pub(crate) fn not_found(what: &str) -> Response {
    let page = layout(
        "Not found",
        "",
        None,
        html! { p.message.refused role="alert" { (what) } },
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

/// The page asking for an API key (when keys are configured and none was presented).
pub(crate) fn key_form(why: &str) -> Markup {
    layout(
        "API key",
        "",
        None,
        html! {
            p { (why) }
            form method="post" action="/ui/key" {
                label for="key" { "API key" }
                input id="key" name="key" type="password" autocomplete="off" required;
                button type="submit" { "Use this key" }
            }
            p.hint { "The key is kept in a cookie for this site only; the server stores only its SHA-256." }
        },
    )
}

async fn key_page() -> Markup {
    key_form("This server asks for an API key (`sagaflow key new` makes one).")
}

#[derive(Debug, Deserialize)]
struct KeyForm {
    key: String,
}

async fn set_key(headers: axum::http::HeaderMap, Form(form): Form<KeyForm>) -> Response {
    let key = form.key.trim();
    // A key is printable ASCII; anything else cannot be a cookie value either.
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return (StatusCode::BAD_REQUEST, key_form("That is not an API key.")).into_response();
    }
    // Over TLS (ended by a proxy in front, which says so), the cookie never travels in clear.
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{}={key}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{}",
        crate::auth::KEY_COOKIE,
        if tls { "; Secure" } else { "" }
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => ([(header::SET_COOKIE, v)], Redirect::to("/")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, key_form("That is not an API key.")).into_response(),
    }
}

/// Pre-escaped JSON, pretty, for `<pre>`.
pub(crate) fn pretty(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { (text) }
}

/// Raw markup (an SVG drawn by [`timeline`], which escapes its own text).
pub(crate) fn raw(svg: String) -> Markup {
    PreEscaped(svg)
}
