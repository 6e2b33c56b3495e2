//! A fault proxy on loopback, one per phone, between the phone and the server. It reads each
//! HTTP request whole (head and `Content-Length` body), forwards it on its own upstream
//! connection with `Connection: close` (so the server's reply ends at end of stream and every
//! phone request uses a fresh connection), reads the reply whole and relays it, unless a fault
//! is drawn for the request:
//!
//! - `drop`: the request never reaches the server; the phone's connection is closed;
//! - `delay`: it is held 10–150 ms first;
//! - `duplicate`: it reaches the server twice (a copy first, its reply discarded);
//! - `reorder`: it is held back and the phone's connection closed; it reaches the server after the
//!   phone's next request (a stale retry arriving late, with an old cursor and old changes);
//! - `cut_request`: the server gets the head and part of the body, then the connection closes;
//! - `cut_reply`: the server processes (and commits) it, the phone gets only part of the reply;
//! - `kill_mid_request` (armed by the driver): the server is SIGKILLed 0–25 ms after it received
//!   the whole request, while it works on it (or, on PostgreSQL, the node serving it, or the
//!   database: the driver's hook decides).
//!
//! With several server nodes the proxy is also the phone's load balancer: each request goes to
//! the next node in turn, and to the one after it when a node does not accept connections.
//!
//! `offline` closes every connection at once (no signal). A planted fault (`ack_without_commit`)
//! exists only to prove the checks fail: the proxy strips pushed changes from a request and
//! answers them as accepted, as a server that acknowledged before committing and then lost the
//! commit would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linli_sync_core::protocol::{Accepted, SyncRequest, SyncResponse};

use super::rng::Rng;

/// The proxy's fault kinds, in counter order.
pub const FAULT_KINDS: [&str; 9] = [
    "drop",
    "delay",
    "duplicate",
    "reorder",
    "cut_request",
    "cut_reply",
    "kill_mid_request",
    "offline_refusal",
    "planted_ack_without_commit",
];

/// Faults injected, by kind (indexes of [`FAULT_KINDS`]), shared by all proxies.
#[derive(Debug, Default)]
pub struct FaultCounters(pub [AtomicU64; 9]);

impl FaultCounters {
    fn bump(&self, kind: usize) {
        self.0[kind].fetch_add(1, Ordering::Relaxed);
    }

