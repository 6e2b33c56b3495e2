//! A private PostgreSQL cluster for a chaos run: its own data directory and port, so the run can
//! crash and restart the database (`pg_ctl stop -m immediate`: no checkpoint, recovery from the
//! WAL on the next start, as after a power cut) without touching the machine's shared server or
//! the other tests on it. Made with the installed PostgreSQL's `initdb` and `pg_ctl` (as the
//! `postgres` user when the harness runs as root, since PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// A running private cluster with one database, `linli`.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest installed PostgreSQL's programs (`LINLI_PG_BIN` overrides).
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("LINLI_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL installed in /usr/lib/postgresql: {e}"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".into())
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn failed(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

impl PgCluster {
    /// Makes and starts a cluster on a free loopback port, with a database `linli`.
    pub fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("linli-chaos-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if as_postgres {
            let uid = uid_of("postgres").ok_or("running as root, but there is no postgres user")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), None).map_err(|e| e.to_string())?;
        }
        let this = Self {
            dir,
            bin,
            port: free_port()?,
            as_postgres,
        };
        let out = this
            .program("initdb")
            .arg("-D")
            .arg(this.data())
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(failed("initdb", &out));
        }
        this.start_server()?;
        this.psql("CREATE DATABASE linli")?;
        Ok(this)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The `--database-url` of its `linli` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/linli", self.port)
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the cluster (after [`PgCluster::crash`], recovering from its WAL); waits until it
    /// accepts connections. Returns how long that took.
    pub fn start_server(&self) -> Result<std::time::Duration, String> {
        let t = Instant::now();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on",
            self.port,
            self.socket_dir().display()
        );
        let out = self
            .program("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "120", "-o", &opts, "start"])
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !out.status.success() {
            return Err(failed("pg_ctl start", &out));
        }
        Ok(t.elapsed())
    }

    /// Stops the cluster the hard way: every PostgreSQL process quits at once, without a
    /// checkpoint (what a killed database host looks like to the servers).
    pub fn crash(&self) -> Result<(), String> {
        let out = self
            .program("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .map_err(|e| format!("pg_ctl stop: {e}"))?;
        if !out.status.success() {
            return Err(failed("pg_ctl stop", &out));
        }
        Ok(())
    }

    /// Runs SQL on the `linli` database (or `postgres` for `CREATE DATABASE`); returns its
    /// unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let db = if sql.starts_with("CREATE DATABASE") {
            "postgres"
        } else {
            "linli"
        };
        let out = Command::new("psql")
            .arg(format!("postgres://postgres@127.0.0.1:{}/{db}", self.port))
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-qtAF", "\t", "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(failed("psql", &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pg_amcheck` of the `linli` database, every table's heap and every B-tree index with its
    /// entries checked against the heap: `ok`, or what it found. PostgreSQL's counterpart of
    /// SQLite's `PRAGMA integrity_check`.
    pub fn amcheck(&self) -> String {
        let out = Command::new(self.bin.join("pg_amcheck"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "linli"])
            .args(["-p", &self.port.to_string()])
            .args(["--install-missing", "--heapallindexed"])
            .output();
        match out {
            Ok(o) if o.status.success() => "ok".into(),
            Ok(o) => {
                let s = failed("pg_amcheck", &o);
                s.chars().take(2000).collect()
            }
            Err(e) => format!("pg_amcheck could not run: {e}"),
        }
    }
}

impl PgCluster {
    /// Stops the cluster and removes its files. The harness calls it at the end of a run: the
    /// phones' proxies hold the cluster (to crash it mid-request) in threads that outlive the
    /// run, so `Drop` would come only with the process's end, which does not run it.
    pub fn remove(&self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}
