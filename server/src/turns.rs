//! Per-user fairness on the push path: each user pushes one request at a time, and a user with
//! more pushes already waiting is answered 429 at once. One user's flood of junk therefore holds
//! at most one place in the queue for the writer, and everyone else's pushes interleave with it
//! change by change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Pushes of one user that may wait for their turn before more are refused.
pub const MAX_WAITING_PER_USER: usize = 4;

/// The push turns of every user currently pushing.
#[derive(Debug, Default)]
pub struct PushTurns {
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A user's turn to push; the next of their pushes starts when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl PushTurns {
    /// Waits for `user`'s turn; 429 when [`MAX_WAITING_PER_USER`] of their pushes already wait.
    pub async fn enter(&self, user: &str) -> Result<Turn> {
        let semaphore = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            // Forget users nobody holds a turn of, so memory follows the users pushing now.
            if users.len() > 1024 {
                users.retain(|_, s| Arc::strong_count(s) > 1);
            }
            users
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(1)))
                .clone()
        };
        // The map holds one reference and each waiting or pushing request one more.
        if Arc::strong_count(&semaphore) > MAX_WAITING_PER_USER + 2 {
            return Err(Error::TooManyRequests {
                retry_after_secs: 1,
            });
        }
        let permit = semaphore
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("push turns closed".into()))?;
        Ok(Turn { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_push_at_a_time_per_user_and_a_bounded_queue() {
        let turns = Arc::new(PushTurns::default());
        let first = turns.enter("u1").await.unwrap();
        // Another user is not held up.
        drop(turns.enter("u2").await.unwrap());
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITING_PER_USER {
            let t = turns.clone();
            waiting.push(tokio::spawn(async move { t.enter("u1").await.map(drop) }));
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(matches!(
            turns.enter("u1").await,
            Err(Error::TooManyRequests { .. })
        ));
        drop(first);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        drop(turns.enter("u1").await.unwrap());
    }
}
