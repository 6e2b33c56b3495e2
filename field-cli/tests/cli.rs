//! The field CLI as scripts use it: `--json` output parsed, errors as exit codes.

use std::process::Command;

use serde_json::Value;

struct Phone {
    dir: tempfile::TempDir,
}

impl Phone {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `linli-field --home DIR --json ARGS`, returning exit code and parsed stdout.
    fn run(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_linli-field"))
            .arg("--home")
            .arg(self.dir.path())
            .arg("--json")
            .args(args)
            .env_remove("LINLI_PASSWORD")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"));
        (out.status.code().unwrap(), json)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, json) = self.run(args);
        assert_eq!(code, 0, "{args:?} -> {json}");
        json
    }
}

#[test]
fn a_bus_team_captures_offline_with_json_output() {
    let phone = Phone::new();
    let place = "hz/baiyang/haitian/haitiancheng";
    let bus = phone.ok(&["new", "bus", "--place", place, "run_number=1801"]);
    let bus = bus["id"].as_str().unwrap().to_string();
    let tally = phone.ok(&["tally", &bus, "leaflets", "630"]);
    assert_eq!(tally["total"], 630);
    let case = phone.ok(&[
        "new",
        "case",
        "--place",
        place,
        "summary=消防通道堵塞",
        "category=fire_safety",
        "source=bus_session",
        &format!("session_id={bus}"),
    ]);
    let case = case["id"].as_str().unwrap().to_string();
    phone.ok(&["set", &case, "status=answered_on_site"]);
    phone.ok(&["note", &case, "现场解答"]);

    let list = phone.ok(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let show = phone.ok(&["show", &case]);
    assert_eq!(show["value"]["status"], "answered_on_site");
    assert_eq!(show["value"]["session_id"], bus.as_str());
    assert_eq!(show["history"].as_array().unwrap().len(), 3);
    assert_eq!(show["conflicts"], serde_json::json!([]));
    let outbox = phone.ok(&["outbox"]);
    assert_eq!(outbox.as_array().unwrap().len(), 5);
    let me = phone.ok(&["whoami"]);
    assert_eq!(me["logged_in"], false);
    assert_eq!(me["pending_changes"], 5);
}

#[test]
fn errors_are_json_with_a_code_and_a_non_zero_exit() {
    let phone = Phone::new();
    let (code, json) = phone.run(&[
        "set",
        "7d7e8a3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f",
        "status=assigned",
    ]);
    assert_eq!((code, json["error"].as_str()), (6, Some("not_found")));
    let (code, json) = phone.run(&[
        "new",
        "case",
        "--place",
        "hz/x",
        "summary=漏水",
        "status=bogus",
    ]);
    assert_eq!((code, json["error"].as_str()), (2, Some("invalid_input")));
    assert!(json["message"].as_str().unwrap().starts_with("status:"));
    let (code, json) = phone.run(&["sync"]);
    assert_eq!((code, json["error"].as_str()), (4, Some("unauthorized")));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, json) = phone.run(&["login", "--server", &url, "--user", "u", "--password", "p"]);
    assert_eq!((code, json["error"].as_str()), (3, Some("offline")));
}
