//! Issue 10, keys hold across nodes: two `linli-server` processes on one database sign and verify
//! each other's tokens and see each other's key rotations; and the first start of this version
//! imports the `jwt-keys.json` of an older one, so tokens signed before the upgrade stay valid.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// A loopback load balancer in front of the nodes: each new connection goes to the current
/// upstream; switching cuts the open ones, so a phone's next request reaches the other node.
struct Balancer {
    url: String,
    target: Arc<Mutex<(String, Vec<TcpStream>)>>,
}

impl Balancer {
    fn start(upstream: &str) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind balancer");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = Arc::new(Mutex::new((addr(upstream), Vec::new())));
        let shared = target.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let mut t = shared.lock().unwrap();
                let Ok(server) = TcpStream::connect(&t.0) else {
                    continue;
                };
                t.1.push(client.try_clone().unwrap());
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(Shutdown::Both);
                });
            }
        });
        Balancer { url, target }
    }

    /// Sends new connections to `upstream` and closes the open ones.
    fn switch_to(&self, upstream: &str) {
        let mut t = self.target.lock().unwrap();
        t.0 = addr(upstream);
        for c in t.1.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

fn device() -> String {
    linli_sync_core::DeviceId::new().to_string()
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> = token
        .split('.')
        .next()
        .unwrap()
        .bytes()
        .map(|c| A.iter().position(|a| *a == c).unwrap() as u32)
        .collect();
    let mut bytes = vec![];
    for chunk in vals.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, v| (n << 6) | v) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len() - 1 {
            bytes.push((n >> (16 - 8 * i)) as u8);
        }
    }
    let header: Value = serde_json::from_slice(&bytes).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn places_status(url: &str, token: &str) -> u16 {
    raw_get_json(&format!("{url}/v1/places"), token).0
}

fn admin_json(url: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let url = format!("{url}{path}");
    let mut resp = match body {
        Some(b) => agent
            .post(&url)
            .header("authorization", &auth)
            .send_json(&b),
        None => agent.get(&url).header("authorization", &auth).call(),
    }
    .expect("the request is answered");
    assert_eq!(resp.status().as_u16(), 200, "{method} {path}");
    resp.body_mut().read_json().unwrap()
}

#[test]
fn two_nodes_share_signing_keys_and_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::start(dir.path());
    // The second node shares only the database (as if on another machine): its own data
    // directory, where `linli.db` is a link to A's (SQLite follows it, WAL included). `--demo`
    // finds its users and places there.
    let dir_b = tempfile::tempdir().unwrap();
    share_database(dir.path(), dir_b.path());
    let b = ServerProcess::start(dir_b.path());
    let lb = Balancer::start(&a.url);

    // A phone signs in through the balancer, on node A, and syncs there.
    let phone = Phone::login_at(&lb.url, "bus1");
    let case = phone.create(
        "case",
        HAITIANCHENG,
        &[("summary", "楼道堆物"), ("category", "rental_housing")],
    );
    assert_eq!(phone.sync().accepted, 1);

    // Node A goes out of the rotation: the phone's next sync, with A's token, is served by B.
    lb.switch_to(&b.url);
    phone.set(&case, &[("status", "assigned")]);
    assert_eq!(phone.sync().accepted, 1);
    let token_a = login_token(&a.url, "office1", &device());
    assert_eq!(places_status(&b.url, &token_a), 200, "A's token on B");

    // An admin rotates the keys on node B (default overlap: one token lifetime).
    let admin_b = login_token(&b.url, "admin", &device());
    let new_kid = admin_json(
        &b.url,
        &admin_b,
        "POST",
        "/v1/admin/keys/rotate",
        Some(json!({})),
    )["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let token_b = login_token(&b.url, "bus2", &device());
    assert_eq!(kid_of(&token_b), new_kid, "B signs with its new key");
    assert_ne!(kid_of(&token_a), new_kid);

    // A accepts B's new key's token (it reloads the ring for an unknown key id; polled, since
    // such reloads are rate-limited).
    let deadline = Instant::now() + Duration::from_secs(60);
    while places_status(&a.url, &token_b) != 200 {
        assert!(
            Instant::now() < deadline,
            "node A never accepted a token of B's new key"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The previous key's tokens verify on both nodes during the overlap, the phone's too.
    assert_eq!(places_status(&a.url, &token_a), 200);
    assert_eq!(places_status(&b.url, &token_a), 200);
    phone.note(&case, "已通知物业");
    assert_eq!(phone.sync().accepted, 1);
    lb.switch_to(&a.url);
    phone.note(&case, "物业已清理");
    assert_eq!(phone.sync().accepted, 1);

    // A lists the ring as B left it, and signs with the new key from then on.
    let admin_a = login_token(&a.url, "admin", &device());
    let keys = admin_json(&a.url, &admin_a, "GET", "/v1/admin/keys", None);
    let ring = keys["keys"].as_array().unwrap();
    assert_eq!(ring.len(), 2, "{keys}");
    assert_eq!(ring[0]["kid"], new_kid);
    assert_eq!(ring[0]["signing"], true);
    assert!(ring[1]["retire_at"].is_i64(), "{keys}");
    assert_eq!(kid_of(&login_token(&a.url, "bus2", &device())), new_kid);
    // No node wrote a key file.
    assert!(!dir.path().join("jwt-keys.json").exists());
    assert!(!dir_b.path().join("jwt-keys.json").exists());
}

#[test]
fn an_upgrade_imports_the_key_file_and_its_tokens_stay_valid() {
    if let Some(why) = sqlite_only(
        "upgrading a data directory of an older version, whose keys were a file beside its SQLite database",
    ) {
        eprintln!("{why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let token = login_token(&server.url, "bus1", &device());
    assert_eq!(places_status(&server.url, &token), 200);
    server.kill();

    // Put the data directory back as the previous version kept it: no key table, the same key in
    // `jwt-keys.json`. The token above is then one signed before the upgrade.
    let db = rusqlite::Connection::open(dir.path().join("linli.db")).unwrap();
    let (kid, alg, secret, created_at): (String, String, String, i64) = db
        .query_row(
            "SELECT kid, algorithm, secret, created_at FROM signing_keys WHERE retired = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    db.execute_batch("DROP TABLE signing_keys; DELETE FROM _sqlx_migrations WHERE version = 12;")
        .unwrap();
    drop(db);
    let file = json!({"keys": [{"kid": kid, "alg": alg, "key": secret, "created_at": created_at}]});
    std::fs::write(dir.path().join("jwt-keys.json"), file.to_string()).unwrap();

    // The upgraded server imports the file and renames it; the old token stays valid.
    server.restart();
    assert_eq!(places_status(&server.url, &token), 200);
    assert!(!dir.path().join("jwt-keys.json").exists());
    assert!(dir.path().join("jwt-keys.json.imported").exists());
    let listed = admin_cli(dir.path(), &["keys", "list"], "");
    assert!(
        listed.contains(&format!("{kid} HS256")) && listed.contains("(signing)"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "no secret is printed");
    assert_eq!(kid_of(&login_token(&server.url, "bus2", &device())), kid);

    // And again after another restart, now from the database alone.
    server.restart();
    assert_eq!(places_status(&server.url, &token), 200);
}
