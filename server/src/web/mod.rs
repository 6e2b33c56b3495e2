//! The back-office web application.

pub mod export;
