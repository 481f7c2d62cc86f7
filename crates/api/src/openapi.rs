//! The OpenAPI 3.1 document, generated from the handlers' annotations and the request and
//! response types, so it cannot drift from the code.

use axum::Json;
use utoipa::OpenApi;

use crate::{dead_letters, definitions, health, metrics, problem, sagas, signals};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sagaflow",
        description = "Run, inspect and steer sagas. Errors are RFC 9457 problem+json with a stable `code`."
    ),
    paths(
        sagas::start,
        sagas::list,
        sagas::show,
        sagas::history,
        sagas::journal,
        sagas::cancel,
        sagas::resume,
        signals::send,
        definitions::list,
        definitions::versions,
        definitions::register,
        dead_letters::list,
        dead_letters::replay,
        dead_letters::discard,
        health::healthz,
        health::readyz,
        metrics::metrics,
        document,
    ),
    components(schemas(problem::Problem)),
    tags(
        (name = "sagas", description = "Start sagas and follow, cancel or resume them"),
        (name = "signals", description = "Wake parked sagas"),
        (name = "definitions", description = "Saga definitions"),
        (name = "dead-letters", description = "Messages that could not be processed"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "openapi", description = "This document"),
    )
)]
struct ApiDoc;

/// The API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
