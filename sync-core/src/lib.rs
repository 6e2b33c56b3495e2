//! # linli-sync-core
//!
//! The shared core of Linli, sans-I/O: phones, the server and tests run the very same code.
//!
//! - [`schema`] and [`records`]: the four record kinds, their fields and their mapping onto
//!   Automerge documents with autosurgeon.
//! - [`document`]: one record = one document; edits, merges, conflicts and history.
//! - [`protocol`]: sync protocol v1 messages and their binary codec.
//! - [`personal`]: a record's personal part (residents' names and phones) and
//!   [`capture`], the one place that splits what a person enters into the two.
//! - [`ingest`]: the server's accept/reject logic for a pushed change, with [`shape`] (every
//!   key and concurrent value of a document) and [`limits`] (every bound, phone and server alike).
//! - [`rules`]: roles and what each may edit.
//! - [`ids`]: identifier newtypes.

pub mod capture;
pub mod document;
pub mod error;
pub mod hex;
pub mod ids;
pub mod ingest;
pub mod limits;
pub mod personal;
pub mod protocol;
pub mod records;
pub mod rules;
pub mod schema;
pub mod shape;

pub use automerge;
pub use document::{ChangeInfo, Conflict, ConflictValue, EditContext, Listing, RecordDoc};
pub use error::{CodecError, IdError, RecordError};
pub use ids::{DeviceId, PlaceId, RecordId};
pub use personal::PersonalDoc;
pub use records::Record;
pub use schema::{FieldSpec, FieldType, RecordKind};
