//! `GET /v1/places` (the places the caller may see) and `GET /healthz`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::auth::AuthUser;
use crate::error::{Result, error_body};
use crate::model::Place;
use crate::state::AppState;
use crate::store::prelude::*;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/places", get(places))
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database does not answer",
            )
        }
    }
}

/// `GET /v1/places` reply.
#[derive(Debug, Serialize)]
pub struct PlaceList {
    /// Every place within the caller's grants, by path (parents before children).
    pub places: Vec<Place>,
}

async fn places(State(state): State<AppState>, user: AuthUser) -> Result<Json<PlaceList>> {
    let places = state.store.places_within(&user.places).await?;
    Ok(Json(PlaceList { places }))
}
