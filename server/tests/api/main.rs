//! The server's HTTP API, driven in-process with `oneshot`.

mod auth;
mod common;
mod records;
mod server;
mod sync;
