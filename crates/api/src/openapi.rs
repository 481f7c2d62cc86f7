//! The OpenAPI 3.1 document, generated from the handlers' annotations and the request and
//! response types, so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{
    dead_letters, definitions, flows, health, metrics, participants, problem, replies, sagas,
    signals,
};

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
        replies::answer,
        participants::list,
        definitions::list,
        definitions::versions,
        definitions::register,
        flows::show,
        dead_letters::list,
        dead_letters::replay,
        dead_letters::discard,
        health::healthz,
        health::readyz,
        metrics::metrics,
        document,
    ),
    components(schemas(problem::Problem)),
    modifiers(&Security),
    tags(
        (name = "sagas", description = "Start sagas and follow, cancel or resume them"),
        (name = "signals", description = "Wake parked sagas"),
        (name = "replies", description = "Participants' answers to commands, by idempotency key"),
        (name = "participants", description = "Participant services bound to an HTTP URL"),
        (name = "definitions", description = "Saga definitions"),
        (name = "flows", description = "Choreographed flows as one timeline"),
        (name = "dead-letters", description = "Messages that could not be processed"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "openapi", description = "This document"),
    )
)]
struct ApiDoc;

/// The API-key schemes, on every endpoint but the open ones. Operator endpoints (every method
/// but GET) need a key with `operate` once keys are configured; GET endpoints need `read`
/// unless the server leaves reading open, hence their empty (`{}`) alternative.
struct Security;

const OPEN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"];

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key as `Authorization: Bearer KEY`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key as `X-API-Key: KEY`",
            ))),
        );
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::PROBLEM_JSON,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        components.responses.insert(
            "Unauthorized".into(),
            problem("No API key, or one the server does not know (`unauthorized`)").into(),
        );
        components.responses.insert(
            "Forbidden".into(),
            problem("The API key lacks the right this needs: `operate` for POST and DELETE, `read` for GET (`forbidden`)").into(),
        );
        let keyed = || {
            vec![
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::new("api_key", Vec::<String>::new()),
            ]
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if OPEN_PATHS.contains(&path.as_str()) || path.starts_with("/api/docs") {
                continue;
            }
            let operations = [
                (&mut item.get, true),
                (&mut item.post, false),
                (&mut item.put, false),
                (&mut item.patch, false),
                (&mut item.delete, false),
            ];
            for (operation, reading) in operations {
                let Some(operation) = operation else { continue };
                let mut security = keyed();
                if reading {
                    security.push(SecurityRequirement::default());
                }
                operation.security = Some(security);
                let responses = &mut operation.responses.responses;
                for (status, name) in [("401", "Unauthorized"), ("403", "Forbidden")] {
                    responses.insert(status.into(), Ref::from_response_name(name).into());
                }
            }
        }
    }
}

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
