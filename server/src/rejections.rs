//! `GET /v1/rejections`: the pushes the server refused, for the back-office (a rejected change is
//! never silently dropped: the phone keeps it and shows why, and the office can see it here).
//!
//! Office and admin only; each sees the rejections within its own grants (by the refused
//! record's place, or the pusher's first grant when the bytes named no record place).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::Result;
use crate::extract::QueryParams;
use crate::state::AppState;
use crate::store::RejectionView;
use crate::store::prelude::*;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/rejections", get(list))
}

/// Query of `GET /v1/rejections`.
#[derive(Debug, Default, Deserialize)]
pub struct RejectionQuery {
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub before: Option<i64>,
}

/// `GET /v1/rejections` reply.
#[derive(Debug, Serialize)]
pub struct RejectionPage {
    /// Newest first: who pushed, from which device, which record, why.
    pub rejections: Vec<RejectionView>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<RejectionQuery>,
) -> Result<Json<RejectionPage>> {
    user.require_back_office()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut rows = state
        .store
        .list_rejections(&user.places, q.before, limit + 1)
        .await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RejectionPage {
        rejections: rows,
        next,
    }))
}
