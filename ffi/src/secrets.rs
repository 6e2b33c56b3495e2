//! [`SecretStore`]: where the phone keeps its login (the access and refresh tokens). Apps pass
//! their own, backed by the Android Keystore or the iOS Keychain, so tokens never sit in the
//! SDK's SQLite file; the CLI and tests use the default, a table of the phone's database.

use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ApiError;

/// The keys the SDK stores through a [`SecretStore`].
pub(crate) mod keys {
    /// The current access token (a JWT, 15 minutes).
    pub const ACCESS_TOKEN: &str = "access_token";
    /// The refresh token (single use; each refresh returns the next).
    pub const REFRESH_TOKEN: &str = "refresh_token";
}

/// Implemented by the app to keep the SDK's secrets (tokens) in the platform's secure storage:
/// the Android Keystore (e.g. `EncryptedSharedPreferences`) or the iOS Keychain. Keys are short
/// ASCII names (`access_token`, `refresh_token`); values are opaque text. Methods are called on
/// the SDK's (background) threads, possibly several at once.
///
/// Throw `SecretStoreException` (Swift: throw `SecretStoreError`) when the storage fails; the
/// SDK reports it as a `Storage` error and changes nothing else.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// The value stored under `key`, or null.
    fn get(&self, key: String) -> Result<Option<String>, SecretStoreError>;
    /// Stores `value` under `key`, replacing any earlier value.
    fn set(&self, key: String, value: String) -> Result<(), SecretStoreError>;
    /// Forgets `key` (no error when it is not there).
    fn delete(&self, key: String) -> Result<(), SecretStoreError>;
}

/// A failure of the app's secret store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum SecretStoreError {
    /// The storage failed or refused (locked keystore, user authentication required, …).
    #[error("the secret store failed: {reason}")]
    Failed {
        /// What failed (never the secret).
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for SecretStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: e.reason }
    }
}

impl From<SecretStoreError> for ApiError {
    fn from(e: SecretStoreError) -> Self {
        log::error!("secret store: {e}");
        ApiError::Storage {
            reason: e.to_string(),
        }
    }
}

/// The default store: a `secrets` table in the phone's SQLite file, on its own connection (so
/// the SDK may call it while its main connection is busy).
pub(crate) struct SqliteSecrets {
    conn: Mutex<Connection>,
}

impl SqliteSecrets {
    /// Opens the table in the phone's database file.
    pub(crate) fn open(path: &std::path::Path) -> Result<Self, ApiError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS secrets (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn sqlite<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SecretStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| SecretStoreError::Failed {
            reason: ApiError::from(e).to_string(),
        })
    }
}

impl SecretStore for SqliteSecrets {
    fn get(&self, key: String) -> Result<Option<String>, SecretStoreError> {
        self.sqlite(|c| {
            c.query_row("SELECT value FROM secrets WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    fn set(&self, key: String, value: String) -> Result<(), SecretStoreError> {
        self.sqlite(|c| {
            c.execute(
                "INSERT INTO secrets (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
        })
    }

    fn delete(&self, key: String) -> Result<(), SecretStoreError> {
        self.sqlite(|c| {
            c.execute("DELETE FROM secrets WHERE key = ?1", [key])
                .map(drop)
        })
    }
}
