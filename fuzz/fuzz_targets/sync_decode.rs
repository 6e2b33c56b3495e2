//! Fuzzes the sync protocol decoders (`SyncRequest::decode`, `SyncResponse::decode`): hostile
//! bytes must be an error, never a panic or a huge allocation; what decodes re-encodes the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    linli_sync_core::ingest::fuzz::quiet_caught_panics();
    linli_sync_core::ingest::fuzz::sync_decode(data);
});
