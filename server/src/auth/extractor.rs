//! [`AuthUser`]: the caller of an authenticated request, extracted once per request from the
//! bearer token and checked against the database (so a disabled user, a reset password or a
//! revoked device take effect at once).

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use linli_sync_core::{DeviceId, PlaceId};

use super::keys::BAD_TOKEN;
use crate::error::{Error, Result};
use crate::model::Role;
use crate::state::AppState;
use crate::store::prelude::*;

/// The caller of an authenticated request: a valid token of an enabled user on a device that is
/// still theirs, with their grants.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// Role (read from the database, so a role change applies at once).
    pub role: Role,
    /// The device the token was issued to.
    pub device_id: DeviceId,
    /// Granted places; each covers everything below it.
    pub places: Vec<PlaceId>,
}

impl AuthUser {
    /// Whether the user may read and write records at `place`.
    pub fn can_access(&self, place: &PlaceId) -> bool {
        self.places.iter().any(|g| place.is_within(g))
    }

    /// The caller's grants narrowed to `place` (when given): the scopes to query.
    pub fn scopes_within(&self, place: Option<&PlaceId>) -> Vec<PlaceId> {
        let Some(place) = place else {
            return self.places.clone();
        };
        let mut out: Vec<PlaceId> = Vec::new();
        for g in &self.places {
            if place.is_within(g) {
                out.push(place.clone());
            } else if g.is_within(place) {
                out.push(g.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Refuses (403) unless the caller works in the back-office.
    pub fn require_back_office(&self) -> Result<()> {
        if self.role.is_back_office() {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the {} role cannot do this: back-office only",
                self.role
            )))
        }
    }

    /// Refuses (403) unless the caller is an admin.
    pub fn require_admin(&self) -> Result<()> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the {} role cannot do this: admins only",
                self.role
            )))
        }
    }
}

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let state = AppState::from_ref(state);
        let unauthorized = || Error::Unauthorized(BAD_TOKEN.into());
        let token = bearer_token(&parts.headers).ok_or_else(unauthorized)?;
        let claims = state.keys.verify(token).await?;
        state.limits.check_user(&claims.sub)?;
        AuthUser::of_claims(&state, &claims).await
    }
}

impl AuthUser {
    /// The caller a verified token names, checked against the database as it is now: refused
    /// when the user is disabled, the device revoked or the token of an earlier session. Long
    /// streams call this again now and then, so those take effect on them too.
    pub(crate) async fn of_claims(state: &AppState, claims: &super::Claims) -> Result<AuthUser> {
        let unauthorized = || Error::Unauthorized(BAD_TOKEN.into());
        let device_id: DeviceId = claims.dev.parse().map_err(|_| unauthorized())?;
        let principal = state
            .store
            .principal(&claims.sub, device_id)
            .await?
            .ok_or_else(unauthorized)?;
        // The one place that decides a device is no longer good: a revoked one is told so (its
        // phone erases itself), anything else is just unauthorized.
        if principal.device_revoked {
            return Err(Error::DeviceRevoked);
        }
        if principal.user.disabled
            || !principal.device_ok
            || principal.user.session_epoch != claims.sev
        {
            return Err(unauthorized());
        }
        let user = principal.user;
        Ok(AuthUser {
            user_id: user.id,
            username: user.username,
            role: user.role,
            device_id,
            places: principal.places,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_to_the_asked_place() {
        let p = |s: &str| s.parse::<PlaceId>().unwrap();
        let user = AuthUser {
            user_id: "u".into(),
            username: "bus1".into(),
            role: Role::Bus,
            device_id: DeviceId::new(),
            places: vec![p("hz/baiyang/haitian")],
        };
        assert!(user.can_access(&p("hz/baiyang/haitian/tianyuan/b1")));
        assert!(!user.can_access(&p("hz/baiyang/dabei")));
        assert_eq!(
            user.scopes_within(Some(&p("hz"))),
            vec![p("hz/baiyang/haitian")]
        );
        assert_eq!(
            user.scopes_within(Some(&p("hz/baiyang/haitian/tianyuan"))),
            vec![p("hz/baiyang/haitian/tianyuan")]
        );
        assert!(user.scopes_within(Some(&p("hz/baiyang/dabei"))).is_empty());
    }
}
