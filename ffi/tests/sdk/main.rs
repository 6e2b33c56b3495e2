//! The device SDK through its public API, without a server.

mod concurrency;
mod offline;

use linli_ffi::{FieldClient, FieldValue};

/// A phone whose home is a fresh temporary directory (kept alive by the returned guard).
pub fn phone() -> (tempfile::TempDir, FieldClient) {
    let dir = tempfile::tempdir().unwrap();
    let client = FieldClient::new(home(&dir), None, None, None).unwrap();
    (dir, client)
}

/// The directory as the `String` the API takes.
pub fn home(dir: &tempfile::TempDir) -> String {
    dir.path().to_string_lossy().into_owned()
}

/// `field=value` pairs.
pub fn fv(pairs: &[(&str, &str)]) -> Vec<FieldValue> {
    pairs.iter().map(|(n, v)| FieldValue::new(*n, *v)).collect()
}

/// A record's merged value.
pub fn value(client: &FieldClient, id: &str) -> serde_json::Value {
    serde_json::from_str(&client.get(id.to_string()).unwrap().value_json).unwrap()
}
