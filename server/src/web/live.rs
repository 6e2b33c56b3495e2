//! Live pages: every committed change is published on an in-process hub, and open back-office
//! pages hear about records within their user's grants through server-sent events
//! (`GET /office/events`), then fetch the fresh rows or detail themselves. Events carry ids only:
//! what a page shows is always read through the same checked handlers as a reload.
//!
//! A stream belongs to a session: it ends when the session signs out (at once, through the hub)
//! or goes idle or is revoked (checked at every keep-alive tick).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use linli_sync_core::PlaceId;
use tokio::sync::broadcast;

use super::session::{WebUser, still_live};
use crate::metrics::LiveStreamGuard;
use crate::state::AppState;

/// How often an open stream checks that its session is still live.
const CHECK_EVERY: Duration = Duration::from_secs(15);

/// Something open pages may want to know.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// A record changed (a phone's push or an office edit was committed).
    Record {
        /// Record id.
        id: String,
        /// Its place.
        place: PlaceId,
        /// Kind code.
        kind: &'static str,
        /// The device whose change it was.
        device: String,
    },
    /// A browser session ended: its streams close.
    SessionEnded(String),
    /// Changes may have been committed unheard (this process lost its link to other
    /// processes' announcements for a while): every stream is told to sync.
    Resync,
}

/// The in-process publish/subscribe hub of [`LiveEvent`]s.
#[derive(Debug)]
pub struct LiveHub {
    tx: broadcast::Sender<LiveEvent>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl LiveHub {
    /// Announces a committed change of a record.
    pub fn record_changed(&self, id: String, place: PlaceId, kind: &'static str, device: String) {
        // No subscriber is fine: nobody has a page open.
        let _ = self.tx.send(LiveEvent::Record {
            id,
            place,
            kind,
            device,
        });
    }

    /// Tells every stream to sync: announcements may have been missed.
    pub fn resync(&self) {
        let _ = self.tx.send(LiveEvent::Resync);
    }

    /// Closes the streams of a session (hex hash of its token).
    pub fn end_session(&self, session: &str) {
        let _ = self.tx.send(LiveEvent::SessionEnded(session.to_string()));
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }
}

struct Listener {
    state: AppState,
    user: WebUser,
    rx: broadcast::Receiver<LiveEvent>,
    done: bool,
    /// Counts this stream as open until the stream (and with it this listener) is dropped.
    _open: LiveStreamGuard,
}

/// `GET /office/events`: `record` events (`{"id": …, "kind": …}`) for records within the user's
/// grants; `resync` when events were missed (the page reloads its list). Ends with the session.
pub async fn events(
    State(state): State<AppState>,
    user: WebUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.live.subscribe();
    let open = state.metrics.live_stream_opened();
    let listener = Listener {
        state,
        user,
        rx,
        done: false,
        _open: open,
    };
    let stream = futures_util::stream::unfold(listener, |mut l| async move {
        if l.done {
            return None;
        }
        loop {
            let next = tokio::time::timeout(CHECK_EVERY, l.rx.recv()).await;
            match next {
                Err(_) => {
                    if !still_live(&l.state, &l.user.session).await {
                        l.done = true;
                        return Some((Ok(Event::default().event("ended").data("会话已结束")), l));
                    }
                    return Some((Ok(Event::default().comment("alive")), l));
                }
                Ok(Ok(LiveEvent::Record {
                    id, place, kind, ..
                })) => {
                    if l.user.auth.can_access(&place) {
                        let data = serde_json::json!({ "id": id, "kind": kind }).to_string();
                        return Some((Ok(Event::default().event("record").data(data)), l));
                    }
                }
                Ok(Ok(LiveEvent::SessionEnded(s))) => {
                    if s == l.user.session {
                        l.done = true;
                        return Some((Ok(Event::default().event("ended").data("会话已结束")), l));
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Ok(Ok(LiveEvent::Resync)) => {
                    return Some((Ok(Event::default().event("resync").data("{}")), l));
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
