//! The server's HTTP API, driven in-process with `oneshot`.

mod auth;
mod common;
mod fuzz_corpus;
mod limits;
mod matrix;
mod office;
mod privacy;
mod records;
mod server;
mod sync;
mod tokens;
