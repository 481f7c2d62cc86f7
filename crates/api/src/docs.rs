//! Swagger UI at `/api/docs`, served from the binary: the page and the static files of the
//! vendored `swagger-ui-dist` (see `assets/swagger-ui/README.md`), so it works offline and
//! loads nothing from elsewhere. Not API operations, so not in the OpenAPI document.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("docs.html");
const CSS: &str = include_str!("../assets/swagger-ui/swagger-ui.css");
const BUNDLE: &str = include_str!("../assets/swagger-ui/swagger-ui-bundle.js");
const FAVICON: &[u8] = include_bytes!("../assets/swagger-ui/favicon-32x32.png");

/// The assets change only when the vendored version does: a week in caches. The page is
/// revalidated every time, so it is always this build's.
const ASSET_CACHE: &str = "public, max-age=604800";

/// The routes under `/api/docs`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/api/docs", get(page))
        .route("/api/docs/", get(page))
        .route("/api/docs/swagger-ui.css", get(css))
        .route("/api/docs/swagger-ui-bundle.js", get(bundle))
        .route("/api/docs/favicon-32x32.png", get(favicon))
}

fn respond(content_type: &'static str, cache: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn page() -> Response {
    respond("text/html; charset=utf-8", "no-cache", PAGE)
}

async fn css() -> Response {
    respond("text/css; charset=utf-8", ASSET_CACHE, CSS)
}

async fn bundle() -> Response {
    respond("application/javascript; charset=utf-8", ASSET_CACHE, BUNDLE)
}

async fn favicon() -> Response {
    respond("image/png", ASSET_CACHE, FAVICON)
}
