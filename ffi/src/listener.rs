//! [`LiveListener`]: how an app hears, while [`crate::FieldClient::listen`] runs, that it should
//! sync. [`SyncListener`]: how an app hears, during [`crate::FieldClient::sync`], how far the sync has
//! got and which records changed by others have arrived. Implemented in Kotlin or Swift (or in
//! Rust) and registered with [`crate::FieldClient::set_sync_listener`].

use crate::types::SyncProgress;

/// Implemented by the app to hear what `sync` does while it does it.
///
/// Methods are called on the thread that runs `sync` (a background thread), one call at a time
/// per sync, after the store has been updated: post to the main thread before touching the UI,
/// and return quickly. An exception thrown here is ignored; the sync goes on.
#[uniffi::export(foreign)]
pub trait SyncListener: Send + Sync {
    /// Called after each round trip with the totals so far; `progress.done` is true on the last
    /// call of a sync.
    fn on_progress(&self, progress: SyncProgress);

    /// Records changed by others (on other phones or the server) have been merged into this
    /// phone's store: refresh any list or screen that shows them. `record_ids` are record ids.
    fn on_new_data(&self, record_ids: Vec<String>);

    /// An admin revoked this device: the SDK erases its records, outbox and login right after
    /// this call returns (the call that heard it then fails with `DeviceRevoked`). Tell the user;
    /// `unsent_changes` of theirs never reached the server.
    fn on_device_revoked(&self, unsent_changes: u32);
}

/// Implemented by the app to hear, while `listen` runs, that records in the user's places
/// changed on another device (or the server): call `sync` then, on another thread.
#[uniffi::export(foreign)]
pub trait LiveListener: Send + Sync {
    /// Sync now. `record_ids` are the records that changed, when the server could say; empty
    /// on the first call (the stream just opened) or when it could not (sync anyway).
    fn on_changes(&self, record_ids: Vec<String>);
}
