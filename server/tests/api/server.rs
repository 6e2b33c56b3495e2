//! A real server on a socket, started from blocking code.

use std::io::{Read, Write};

use linli_server::Config;
use linli_server::run::BackgroundServer;

#[test]
fn a_background_server_answers_on_its_url_and_stops_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = BackgroundServer::start(Config::new(dir.path())).unwrap();
    let addr = server.url().strip_prefix("http://").unwrap().to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: linli\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-request-id"), "{reply}");
    assert!(reply.ends_with(r#"{"status":"ok"}"#), "{reply}");
    drop(server);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening"
    );
    assert!(dir.path().join("linli.db").exists());
    assert!(
        !dir.path().join("jwt-keys.json").exists(),
        "the signing keys are in the database"
    );
    #[cfg(unix)]
    for file in ["linli.db", "linli.db-wal", "linli.db-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(file);
        if path.exists() {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} holds secrets: owner only");
        }
    }
}