    /// `(kind, count)` pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        FAULT_KINDS
            .iter()
            .zip(&self.0)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Kills the server node with this index (the driver restarts it).
pub type KillHook = Arc<dyn Fn(usize) + Send + Sync>;

struct State {
    rng: Rng,
    /// Chance that a request gets a random fault.
    fault_rate: f64,
    /// Chance that a push gets the planted fault.
    plant_rate: f64,
    /// Kill the server this many ms (at most) after the next request reached it.
    kill_next: Option<u64>,
    stash: Option<Vec<u8>>,
}

struct Shared {
    upstreams: Vec<String>,
    /// The next request's node (round robin).
    next: AtomicUsize,
    state: Mutex<State>,
    offline: AtomicBool,
    counters: Arc<FaultCounters>,
    kill: KillHook,
}

/// One phone's fault proxy.
pub struct FaultProxy {
    /// The URL the phone uses.
    pub url: String,
    shared: Arc<Shared>,
}

enum Fault {
    None,
    Drop,
    Delay(u64),
    Duplicate,
    Reorder,
    CutRequest,
    CutReply,
}

impl FaultProxy {
    /// A proxy to the server nodes `upstreams` (`host:port`) drawing its faults from `rng`.
    pub fn start(
        upstreams: &[String],
        rng: Rng,
        counters: Arc<FaultCounters>,
        kill: KillHook,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            upstreams: upstreams.to_vec(),
            next: AtomicUsize::new(0),
            state: Mutex::new(State {
                rng,
                fault_rate: 0.0,
                plant_rate: 0.0,
                kill_next: None,
                stash: None,
            }),
            offline: AtomicBool::new(false),
            counters,
            kill,
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let s = s.clone();
                std::thread::spawn(move || serve(&s, client));
            }
        });
        Ok(Self { url, shared })
    }

    /// Sets the chance of a random fault per request (0 heals).
    pub fn set_fault_rate(&self, p: f64) {
        self.lock().fault_rate = p;
    }

    /// Sets the chance of the planted fault per push.
    pub fn set_plant_rate(&self, p: f64) {
        self.lock().plant_rate = p;
    }

    /// Cuts the phone off (or back on).
    pub fn set_offline(&self, offline: bool) {
        self.shared.offline.store(offline, Ordering::SeqCst);
    }

    /// Kills the server 0..=`within_ms` ms after this phone's next request reached it (while it
    /// works on it), or disarms with `None`.
    pub fn kill_on_next_request(&self, within_ms: Option<u64>) {
        self.lock().kill_next = within_ms;
    }

    /// Forgets a held-back request (healing: it would otherwise arrive after the check).
    pub fn clear_stash(&self) {
        self.lock().stash = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request: its head (rewritten with `Connection: close`) and body.
fn read_request(client: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut len = 0usize;
    let mut lines: Vec<&str> = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        lines.push(line);
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    let mut new_head = lines.join("\r\n");
    new_head.push_str("\r\nConnection: close\r\n\r\n");
    Some((new_head.into_bytes(), body))
}

/// A connection to the next node that accepts one, and that node's index.
fn connect(shared: &Shared) -> Option<(TcpStream, usize)> {
    let n = shared.upstreams.len();
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
    (0..n).find_map(|k| {
        let i = (first + k) % n;
        TcpStream::connect(&shared.upstreams[i])
            .ok()
            .map(|s| (s, i))
    })
}

/// Sends a whole request upstream and reads the reply to end of stream (partial when the server
/// dies). `None` when no server can be reached.
fn exchange(shared: &Shared, request: &[u8], kill_after: Option<u64>) -> Option<Vec<u8>> {
    let (mut up, node) = connect(shared)?;
    let _ = up.set_read_timeout(Some(Duration::from_secs(120)));
    up.write_all(request).ok()?;
    if let Some(ms) = kill_after {
        std::thread::sleep(Duration::from_millis(ms));
        (shared.kill)(node);
    }
    let mut reply = Vec::new();
    let _ = up.read_to_end(&mut reply);
    Some(reply)
}

fn serve(shared: &Shared, mut client: TcpStream) {
    let Some((head, body)) = read_request(&mut client) else {
        return;
    };
    if shared.offline.load(Ordering::SeqCst) {
        shared.counters.bump(7);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let mut request = head.clone();
    request.extend_from_slice(&body);
    let (fault, kill, stashed, planted, cut_at) = {
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let kill = st.kill_next.take().map(|ms| st.rng.below(ms + 1));
        let stashed = st.stash.take();
        let is_push = head.starts_with(b"POST /v1/sync");
        let (plant_rate, fault_rate) = (st.plant_rate, st.fault_rate);
        let planted = is_push && plant_rate > 0.0 && st.rng.chance(plant_rate);
        let fault = if kill.is_some() || planted || !st.rng.chance(fault_rate) {
            Fault::None
        } else {
            match st.rng.below(7) {
                0 => Fault::Drop,
                1 | 2 => Fault::Delay(st.rng.range(10, 150) as u64),
                3 => Fault::Duplicate,
                4 if stashed.is_none() => Fault::Reorder,
                4 | 5 => Fault::CutRequest,
                _ => Fault::CutReply,
            }
        };
        let cut_at = st.rng.next_u64();
        if let Fault::Reorder = fault {
            st.stash = Some(request.clone());
        }
        (fault, kill, stashed, planted, cut_at)
    };
    let reply = match fault {
        Fault::Drop => {
            shared.counters.bump(0);
            None
        }
        Fault::Reorder => {
            shared.counters.bump(3);
            None
        }
        Fault::CutRequest => {
            shared.counters.bump(4);
            if let Some((mut up, _)) = connect(shared) {
                // Somewhere in the head or body, never the whole request.
                let keep = (cut_at % request.len().max(1) as u64) as usize;
                let _ = up.write_all(&request[..keep]);
                let _ = up.shutdown(Shutdown::Both);
            }
            None
        }
        Fault::Delay(ms) => {
            shared.counters.bump(1);
            std::thread::sleep(Duration::from_millis(ms));
            exchange(shared, &request, None)
        }
        Fault::Duplicate => {
            shared.counters.bump(2);
            let _ = exchange(shared, &request, None);
            exchange(shared, &request, None)
        }
        Fault::CutReply => {
            shared.counters.bump(5);
            // The server has done its work; the phone hears part of it (or nothing).
            exchange(shared, &request, None).map(|mut r| {
                let keep = (cut_at % r.len().max(1) as u64) as usize;
                r.truncate(keep);
                r
            })
        }
        Fault::None if planted => {
            shared.counters.bump(8);
            plant_ack_without_commit(shared, &head, &body)
        }
        Fault::None => {
            if kill.is_some() {
                shared.counters.bump(6);
            }
            exchange(shared, &request, kill)
        }
    };
    if let Some(reply) = reply {
        let _ = client.write_all(&reply);
    }
    let _ = client.shutdown(Shutdown::Both);
    // A held-back request reaches the server after the phone's next one.
    if let Some(old) = stashed {
        let _ = exchange(shared, &old, None);
    }
}

/// The planted fault: the pushed changes never reach the server but are answered as accepted.
fn plant_ack_without_commit(shared: &Shared, head: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let passthrough = || {
        let mut r = head.to_vec();
        r.extend_from_slice(body);
        exchange(shared, &r, None)
    };
    let Ok(mut req) = SyncRequest::decode(body) else {
        return passthrough();
    };
    let pushed = std::mem::take(&mut req.changes);
    if pushed.is_empty() {
        return passthrough();
    }
    let new_body = req.encode();
    let head = String::from_utf8_lossy(head);
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut request = format!("{head}Content-Length: {}\r\n\r\n", new_body.len()).into_bytes();
    request.extend_from_slice(&new_body);
    let reply = exchange(shared, &request, None)?;
    let split = find(&reply, b"\r\n\r\n")? + 4;
    let mut resp = SyncResponse::decode(&reply[split..]).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for p in pushed {
        if let Ok(change) = linli_sync_core::automerge::Change::from_bytes(p.change) {
            resp.accepted.push(Accepted {
                hash: change.hash().0,
                received_at: now,
            });
        }
    }
    let new_body = resp.encode();
    let head = String::from_utf8_lossy(&reply[..split]);
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut out = format!("{head}Content-Length: {}\r\n\r\n", new_body.len()).into_bytes();
    out.extend_from_slice(&new_body);
    Some(out)
}
