//! Test hooks for the chaos harness (`linli-chaos` in the tests crate): a skew added to this
//! client's clock, and one-shot crash points where a phone process could die. Both are inert
//! unless armed, and they can only be armed with the `chaos` cargo feature, which apps never
//! enable: without it the state below stays zero and every check is a no-op.

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

use crate::error::ApiError;

/// Where a phone process is made to die (simulated: the call fails there, and the harness drops
/// the client and opens the store again, as a restarted app would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CrashPoint {
    /// In an edit, after the record document was saved and before its outbox row was written
    /// (both in the edit's one transaction).
    EditBeforeOutbox = 1,
    /// In a sync, after the server's reply arrived and before it was applied.
    SyncBeforeApply = 2,
}

/// A client's chaos state.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    skew_ms: AtomicI64,
    armed: AtomicU8,
}

impl Hooks {
    /// Milliseconds added to the device clock.
    pub(crate) fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Fails (once) when `point` is armed, as the process dying there would.
    pub(crate) fn crash_at(&self, point: CrashPoint) -> Result<(), ApiError> {
        if self
            .armed
            .compare_exchange(point as u8, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(ApiError::storage("chaos: the phone process died here"));
        }
        Ok(())
    }

    #[cfg(feature = "chaos")]
    pub(crate) fn set_skew_ms(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::Relaxed);
    }

    #[cfg(feature = "chaos")]
    pub(crate) fn arm(&self, point: Option<CrashPoint>) {
        self.armed
            .store(point.map_or(0, |p| p as u8), Ordering::SeqCst);
    }
}
