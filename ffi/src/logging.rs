//! The phone's own log: the SDK logs its failures and notable events (sync errors, refused
//! changes by code, storage failures, token refreshes, TLS problems) through the `log` facade.
//! An app installs an [`AppLogger`] to receive them, e.g. into Logcat, `os_log` or its crash
//! reporter, so a problem in the field can be diagnosed. Messages never carry tokens, passwords
//! or residents' personal data (names, phone numbers, field values).

use std::sync::{Arc, OnceLock, RwLock};

/// How serious a log message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is wrong but was handled.
    Warn,
    /// A notable event.
    Info,
    /// Detail for diagnosing.
    Debug,
    /// Everything.
    Trace,
}

/// Implemented by the app to receive the SDK's log messages. Called on whatever thread logs,
/// possibly several at once; return quickly. An exception thrown here is ignored.
#[uniffi::export(with_foreign)]
pub trait AppLogger: Send + Sync {
    /// One message: its level, the SDK module it comes from, and the text.
    fn log(&self, level: LogLevel, target: String, message: String);
}

fn slot() -> &'static RwLock<Option<Arc<dyn AppLogger>>> {
    static SLOT: OnceLock<RwLock<Option<Arc<dyn AppLogger>>>> = OnceLock::new();
    SLOT.get_or_init(|| RwLock::new(None))
}

struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(logger) = slot().read().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        let target = record.target().to_string();
        let message = record.args().to_string();
        // A foreign exception arrives here as a panic; logging must never take the SDK down.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            logger.log(level, target, message)
        }));
    }

    fn flush(&self) {}
}

/// Installs the app's logger (replacing an earlier one) and the most detailed level it wants.
/// Call it once at start-up, before creating a `FieldClient`.
#[uniffi::export]
pub fn install_logger(logger: Arc<dyn AppLogger>, max_level: LogLevel) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Another `log` logger may already be installed by the host (a Rust app); then the
        // app's logger is kept but not wired, which is the host's choice.
        let _ = log::set_logger(&Forwarder);
    });
    *slot().write().unwrap_or_else(|p| p.into_inner()) = Some(logger);
    log::set_max_level(match max_level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
}
