//! The end of a run: heal every fault, sync every phone until quiet, and check.
//!
//! 1. Every change a phone holds as acknowledged (its `change_meta` rows under its own device) is
//!    in the server's log exactly once, and in no phone's outbox.
//! 2. Every change of every edit a phone reported saved is in the server's log exactly once, or
//!    sits in that phone's outbox with the server's reason for refusing it.
//! 3. No hash is in the server's log twice, every change has a log position and no position is
//!    given twice; the server's store passes its check (`PRAGMA integrity_check` on SQLite,
//!    `pg_amcheck` on PostgreSQL) and every phone's store passes `PRAGMA integrity_check`.
//! 4. Refused changes are discarded (as the user would), the phones synced until quiet again, and
//!    then every phone holds exactly the records within its user's grants that the server holds,
//!    each with the merged value the server gives that user (personal fields as the role may see
//!    them), and every tally equals the sum of the accepted increments every phone made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::{World, hex8, integrity, open_ro};

/// Most sync passes before the phones must be quiet.
const MAX_PASSES: usize = 40;

/// An outbox row at the end.
struct OutboxRow {
    id: i64,
    hash: [u8; 32],
    state: String,
    reason: Option<String>,
}

fn outbox(db: &std::path::Path) -> rusqlite::Result<Vec<OutboxRow>> {
    let c = open_ro(db)?;
    let mut stmt = c.prepare("SELECT id, hash, state, reject_code FROM outbox ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        let h: Vec<u8> = r.get(1)?;
        Ok(OutboxRow {
            id: r.get(0)?,
            hash: <[u8; 32]>::try_from(h.as_slice()).unwrap_or([0; 32]),
            state: r.get(2)?,
            reason: r.get(3)?,
        })
    })?;
    rows.collect()
}

fn acknowledged(db: &std::path::Path, device: &str) -> rusqlite::Result<Vec<[u8; 32]>> {
    let c = open_ro(db)?;
    let mut stmt = c.prepare("SELECT hash FROM change_meta WHERE device = ?1")?;
    let rows = stmt.query_map([device], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(h) = <[u8; 32]>::try_from(r?.as_slice()) {
            out.push(h);
        }
    }
    Ok(out)
}

/// A SQLite server's log: how many times each hash is in it.
pub(crate) fn sqlite_log(db: &std::path::Path) -> rusqlite::Result<HashMap<[u8; 32], u64>> {
    let c = open_ro(db)?;
    let mut stmt = c.prepare("SELECT hash, COUNT(*) FROM changes GROUP BY hash")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = HashMap::new();
    for r in rows {
        let (h, n) = r?;
        if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
            out.insert(h, n as u64);
        }
    }
    Ok(out)
}

