//! Fuzzes change ingestion (the server's accept logic): the first byte picks the pushed kind and
//! the pusher's role, the rest is the change, ingested into an empty and a seeded document.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    linli_sync_core::ingest::fuzz::quiet_caught_panics();
    linli_sync_core::ingest::fuzz::ingest_change(data);
});
