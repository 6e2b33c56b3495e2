//! # linli-ffi
//!
//! The device SDK that Linli's phones embed, and that the field CLI and the whole-system tests
//! drive: a durable on-device store (SQLite), an HTTP transport and the sync loop, behind one
//! object, [`FieldClient`], with blocking methods, owned arguments and one error type,
//! [`SdkError`]. Records are edited offline; [`FieldClient::sync`] exchanges changes with the
//! server in one round trip per page.
//!
//! - [`client`] holds the `FieldClient` object,
//! - [`types`] the plain records it returns,
//! - [`error`] the `SdkError` enum,
//! - `store`, `sync`, `transport`: the SQLite store, the reply-applying step and HTTP.

pub mod client;
pub mod error;
mod schema;
mod store;
mod sync;
mod transport;
pub mod types;

pub use client::{FieldClient, MAX_SYNC_ROUNDS, ME_REJECTED, ME_UNSYNCED};
pub use error::SdkError;
pub use schema::record_kinds;
pub use store::DB_FILE;
pub use types::{
    Choice, ConflictValue, FieldConflict, FieldInfo, FieldValue, HistoryEntry, KindInfo,
    OutboxItem, PlaceInfo, RecordSummary, RecordView, RejectedChange, SyncReport, UserInfo, WhoAmI,
};
