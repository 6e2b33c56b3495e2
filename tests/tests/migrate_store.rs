//! Moving a district from SQLite to PostgreSQL: two phones sync with a server on SQLite; the
//! server stops, `linli-server migrate-store` copies the district into a new PostgreSQL database
//! and verifies it, and the server starts again on that database at the same address. The same
//! phones, without logging in again, edit and sync: each pulls exactly the other's new changes
//! (their cursors' log positions and grant epochs hold on the copy: nothing lost, nothing
//! repeated, no fresh bootstrap), and a phone logging in afresh gets every record.
//!
//! Whatever backend the other stories run on, this one needs a server on SQLite and then one on
//! PostgreSQL at the same address, so it starts its own two processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A `linli-server serve` on the SQLite file of `data_dir`, or on `database_url`.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &Path, bind: &str, database_url: Option<&str>) -> Server {
        let mut cmd = Command::new(workspace_bin("linli-server"));
        cmd.arg("serve");
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        } else {
            // The demo district and users, into the SQLite file the district starts in.
            cmd.arg("--demo");
        }
        let mut child = cmd
            .args(["--bind", bind, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env("LINLI_DEMO_RECORDS", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("linli-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.strip_prefix("listening on ") {
                    let _ = tx.send(at.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address within a minute");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{url}/healthz"))
            .call()
            .map_or(true, |r| r.status() != 200)
        {
            assert!(Instant::now() < deadline, "{url} never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, url }
    }

    /// Stops it as an operator does (SIGTERM: in-flight requests finish, the database closes).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-qtAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn phones_sync_on_from_their_cursors_after_the_district_moves_to_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let on_sqlite = Server::start(dir.path(), "127.0.0.1:0", None);
    let bind = on_sqlite.url.trim_start_matches("http://").to_string();
    let a = Phone::login_at(&on_sqlite.url, "bus1");
    let b = Phone::login_at(&on_sqlite.url, "bus2");

    // On SQLite: a bus run and two cases between two phones, everything synced both ways.
    let session = a.create("bus", HAITIANCHENG, &[("run_number", "1901")]);
    a.tally(&session, "consultations", 8);
    let lift = a.create(
        "case",
        HAITIANCHENG,
        &[("summary", "5幢电梯异响"), ("source", "bus_session")],
    );
    assert_eq!(a.sync().accepted, 3);
    assert_eq!(b.sync().pulled, 2, "bus1's records, saved whole");
    let rental = b.create(
        "case",
        HAITIANCHENG,
        &[
            ("summary", "群租房消防隐患"),
            ("category", "rental_housing"),
        ],
    );
    assert_eq!(b.sync().accepted, 1);
    assert_eq!(a.sync().pulled, 1);
    b.note(&lift, "物业已联系电梯维保");
    assert_eq!(b.sync().accepted, 1);
    assert_eq!(a.sync().pulled, 1);
    on_sqlite.stop();

    // The move: into a new PostgreSQL database, verified.
    let url = fresh_postgres_database();
    let moved = Command::new(workspace_bin("linli-server"))
        .args(["migrate-store", "--from"])
        .arg(dir.path().join("linli.db"))
        .args(["--to", &url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("migrate-store runs");
    let printed = String::from_utf8_lossy(&moved.stdout);
    eprintln!("{printed}{}", String::from_utf8_lossy(&moved.stderr));
    assert!(moved.status.success(), "migrate-store failed");
    assert!(printed.contains("records          3/3"), "{printed}");
    assert!(printed.contains("changes          5/5"), "{printed}");
    assert!(printed.contains("the copy is whole"), "{printed}");

    // The server on PostgreSQL, at the same address: the phones carry on with their logins and
    // cursors.
    let on_pg = Server::start(dir.path(), &bind, Some(&url));
    a.note(&rental, "已约消防大队周五上门");
    a.tally(&session, "leaflets", 30);
    b.set(&lift, &[("category", "facilities")]);
    b.tally(&session, "consultations", 4);
    let ra = a.sync();
    assert_eq!((ra.accepted, ra.pulled), (2, 0));
    let rb = b.sync();
    assert_eq!(
        (rb.accepted, rb.pulled),
        (2, 2),
        "exactly bus1's two new changes: none lost, none repeated"
    );
    let ra = a.sync();
    assert_eq!((ra.accepted, ra.pulled), (0, 2), "exactly bus2's two");
    assert_eq!(psql(&url, "SELECT COUNT(*) FROM changes"), "9");

    let records = [&session, &lift, &rental];
    for id in records {
        assert_eq!(a.value(id), b.value(id), "{id}");
    }
    assert_eq!(a.value(&session)["consultations"], 12);
    assert_eq!(a.value(&session)["leaflets"], 30);
    assert_eq!(a.value(&lift)["category"], "facilities");
    assert_eq!(a.value(&lift)["notes"].as_array().unwrap().len(), 1);
    assert_eq!(b.value(&rental)["notes"].as_array().unwrap().len(), 1);

    // A phone logging in afresh on PostgreSQL gets every record.
    let c = Phone::login_at(&on_pg.url, "office1");
    assert_eq!(c.sync().pulled, 3);
    for id in records {
        assert_eq!(c.value(id), a.value(id), "{id}");
    }
    drop(on_pg);
}
