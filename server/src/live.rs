//! `GET /v1/live`: server-sent events that tell a phone its places have new changes, so that it
//! syncs when told instead of polling. Events carry record ids only; the data always travels
//! through `POST /v1/sync` with its checks.
//!
//! - `hello` first: events committed before the stream opened were not heard, so sync once now.
//! - `changes` (`{"records": [...]}`): records within the caller's grants changed by another
//!   device; several at once are coalesced into one event. An empty list means events were
//!   missed (the phone was slow to read): sync anyway.
//! - `ended` (`{"reason": ...}`): the stream closes because the access token expired (refresh
//!   and reconnect), or the login no longer holds (revoked device, disabled user, new session).
//!
//! The login is checked again at every keep-alive tick, so a revocation or a grant taken away
//! reaches an open stream within [`CHECK_EVERY`]. A committed change is announced by the
//! process that committed it: with several server processes a phone hears the changes made on
//! its own node at once, and the others' at its next sync (see the README on operating at scale).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::auth::AuthUser;
use crate::auth::Claims;
use crate::auth::extractor::bearer_token;
use crate::error::{Error, Result};
use crate::metrics::LiveStreamGuard;
use crate::state::AppState;
use crate::web::live::LiveEvent;

/// How often an open stream checks that its login still holds (and sends a keep-alive).
pub const CHECK_EVERY: Duration = Duration::from_secs(15);
/// Most record ids in one `changes` event.
const MAX_IDS: usize = 100;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/live", get(live))
}

struct Listener {
    state: AppState,
    user: AuthUser,
    claims: Claims,
    rx: broadcast::Receiver<LiveEvent>,
    expires: Instant,
    said_hello: bool,
    done: bool,
    _open: LiveStreamGuard,
}

impl Listener {
    /// Whether an event is one this phone should hear of.
    fn wants(&self, event: &LiveEvent) -> Option<String> {
        match event {
            LiveEvent::Record {
                id, place, device, ..
            } if *device != self.user.device_id.to_string() && self.user.can_access(place) => {
                Some(id.clone())
            }
            _ => None,
        }
    }

    fn ended(&mut self, reason: &str) -> Event {
        self.done = true;
        Event::default()
            .event("ended")
            .data(serde_json::json!({ "reason": reason }).to_string())
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if !self.said_hello {
            self.said_hello = true;
            return Some(Event::default().event("hello").data("{}"));
        }
        loop {
            let now = Instant::now();
            if now >= self.expires {
                return Some(self.ended("token_expired"));
            }
            let wait = CHECK_EVERY.min(self.expires - now);
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Err(_) => {
                    if Instant::now() >= self.expires {
                        return Some(self.ended("token_expired"));
                    }
                    match AuthUser::of_claims(&self.state, &self.claims).await {
                        Ok(user) => {
                            // Grants may have changed: the stream follows them.
                            self.user = user;
                            return Some(Event::default().comment("alive"));
                        }
                        Err(Error::DeviceRevoked) => return Some(self.ended("device_revoked")),
                        Err(Error::Unauthorized(_)) => return Some(self.ended("unauthorized")),
                        // The database did not answer: keep the stream, check again later.
                        Err(_) => return Some(Event::default().comment("alive")),
                    }
                }
                // Announcements were missed: an empty list means "sync".
                Ok(Ok(LiveEvent::Resync)) => {
                    return Some(Event::default().event("changes").data(r#"{"records":[]}"#));
                }
                Ok(Ok(event)) => {
                    let Some(first) = self.wants(&event) else {
                        continue;
                    };
                    let mut ids = vec![first];
                    let mut lagged = false;
                    while ids.len() < MAX_IDS {
                        match self.rx.try_recv() {
                            Ok(e) => {
                                if let Some(id) = self.wants(&e)
                                    && !ids.contains(&id)
                                {
                                    ids.push(id);
                                }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                lagged = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if lagged {
                        ids.clear();
                    }
                    let data = serde_json::json!({ "records": ids }).to_string();
                    return Some(Event::default().event("changes").data(data));
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    return Some(Event::default().event("changes").data(r#"{"records":[]}"#));
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }
}

async fn live(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    // The extractor checked the token; its expiry bounds the stream.
    let token = bearer_token(&headers)
        .ok_or_else(|| Error::Unauthorized("a bearer token is required".into()))?;
    let claims = state.keys.verify(token).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A token past its expiry may still verify (within the verifier's leeway for clock skew):
    // a stream would end at once, and a phone would reconnect in a loop. Refused, it refreshes.
    if claims.exp <= now {
        return Err(Error::Unauthorized(
            "the access token has expired: refresh it".into(),
        ));
    }
    let expires = Instant::now() + Duration::from_secs(claims.exp - now);
    let listener = Listener {
        rx: state.live.subscribe(),
        _open: state.metrics.live_stream_opened(),
        state,
        user,
        claims,
        expires,
        said_hello: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(listener, |mut l| async move {
        let event = l.next().await?;
        Some((Ok(event), l))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
