//! What every shop endpoint shares: the app kit's problem+json helpers and query
//! parameters, the page of a list endpoint, and the bearer-token extractor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use sagaflow_api::Problem;

pub use sagaflow_app_kit::http::{bad_request, engine_problem, store_problem, Page, Params};

use crate::ShopState;

/// Rows a list endpoint shows when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most rows a list endpoint shows at once.
pub const MAX_LIMIT: i64 = 500;

/// The signed-in user, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user's id.
    pub id: String,
    /// The user's email.
    pub email: String,
}

impl FromRequestParts<ShopState> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ShopState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            |why: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string());
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                unauthorized("sign in: send Authorization: Bearer <token from POST /profile/login>")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
        let claims =
            crate::identity::verify_token(&state.config.jwt_secret, token, crate::db::now_ms())
                .map_err(|why| unauthorized(&why))?;
        Ok(AuthUser {
            id: claims.sub,
            email: claims.email,
        })
    }
}
