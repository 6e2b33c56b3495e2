//! Browser sessions of the back-office (`web_sessions`): created at sign-in, looked up by the
//! SHA-256 of the cookie's token on every request, ended at sign-out or when idle.

use sqlx::Row;

use super::SqliteStore;
use crate::error::Result;

/// A new browser session.
#[derive(Debug, Clone)]
pub struct NewWebSession<'a> {
    /// SHA-256 of the cookie token.
    pub hash: &'a [u8; 32],
    /// The signed-in user.
    pub user_id: &'a str,
    /// The browser's device (registered at sign-in).
    pub device_id: &'a str,
    /// The Automerge actor (hex) of the edits made in this session.
    pub actor: &'a str,
    /// The token every form and state-changing request must carry.
    pub csrf: &'a str,
    /// The user's session epoch at sign-in.
    pub session_epoch: i64,
    /// Now (ms).
    pub now: i64,
}

/// A live browser session.
#[derive(Debug, Clone)]
pub struct WebSessionRow {
    /// The user.
    pub user_id: String,
    /// The browser's device.
    pub device_id: String,
    /// The actor of the session's edits (hex).
    pub actor: String,
    /// The CSRF token.
    pub csrf: String,
    /// The user's session epoch at sign-in.
    pub session_epoch: i64,
    /// Last request (ms).
    pub last_seen: i64,
}

impl SqliteStore {
    /// Stores a new browser session.
    pub async fn insert_web_session(&self, s: &NewWebSession<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions
                 (hash, user_id, device_id, actor, csrf, session_epoch, created_at, last_seen)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.hash[..])
        .bind(s.user_id)
        .bind(s.device_id)
        .bind(s.actor)
        .bind(s.csrf)
        .bind(s.session_epoch)
        .bind(s.now)
        .bind(s.now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this token hash, unless it ended or was idle since before `idle_since`.
    pub async fn web_session(
        &self,
        hash: &[u8; 32],
        idle_since: i64,
    ) -> Result<Option<WebSessionRow>> {
        let row = sqlx::query(
            "SELECT user_id, device_id, actor, csrf, session_epoch, last_seen FROM web_sessions
             WHERE hash = ? AND ended_at IS NULL AND last_seen >= ?",
        )
        .bind(&hash[..])
        .bind(idle_since)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(WebSessionRow {
                user_id: r.try_get("user_id")?,
                device_id: r.try_get("device_id")?,
                actor: r.try_get("actor")?,
                csrf: r.try_get("csrf")?,
                session_epoch: r.try_get("session_epoch")?,
                last_seen: r.try_get("last_seen")?,
            })
        })
        .transpose()
    }

    /// Records a request of the session (keeps it from going idle).
    pub async fn touch_web_session(&self, hash: &[u8; 32], now: i64) -> Result<()> {
        sqlx::query("UPDATE web_sessions SET last_seen = ? WHERE hash = ? AND ended_at IS NULL")
            .bind(now)
            .bind(&hash[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a session (sign-out). Returns its device, if it was live.
    pub async fn end_web_session(&self, hash: &[u8; 32], now: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE web_sessions SET ended_at = ? WHERE hash = ? AND ended_at IS NULL
             RETURNING device_id",
        )
        .bind(now)
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?)
    }
}
