//! # linli-ffi
//!
//! The device SDK that Linli's phones embed, and that the field CLI and the whole-system tests
//! drive: a durable on-device store (SQLite), an HTTP transport and the sync loop, behind one
//! object, [`FieldClient`], with blocking methods, owned arguments and one error type,
//! [`ApiError`]. Records are edited offline; [`FieldClient::sync`] exchanges changes with the
//! server in one round trip per page.
//!
//! The same API is exported to Kotlin, Swift and Python with UniFFI proc macros (no UDL): the
//! crate builds as `lib`, `cdylib` and `staticlib`, and `mobile-bindings/build.sh` generates the
//! bindings from the built library ("library mode").
//!
//! - [`client`] holds the `FieldClient` object,
//! - [`types`] the plain records it returns (mirror types, not the core's),
//! - [`error`] the `ApiError` enum,
//! - [`listener`] the `SyncListener` callback interface,
//! - [`secrets`] the `SecretStore` the app keeps the login in (Keystore, Keychain),
//! - [`logging`] the `AppLogger` the app receives the SDK's log through,
//! - `store`, `sync`, `transport`, `tls`: the SQLite store, the reply-applying step, HTTP and
//!   TLS (rustls with the platform's verifier plus the app's CAs).

uniffi::setup_scaffolding!();

pub mod chaos;
pub mod client;
pub mod error;
pub mod listener;
pub mod logging;
mod schema;
pub mod secrets;
mod store;
mod sync;
mod tls;
mod transport;
pub mod types;

pub use client::{FieldClient, MAX_SYNC_ROUNDS, ME_REJECTED, ME_UNSYNCED};
pub use error::ApiError;
pub use listener::{LiveListener, SyncListener};
pub use logging::{AppLogger, LogLevel, install_logger};
pub use schema::record_kinds;
pub use secrets::{SecretStore, SecretStoreError};
pub use store::DB_FILE;
pub use types::{
    ChangeState, Choice, ConflictValue, ConnectionOptions, FieldConflict, FieldInfo, FieldType,
    FieldValue, HistoryEntry, KindInfo, OutboxItem, OutboxState, PlaceInfo, RecordKind,
    RecordSummary, RecordView, RejectCode, RejectedChange, Role, SyncProgress, SyncReport,
    UserInfo, WhoAmI,
};
