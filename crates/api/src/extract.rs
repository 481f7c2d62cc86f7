//! Extractors that turn every bad request into a problem a person can act on, instead of
//! axum's plain-text rejections: JSON bodies, optional JSON bodies, query strings and paths.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::problem::Problem;

/// A JSON request body; refused with 415, 400, 413 or 422 problems (see [`parse_json`]).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        require_json(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out altogether: an empty body, or JSON `null` (which the
/// document allows), means `T::default()`.
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let headers = req.headers().clone();
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        require_json(&headers)?;
        parse_json::<Option<T>>(&bytes).map(|body| OptionalJson(body.unwrap_or_default()))
    }
}

/// Reads the whole body within the configured limit (`DefaultBodyLimit`).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than this server accepts; send a smaller body \
                 (the limit is the server's body_limit_bytes setting)",
            )
        } else {
            Problem::new(
                rejection.status(),
                "unreadable_body",
                format!(
                    "the request body could not be read: {}",
                    rejection.body_text()
                ),
            )
        }
    })
}

/// Refuses a body that does not say it is JSON: `application/json` or `application/…+json`.
fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        return Ok(());
    }
    let got = if content_type.is_empty() {
        "no Content-Type".to_string()
    } else {
        format!("Content-Type {content_type:?}")
    };
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("the body must be JSON sent with Content-Type: application/json; got {got}"),
    ))
}

/// Parses a JSON body. Syntax errors are 400 `malformed_json`; a well-formed document of
/// the wrong shape is 422 `unknown_field`, `missing_field` or `wrong_type`. The detail says
/// where (the field path, and serde's line and column).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the request body is empty; send a JSON object",
        ));
    }
    refuse_nul_in_json(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_problem(e.inner(), (path != ".").then_some(path))
    })?;
    // Trailing garbage after the document is a syntax error too.
    de.end().map_err(|e| json_problem(&e, None))?;
    Ok(value)
}

/// The answer to a NUL character in an id, a path, a query or a body: no store keeps one
/// (PostgreSQL refuses it in text), so it is refused here, the same on every store.
fn nul_problem(where_: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "nul_character",
        format!("{where_} holds a NUL character (\\u0000), which no field may contain"),
    )
}

/// Refuses a JSON body with a NUL character in any string or key. Cheap for every other
/// body: the document is walked only when its text holds the escape at all.
fn refuse_nul_in_json(bytes: &[u8]) -> Result<(), Problem> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    fn holds_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(holds_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v))
            }
            _ => false,
        }
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) if holds_nul(&v) => Err(nul_problem("the body")),
        _ => Ok(()),
    }
}

/// Middleware: a request whose path or query holds an encoded NUL (`%00`) is answered 400
/// `nul_character` before any handler or store sees it.
pub(crate) async fn refuse_nul(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = req.uri();
    let holds = |text: &str| text.as_bytes().windows(3).any(|w| w == b"%00");
    if holds(uri.path()) {
        return nul_problem("the path").into_response();
    }
    if uri.query().is_some_and(holds) {
        return nul_problem("the query").into_response();
    }
    next.run(req).await
}

fn json_problem(error: &serde_json::Error, path: Option<String>) -> Problem {
    let message = error.to_string();
    let at = path.map(|p| format!("at `{p}`: ")).unwrap_or_default();
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {message}"),
        ),
        Category::Data => {
            // serde's messages are the only signal of which data error it was.
            let code = if message.starts_with("unknown field") {
                "unknown_field"
            } else if message.starts_with("missing field") {
                "missing_field"
            } else {
                "wrong_type"
            };
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                format!("the body does not fit this endpoint {at}{message}"),
            )
        }
    }
}

/// A query string; anything it cannot be read as is 400 `bad_filter`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_filter",
                rejection.body_text(),
            )),
        }
    }
}

/// A path parameter; a segment that cannot be decoded is 400 `bad_path`.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_path",
                rejection.body_text(),
            )),
        }
    }
}

/// A list's `limit` parameter: `default` when absent, else a whole number from 1 to `max`
/// (400 `bad_filter` naming `limit` otherwise).
pub(crate) fn page_limit(
    text: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, crate::problem::Problem> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(crate::problem::Problem::bad_filter(
            "limit",
            format!("{text:?} is not a whole number from 1 to {max}"),
        )),
    }
}
