//! `/api/v1/definitions`: the registered definitions, and registering JSON ones at runtime.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sagaflow_engine::core::Definition;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::extract::{ApiJson, ApiPath};
use crate::problem::Problem;
use crate::ApiState;

// The core crate stays free of HTTP concerns, so the JSON form of a definition is described
// for OpenAPI here. The test `schema_mirrors_the_definition_json` keeps the two in step:
// these refuse unknown fields, so a field added to the core fails it.

/// A saga definition in its JSON form.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Definition)]
pub(crate) struct DefinitionDoc {
    /// The definition's name (letters, digits, `_`, `-`).
    pub name: String,
    /// Its version, from 1; versions live side by side.
    pub version: u32,
    /// The steps, in order.
    pub steps: Vec<StepDoc>,
    /// The saga must end within this many milliseconds of starting, or it compensates.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// A context path (dot-separated) whose value correlates signals with sagas.
    #[serde(default)]
    pub correlation_key: Option<String>,
}

/// One step of a definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Step)]
pub(crate) struct StepDoc {
    /// Unique within the definition.
    pub name: String,
    /// Compensatable, pivot or retriable.
    pub kind: StepKindDoc,
    /// The command that performs the step, `service.command`.
    pub action: String,
    /// The command that undoes it, `service.command` (compensatable steps only).
    #[serde(default)]
    pub compensation: Option<String>,
    /// Retry policy for the action and the compensation.
    #[serde(default)]
    pub retry: Option<RetryPolicyDoc>,
    /// How long one attempt may take before it counts as timed out.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run the step only when `when` holds on the saga context; `otherwise` is `skip`
    /// (default) or `fail`. Conditions: `{op: exists|truthy, path}`, `{op: equals, path,
    /// value}`, `{op: not, condition}`, `{op: all|any, conditions}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub guard: Option<Value>,
}

/// The classic saga step kinds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StepKind)]
pub(crate) enum StepKindDoc {
    /// Has a compensation; undone if the saga compensates.
    Compensatable,
    /// The point of no return.
    Pivot,
    /// After the pivot: retried until it succeeds, never compensated.
    Retriable,
}

/// How a step (or its compensation) is retried; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RetryPolicy)]
pub(crate) struct RetryPolicyDoc {
    /// Attempts in all, the first one included (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Delay before the second attempt in ms (default 100).
    #[serde(default)]
    pub initial_delay_ms: Option<u64>,
    /// Each further delay is the previous one times this (default 2.0).
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Longest delay in ms (default 30000).
    #[serde(default)]
    pub max_delay_ms: Option<u64>,
    /// Randomised fraction of the delay, 0.0 to 1.0 (default 0.2).
    #[serde(default)]
    pub jitter: Option<f64>,
}

/// Every registered definition, by name then version.
#[utoipa::path(
    get,
    path = "/api/v1/definitions",
    tag = "definitions",
    responses((status = 200, description = "Every registered definition", body = [DefinitionDoc]))
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<Definition>> {
    Json(
        state
            .engine
            .registry()
            .all()
            .iter()
            .map(|d| (**d).clone())
            .collect(),
    )
}

/// Every registered version of one definition, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/definitions/{name}",
    tag = "definitions",
    params(("name" = String, Path, description = "Definition name")),
    responses(
        (status = 200, description = "Its versions", body = [DefinitionDoc]),
        (status = 404, description = "No definition has this name", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn versions(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<Definition>>, Problem> {
    let versions: Vec<Definition> = state
        .engine
        .registry()
        .all()
        .iter()
        .filter(|d| d.name == name)
        .map(|d| (**d).clone())
        .collect();
    if versions.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "definition_not_found",
            format!("no definition is registered as {name:?}"),
        ));
    }
    Ok(Json(versions))
}

/// Registers a definition whose steps are commands to participants (`service.command`).
#[utoipa::path(
    post,
    path = "/api/v1/definitions",
    tag = "definitions",
    request_body = DefinitionDoc,
    responses(
        (status = 201, description = "Registered", body = DefinitionDoc),
        (status = 200, description = "This very definition was registered already", body = DefinitionDoc),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another definition has this name and version (`definition_conflict`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid (`invalid_definition`, naming the step and why), or the body does not fit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn register(
    State(state): State<ApiState>,
    ApiJson(def): ApiJson<Definition>,
) -> Result<(StatusCode, Json<Definition>), Problem> {
    let known = matches!(
        state.engine.registry().get(&def.name, Some(def.version)),
        Ok(existing) if *existing == def
    );
    let def = state.engine.register(def).await?;
    let status = if known {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json((*def).clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagaflow_engine::core::{Condition, Guard, GuardOtherwise, RetryPolicy, Step};

    #[test]
    fn schema_mirrors_the_definition_json() {
        let def = Definition::builder("order", 2)
            .step(
                Step::compensatable("reserve", "stock.reserve", "stock.release")
                    .retry(RetryPolicy::attempts(4, 50))
                    .timeout_ms(1000)
                    .guard(Guard {
                        when: Condition::Exists { path: "sku".into() },
                        otherwise: GuardOtherwise::Skip,
                    }),
            )
            .step(Step::pivot("charge", "billing.charge"))
            .step(Step::retriable("ship", "delivery.ship"))
            .deadline_ms(60_000)
            .correlation_key("customer")
            .build()
            .expect("a valid definition");
        let json = serde_json::to_value(&def).expect("serialises");
        let doc: Result<DefinitionDoc, _> = serde_json::from_value(json);
        assert!(doc.is_ok(), "the OpenAPI mirror no longer fits: {doc:?}");
    }
}