pub(crate) fn sqlite_records(db: &std::path::Path) -> rusqlite::Result<Vec<(String, String)>> {
    let c = open_ro(db)?;
    let mut stmt = c.prepare("SELECT id, place FROM records ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

impl World {
    fn heal(&mut self) {
        for p in &mut self.phones {
            p.proxy.set_fault_rate(0.0);
            p.proxy.set_plant_rate(0.0);
            p.proxy.kill_on_next_request(None);
            p.proxy.clear_stash();
            p.proxy.set_offline(false);
            p.offline_until = 0;
            p.client.chaos_set_clock_skew(0);
            p.client.chaos_arm_crash(None);
        }
        self.ensure_server();
    }

    /// Syncs every phone, one after another, until a whole pass moves nothing.
    fn sync_until_quiet(&mut self, label: &str) -> bool {
        for pass in 0..MAX_PASSES {
            let mut moved = false;
            let mut failed = false;
            for i in 0..self.phones.len() {
                self.figures.syncs += 1;
                match self.phones[i].client.sync() {
                    Ok(r) => {
                        if r.accepted > 0 || r.pulled > 0 || r.more_pending {
                            moved = true;
                        }
                    }
                    Err(e) => {
                        failed = true;
                        self.error("sync", &e);
                        self.log(format!(
                            "{label} pass {pass}: {} sync failed: {e}",
                            self.phones[i].label()
                        ));
                        if matches!(e, linli_ffi::ApiError::Unauthorized { .. }) {
                            self.relogin(i);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            if !moved && !failed {
                self.log(format!("{label}: quiet after {} passes", pass + 1));
                return true;
            }
        }
        self.problems.push(format!(
            "{label}: the phones were still moving changes after {MAX_PASSES} sync passes"
        ));
        false
    }
}

/// Heals, syncs until quiet, and checks; problems go to `world.problems`.
pub(crate) fn heal_and_check(w: &mut World) {
    w.heal();
    if !w.sync_until_quiet("heal") {
        return;
    }
    let log = match w.server.log_counts() {
        Ok(l) => l,
        Err(e) => {
            w.problems
                .push(format!("the server's log cannot be read: {e}"));
            return;
        }
    };
    match w.server.position_faults() {
        Ok((0, 0)) => {}
        Ok((missing, twice)) => w.problems.push(format!(
            "the server's log has {missing} changes without a position and {twice} positions \
             given twice"
        )),
        Err(e) => w
            .problems
            .push(format!("the server's log positions cannot be read: {e}")),
    }
    w.figures.server_log = log.values().sum();
    let dups = log.values().filter(|n| **n > 1).count() as u64;
    w.figures.duplicates += dups;
    if dups > 0 {
        w.problems.push(format!(
            "{dups} changes are in the server's log more than once"
        ));
    }

    // Acknowledgements and saved edits against the log and the outboxes.
    let mut problems = Vec::new();
    let mut checked = 0u64;
    let mut refused = 0u64;
    let mut losses = 0u64;
    let mut committed: HashSet<[u8; 32]> = HashSet::new();
    for p in &w.phones {
        let db = p.db();
        let rows = match outbox(&db) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}: outbox unreadable: {e}", p.label()));
                continue;
            }
        };
        let with_reason: HashSet<[u8; 32]> = rows
            .iter()
            .filter(|r| r.reason.is_some())
            .map(|r| r.hash)
            .collect();
        for r in &rows {
            if log.contains_key(&r.hash) {
                problems.push(format!(
                    "{}: outbox entry {} ({}, {}) holds a change the server has acknowledged",
                    p.label(),
                    hex8(&r.hash),
                    r.state,
                    r.reason.as_deref().unwrap_or("no reason")
                ));
            } else if r.reason.is_none() {
                problems.push(format!(
                    "{}: outbox entry {} is still unsent after the phones went quiet",
                    p.label(),
                    hex8(&r.hash)
                ));
            }
        }
        match acknowledged(&db, &p.device_id) {
            Ok(acks) => {
                for h in acks {
                    checked += 1;
                    match log.get(&h).copied().unwrap_or(0) {
                        1 => {}
                        0 => {
                            losses += 1;
                            problems.push(format!(
                                "LOSS: {} holds {} as acknowledged but the server's log lacks it",
                                p.label(),
                                hex8(&h)
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => problems.push(format!("{}: acknowledgements unreadable: {e}", p.label())),
        }
        for e in &p.edits {
            for h in &e.hashes {
                checked += 1;
                match log.get(h).copied().unwrap_or(0) {
                    0 if with_reason.contains(h) => refused += 1,
                    0 => {
                        losses += 1;
                        problems.push(format!(
                            "LOSS: {} step {} '{}' was reported saved, but {} is neither in the \
                             server's log nor in the phone's outbox with a reason",
                            p.label(),
                            e.step,
                            e.what,
                            hex8(h)
                        ));
                    }
                    _ => {
                        committed.insert(*h);
                    }
                }
            }
        }
    }
    w.figures.changes_checked += checked;
    w.figures.refused_with_reason += refused;
    w.figures.losses += losses;
    w.problems.extend(problems);

    let report = w.server.integrity();
    if report != "ok" {
        w.problems
            .push(format!("server store at the end: {report}"));
    }
    for p in &w.phones {
        let report = integrity(&p.db());
        if report != "ok" {
            w.problems.push(format!(
                "{}'s store at the end: integrity_check {report}",
                p.label()
            ));
        }
    }

    // The user discards what the server refused; then everyone converges.
    for i in 0..w.phones.len() {
        let rows = outbox(&w.phones[i].db()).unwrap_or_default();
        for r in rows.iter().filter(|r| r.state == "rejected") {
            match w.phones[i].client.discard(r.id) {
                Ok(n) => w.log(format!(
                    "{} discards refused {} ({} entries)",
                    w.phones[i].label(),
                    hex8(&r.hash),
                    n
                )),
                // Already gone with an earlier discard it built on.
                Err(linli_ffi::ApiError::NotFound { .. }) => {}
                Err(e) => w
                    .problems
                    .push(format!("{}: discard failed: {e}", w.phones[i].label())),
            }
        }
    }
    if !w.sync_until_quiet("after discards") {
        return;
    }
    for p in &w.phones {
        let left = outbox(&p.db()).map(|r| r.len()).unwrap_or(0);
        if left > 0 {
            w.problems.push(format!(
                "{}: {left} outbox entries are left after discarding the refused ones",
                p.label()
            ));
        }
    }
    compare_values(w, &committed);
}

/// Every phone against the server, record by record, and the tallies.
fn compare_values(w: &mut World, committed: &HashSet<[u8; 32]>) {
    let records = match w.server.records() {
        Ok(r) => r,
        Err(e) => {
            w.problems
                .push(format!("the server's records cannot be read: {e}"));
            return;
        }
    };
    w.figures.records = records.len() as u64;
    // The server's value of each record as each user sees it.
    let mut seen: HashMap<&'static str, BTreeMap<String, Value>> = HashMap::new();
    let mut problems = Vec::new();
    let mut divergent = 0u64;
    for (n, user) in super::USERS.iter().enumerate() {
        // The checker's own device per user (a device id is bound to one user).
        let device = format!("c0ffee00-0000-4000-8000-{n:012}");
        let mut token = crate::login_token(&w.server.url, user.name, &device);
        let mut values = BTreeMap::new();
        for (id, place) in &records {
            if !super::within(place, user.grant) {
                continue;
            }
            let url = format!("{}/v1/records/{id}", w.server.url);
            let (mut status, mut body) = crate::raw_get_json(&url, &token);
            if status == 401 {
                // The chaos server's tokens live 20 s; reading thousands of records outlives one.
                token = crate::login_token(&w.server.url, user.name, &device);
                (status, body) = crate::raw_get_json(&url, &token);
            }
            if status != 200 {
                problems.push(format!(
                    "the server answers {status} for record {id} to {}",
                    user.name
                ));
                continue;
            }
            values.insert(id.clone(), body["value"].clone());
        }
        seen.insert(user.name, values);
    }
    for p in &w.phones {
        let Some(expected) = seen.get(p.user.name) else {
            continue;
        };
        let held: Vec<String> = match p.client.list() {
            Ok(l) => l.into_iter().map(|r| r.id).collect(),
            Err(e) => {
                problems.push(format!("{}: list failed: {e}", p.label()));
                continue;
            }
        };
        let held_set: HashSet<&String> = held.iter().collect();
        for id in expected.keys() {
            if !held_set.contains(id) {
                divergent += 1;
                problems.push(format!(
                    "DIVERGED: {} lacks record {id} the server holds within its grants",
                    p.label()
                ));
            }
        }
        for id in &held {
            let Some(server_value) = expected.get(id) else {
                divergent += 1;
                problems.push(format!(
                    "DIVERGED: {} holds record {id} the server does not give its user",
                    p.label()
                ));
                continue;
            };
            let phone_value: Value = match p.client.get(id.clone()) {
                Ok(v) => serde_json::from_str(&v.value_json).unwrap_or(Value::Null),
                Err(e) => {
                    divergent += 1;
                    problems.push(format!("DIVERGED: {} cannot show {id}: {e}", p.label()));
                    continue;
                }
            };
            if &phone_value != server_value {
                divergent += 1;
                problems.push(format!(
                    "DIVERGED: {} record {id}: phone {} ≠ server {}",
                    p.label(),
                    clip(&phone_value),
                    clip(server_value)
                ));
            }
        }
    }
    // Tallies: the sum of every accepted increment, on the server (as office1, who sees all).
    let mut expected: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for p in &w.phones {
        for e in &p.edits {
            if let Some((id, field, n)) = &e.tally
                && e.hashes.iter().all(|h| committed.contains(h))
            {
                *expected.entry((id.clone(), field)).or_default() += n;
            }
        }
    }
    let office = seen.get("office1");
    for ((id, field), sum) in &expected {
        let got = office
            .and_then(|v| v.get(id))
            .and_then(|v| v[*field].as_i64());
        if got != Some(*sum) {
            problems.push(format!(
                "TALLY: record {id} {field} is {got:?} on the server, the phones added {sum}"
            ));
        }
    }
    w.figures.divergent_records += divergent;
    w.problems.extend(problems);
}

fn clip(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}
