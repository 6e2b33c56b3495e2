//! Phones for the stories: a thin wrapper over the device SDK that panics with context, so the
//! stories read as steps.

use linli_ffi::FieldClient;
use serde_json::Value;
use tempfile::TempDir;

pub use linli_tests::*;

pub mod web;

/// A phone with its own on-device store.
pub struct Phone {
    pub client: FieldClient,
    pub user: String,
    _home: TempDir,
}

impl Phone {
    /// A new phone signed in as `user` (a demo user).
    pub fn login(server: &ServerProcess, user: &str) -> Phone {
        Self::login_at(&server.url, user)
    }

    /// A new phone signed in as `user` at `url` (a server, or a proxy or balancer before one).
    pub fn login_at(url: &str, user: &str) -> Phone {
        let home = tempfile::tempdir().unwrap();
        let client =
            FieldClient::new(home.path().to_str().unwrap().to_string(), None, None, None).unwrap();
        client
            .login(
                user.to_string(),
                DEMO_PASSWORD.to_string(),
                Some(url.to_string()),
            )
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        Phone {
            client,
            user: user.into(),
            _home: home,
        }
    }

    /// Whether the phone's database file or its WAL holds `needle` anywhere, byte for byte.
    pub fn store_bytes_contain(&self, needle: &[u8]) -> bool {
        let db = self._home.path().join(linli_ffi::DB_FILE);
        let wal = db.with_extension("db-wal");
        [db, wal].iter().any(|p| {
            std::fs::read(p).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    }

    pub fn create(&self, kind: &str, place: &str, fields: &[(&str, &str)]) -> String {
        self.client
            .create(kind.parse().unwrap(), place.into(), pairs(fields))
            .unwrap_or_else(|e| panic!("{} creates a {kind}: {e}", self.user))
    }

    pub fn set(&self, id: &str, fields: &[(&str, &str)]) {
        self.client
            .set(id.into(), pairs(fields))
            .unwrap_or_else(|e| panic!("{} sets {fields:?}: {e}", self.user));
    }

    pub fn tally(&self, id: &str, field: &str, n: i64) {
        self.client
            .tally(id.into(), field.into(), n)
            .unwrap_or_else(|e| panic!("{} tallies {field}: {e}", self.user));
    }

    pub fn note(&self, id: &str, text: &str) {
        self.client
            .note(id.into(), text.into())
            .unwrap_or_else(|e| panic!("{} adds a note: {e}", self.user));
    }

    pub fn sync(&self) -> linli_ffi::SyncReport {
        self.client
            .sync()
            .unwrap_or_else(|e| panic!("{} syncs: {e}", self.user))
    }

    /// The merged value as JSON.
    pub fn value(&self, id: &str) -> Value {
        let view = self.client.get(id.into()).unwrap();
        serde_json::from_str(&view.value_json).unwrap()
    }

    pub fn view(&self, id: &str) -> linli_ffi::RecordView {
        self.client.get(id.into()).unwrap()
    }
}

fn pairs(fields: &[(&str, &str)]) -> Vec<linli_ffi::FieldValue> {
    fields
        .iter()
        .map(|(k, v)| linli_ffi::FieldValue {
            name: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// Runs `linli-field --home HOME --json ARGS…` and returns its JSON output.
pub fn field(home: &std::path::Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(workspace_bin("linli-field"))
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .output()
        .expect("linli-field runs");
    assert!(
        out.status.success(),
        "linli-field {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Adds a second street, 下沙街道 (`hz/xiasha`), with its own bus-team user `xs1` (demo password)
/// granted on it: records outside 白杨街道 for the office stories.
pub fn other_street(server: &ServerProcess) {
    admin_cli(
        &server.data_dir,
        &["place", "add", "hz/xiasha", "下沙街道", "--level", "street"],
        "",
    );
    admin_cli(
        &server.data_dir,
        &[
            "user",
            "add",
            "xs1",
            "--role",
            "bus",
            "--display-name",
            "下沙直通车",
        ],
        &format!("{DEMO_PASSWORD}\n"),
    );
    admin_cli(&server.data_dir, &["grant", "xs1", "hz/xiasha"], "");
}
