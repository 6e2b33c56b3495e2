//! Whole-system test harness: the real `linli-server` binary as a child process, phones as real
//! device SDK clients (or real `linli-field` processes), and a raw HTTP client for hostile input.

pub mod browser;
pub mod chaos;
pub mod office_http;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The demo password of every demo user.
pub const DEMO_PASSWORD: &str = "linli-demo";
/// The demo estate 海天城小区, where bus run 1801 takes place.
pub const HAITIANCHENG: &str = "hz/baiyang/haitian/haitiancheng";

/// Path of a workspace binary, built once per test process (a no-op when it is fresh), so
/// `cargo test` alone is enough to run the whole-system tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let target = target_dir();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // With linli-tests in the same build, the SDK gets the same features as in `cargo test`
        // (its test hooks), so this build reuses the test build's artifacts instead of making a
        // second `linli_ffi` that doctests would then find twice.
        cmd.args([
            "build",
            "-p",
            "linli-server",
            "-p",
            "linli-field",
            "-p",
            "linli-tests",
        ]);
        // `cargo test` gives the test process its package's variables; ring's build script
        // reruns when one differs from the outer build's (unset), which rebuilt ring, the server
        // and the SDK twice a run.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CFG_", "CARGO_BIN_"]
                .iter()
                .any(|p| k.starts_with(p))
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&k.as_ref())
                || k == "OUT_DIR"
            {
                cmd.env_remove(&key);
            }
        }
        if profile_is_release() {
            cmd.arg("--release");
        }
        // Into the running binary's own target directory, whatever the caller's environment.
        if let Some(dir) = target.parent() {
            cmd.arg("--target-dir").arg(dir);
        }
        let status = cmd
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
    });
    let path = target.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn profile_is_release() -> bool {
    target_dir().file_name().is_some_and(|n| n == "release")
}

/// `target/<profile>` of the running test or bench binary.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    // Test binaries live in target/<profile>/deps, bench binaries in target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The PostgreSQL server the stories' servers run on instead of SQLite, when
/// `LINLI_STORIES_POSTGRES` names one (`postgres://user@host:port/db`; `scripts/test` runs the
/// stories once on each backend).
pub fn stories_postgres() -> Option<String> {
    std::env::var("LINLI_STORIES_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The `--database-url` of a data directory: the one [`use_database`] or [`share_database`] gave
/// it, else, when the stories run on PostgreSQL, a database of its own per directory, made on
/// first use and shared by every process started on that directory (so a restart finds its
/// data).
pub fn database_url_for(data_dir: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    if let Ok(shared) = std::fs::read_to_string(data_dir.join(SHARED_DATABASE)) {
        return Some(shared.trim().to_string());
    }
    let admin = stories_postgres()?;
    std::fs::create_dir_all(data_dir).expect("the data directory can be made");
    let path = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    let name = format!("linli_story_{:016x}", h.finish());
    let psql = |sql: &str| {
        Command::new("psql")
            .arg(&admin)
            .args(["-qtAc", sql])
            .output()
            .expect("psql runs")
    };
    let exists = |name: &str| {
        String::from_utf8_lossy(
            &psql(&format!(
                "SELECT 1 FROM pg_database WHERE datname = '{name}'"
            ))
            .stdout,
        )
        .trim()
            == "1"
    };
    if !exists(&name) {
        // Two processes starting on one directory may both try: one of them makes it.
        let made = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            made.status.success() || exists(&name),
            "could not make {name}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let (base, _) = admin.rsplit_once('/').expect("a postgres url has a path");
    Some(format!("{base}/{name}"))
}

/// `Some(message)` when the stories run on PostgreSQL and the story is about SQLite alone (what
/// it tests has no PostgreSQL counterpart): the caller prints the message and returns.
pub fn sqlite_only(what: &str) -> Option<String> {
    stories_postgres().map(|_| format!("on SQLite only: {what}"))
}

/// In a data directory, names the database of another directory it shares (PostgreSQL stories).
const SHARED_DATABASE: &str = "shared-database-url";

/// Makes a server started on `to` use the database of the server on `from`: a second node. On
/// SQLite `to/linli.db` becomes a link to `from/linli.db` (SQLite follows it, WAL included); on
/// PostgreSQL both directories name one database.
pub fn share_database(from: &Path, to: &Path) {
    match database_url_for(from) {
        Some(url) => std::fs::write(to.join(SHARED_DATABASE), url).expect("write the shared url"),
        None => std::os::unix::fs::symlink(from.join("linli.db"), to.join("linli.db"))
            .expect("link the database"),
    }
}

/// A fresh PostgreSQL database for a story that needs one whatever the stories' backend (several
/// nodes on one database): its URL. The server is `LINLI_TEST_POSTGRES` (by default the local
/// one, as `scripts/test` starts it).
pub fn fresh_postgres_database() -> String {
    let admin = std::env::var("LINLI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!(
        "linli_story_{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos() as u64
            ^ u64::from(std::process::id())
    );
    let made = Command::new("psql")
        .arg(&admin)
        .args(["-qtAc", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(
        made.status.success(),
        "could not make {name}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (base, _) = admin.rsplit_once('/').expect("a postgres url has a path");
    format!("{base}/{name}")
}

/// Makes every server started on `data_dir` use the PostgreSQL database at `url`.
pub fn use_database(data_dir: &Path, url: &str) {
    std::fs::create_dir_all(data_dir).expect("the data directory can be made");
    std::fs::write(data_dir.join(SHARED_DATABASE), url).expect("write the database url");
}

/// A running `linli-server serve --demo` process on a free loopback port.
pub struct ServerProcess {
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    bind: String,
    env: Vec<(String, String)>,
}

impl ServerProcess {
    /// Starts a demo server on a fresh port with `data_dir`.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", &[])
    }

    /// Starts a demo server with extra environment (e.g. `LINLI_ACCESS_TOKEN_TTL`).
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut this = Self::start_on(data_dir, "127.0.0.1:0", env);
        this.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        this
    }

    fn start_on(data_dir: &Path, bind: &str, env: &[(&str, &str)]) -> Self {
        Self::start_bin_on(&workspace_bin("linli-server"), data_dir, bind, env)
    }

    /// Starts another build of the server (an older one, to measure against) with `env`.
    pub fn start_bin(bin: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_bin_on(bin, data_dir, "127.0.0.1:0", env)
    }

    fn start_bin_on(bin: &Path, data_dir: &Path, bind: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        if let Some(url) = database_url_for(data_dir) {
            cmd.arg("serve").arg("--database-url").arg(url);
        } else {
            cmd.arg("serve");
        }
        let mut child = cmd
            .args(["--demo", "--bind", bind, "--data-dir"])
            .arg(data_dir)
            // `LINLI_SERVER_LOG` passes a log filter to the servers a test or bench starts
            // (`sqlx::query=debug` logs every statement, for a query-plan check).
            .env(
                "RUST_LOG",
                std::env::var("LINLI_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // The demo places and users only; a test may ask for the records with
            // `LINLI_DEMO_RECORDS=true`.
            .env("LINLI_DEMO_RECORDS", "false")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("linli-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(i) = line.find("http://").or_else(|| line.find("https://")) {
                    let url = line[i..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address within a minute");
        let bind = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let this = Self {
            child: Some(child),
            url: url.trim_end_matches('/').to_string(),
            data_dir: data_dir.to_path_buf(),
            bind,
            env: Vec::new(),
        };
        this.wait_healthy();
        this
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        if self.url.starts_with("https://") {
            // This harness speaks no TLS itself: an accepting port is enough (requests wait in
            // the listen queue until the server serves).
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(&self.bind).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("server at {} never accepted a connection", self.url);
        }
        while Instant::now() < deadline {
            if let Ok(r) = ureq::get(&format!("{}/healthz", self.url)).call()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server at {} never became healthy", self.url);
    }

    /// Kills the process at once (SIGKILL: no graceful shutdown, like a crash or power cut).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts it again on the same address and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let env = std::mem::take(&mut self.env);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut again = Self::start_on(&self.data_dir.clone(), &self.bind.clone(), &pairs);
        again.env = env.clone();
        *self = again;
    }

    /// The process id (for memory readings in the benchmark).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the admin CLI (`linli-server ARGS --data-dir DIR`) with `stdin` as its standard input
/// and returns its standard output; panics with its standard error if it fails.
pub fn admin_cli(data_dir: &Path, args: &[&str], stdin: &str) -> String {
    admin_cli_bin(&workspace_bin("linli-server"), data_dir, args, stdin)
}

/// [`admin_cli`] with another build of the server (the one a benchmark runs).
pub fn admin_cli_bin(bin: &Path, data_dir: &Path, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if let Some(url) = database_url_for(data_dir) {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linli-server runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("linli-server finishes");
    assert!(
        out.status.success(),
        "linli-server {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Logs in over plain HTTP and returns the access token.
pub fn login_token(url: &str, user: &str, device_id: &str) -> String {
    let body = serde_json::json!({
        "username": user, "password": DEMO_PASSWORD, "device_id": device_id, "device_name": "test"
    });
    let resp: serde_json::Value = ureq::post(&format!("{url}/v1/auth/login"))
        .send_json(&body)
        .expect("login")
        .body_mut()
        .read_json()
        .expect("login json");
    resp["access_token"].as_str().expect("token").to_string()
}

/// A raw HTTP exchange: status and body bytes, whatever the status.
pub fn raw_post(url: &str, token: Option<&str>, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url).header("content-type", content_type);
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    match req.send(body) {
        Ok(mut r) => status_and_bytes(&mut r),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// A response's status and its body's bytes (up to 64 MiB; empty if unreadable).
pub fn status_and_bytes(r: &mut ureq::http::Response<ureq::Body>) -> (u16, Vec<u8>) {
    let status = r.status().as_u16();
    let bytes = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    (status, bytes)
}

/// A raw GET with a token: status and JSON body (Null if not JSON).
pub fn raw_get_json(url: &str, token: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(url)
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .expect("request");
    let status = r.status().as_u16();
    let body = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// A loopback TCP proxy that can swallow the server's replies: the request reaches the server and
/// is processed, but the phone never hears back (a reply lost on a bad mobile link).
pub struct LossyProxy {
    /// The proxy's base URL.
    pub url: String,
    drop_replies: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LossyProxy {
    /// Forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Self {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let drop_replies = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = drop_replies.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let flag = flag.clone();
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match std::io::Read::read(&mut s_read, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if flag.load(Ordering::SeqCst) {
                                    // The reply is lost: cut the phone's connection.
                                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                                    break;
                                }
                                if std::io::Write::write_all(&mut c_write, &buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { url, drop_replies }
    }

    /// From now on, replies are (not) lost.
    pub fn lose_replies(&self, lose: bool) {
        self.drop_replies
            .store(lose, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A case made with the core directly (not through a phone), as hostile or replayed input is:
/// its document, its creating change, and that change as a push.
pub fn hand_made_case(
    user: &str,
    summary: &str,
) -> (
    linli_sync_core::RecordDoc,
    linli_sync_core::automerge::Change,
    linli_sync_core::protocol::PushChange,
) {
    use linli_sync_core::{EditContext, RecordDoc, RecordId, RecordKind};
    let ctx = EditContext {
        actor: linli_sync_core::automerge::ActorId::random(),
        user: user.into(),
        now_ms: 1_763_000_000_000,
    };
    let (doc, change) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &HAITIANCHENG.parse().expect("demo place"),
        &ctx,
        &[("summary".into(), summary.into())],
    )
    .expect("a valid case");
    let push = linli_sync_core::protocol::PushChange {
        record: *doc.id().as_bytes(),
        kind: RecordKind::Case,
        part: linli_sync_core::protocol::Part::Record,
        change: change.raw_bytes().to_vec(),
    };
    (doc, change, push)
}

/// The case the sync benchmarks push: five fields with Chinese text, at 海天城, made under
/// `ctx`; its document and its push.
pub fn bench_case(
    ctx: &linli_sync_core::EditContext,
    n: usize,
) -> (
    linli_sync_core::RecordDoc,
    linli_sync_core::protocol::PushChange,
) {
    use linli_sync_core::{RecordDoc, RecordId, RecordKind};
    let fields = vec![
        (
            "summary".to_string(),
            format!("{n}号问题：楼道堆放杂物，影响消防通道"),
        ),
        ("category".to_string(), "fire_safety".to_string()),
        ("source".to_string(), "bus_session".to_string()),
        ("building".to_string(), "3幢".to_string()),
        ("room".to_string(), format!("{}", 100 + n % 600)),
    ];
    let (doc, change) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &HAITIANCHENG.parse().expect("place"),
        ctx,
        &fields,
    )
    .expect("valid case");
    let push = linli_sync_core::protocol::PushChange {
        record: *doc.id().as_bytes(),
        kind: RecordKind::Case,
        part: linli_sync_core::protocol::Part::Record,
        change: change.raw_bytes().to_vec(),
    };
    (doc, push)
}

/// Posts an encoded sync request with a bearer token through `agent`: the reply's status and
/// bytes (panics when the request cannot be sent).
pub fn post_sync(agent: &ureq::Agent, url: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut resp = agent
        .post(format!("{url}/v1/sync"))
        .header("content-type", linli_sync_core::protocol::CONTENT_TYPE)
        .header("authorization", &format!("Bearer {token}"))
        .send(body)
        .expect("sync request");
    status_and_bytes(&mut resp)
}
