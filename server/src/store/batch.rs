//! A commit group written table by table on SQLite: one multi-row statement per table for the
//! group's new actors, log rows, search texts and new records, instead of four or five
//! statements per change. sqlx runs each SQLite statement on the connection's own thread, so a
//! statement costs a hand-off between threads and back whatever it writes; written change by
//! change, a group spent most of its time in those hand-offs with both cores half idle.
//!
//! The outcome of every change is the one [`commit_in`](super::log::commit_in) would give it
//! written in the group's order: the versions and actor bindings are read for the whole group in
//! one query and carried forward change by change, so a change sees those its predecessors in
//! the group made. Rows go in in the group's order, so log positions are the same too.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use super::group::{Outcome, Work, touch_in};
use super::log::{
    CHANGE_COLUMNS, CHANGE_VALUES, Commit, CommitConflict, INSERT_RECORD_COLUMNS,
    INSERT_RECORD_VALUES, ProjectionUpdate, bind_change, bind_new_record, office_row, write_row,
};
use super::office::{OfficeRow, TEXT_UPSERT};
use crate::error::{Error, Result};

/// Writes the group within the caller's transaction. `Ok(None)` (nothing written) when the
/// group holds two changes to one record, which a row-per-table statement cannot write; an
/// `Err` when a statement failed, after which the caller rolls back.
pub(super) async fn write_group(
    conn: &mut SqliteConnection,
    works: &[&Work],
) -> Result<Option<Vec<Outcome>>> {
    let commits: Vec<&Commit> = works
        .iter()
        .filter_map(|w| match w {
            Work::Commit(c) => Some(&**c),
            Work::Touch { .. } => None,
        })
        .collect();
    let decided = decide(conn, &commits).await?;
    let accepted: Vec<&Commit> = commits
        .iter()
        .zip(&decided)
        .filter(|(_, d)| d.is_ok())
        .map(|(c, _)| *c)
        .collect();
    let ids: Vec<String> = accepted
        .iter()
        .map(|c| c.change.record.to_string())
        .collect();
    let mut records = std::collections::HashSet::with_capacity(ids.len());
    if !ids.iter().all(|id| records.insert(id.as_str())) {
        return Ok(None);
    }

    // New actors, bound to their devices (once each: the first of the group's changes wins).
    let mut new_actors: Vec<&Commit> = Vec::new();
    for (commit, d) in commits.iter().zip(&decided) {
        if matches!(d, Ok(true)) {
            new_actors.push(commit);
        }
    }
    for chunk in pow2_chunks(&new_actors) {
        let sql = rows_sql(
            "INSERT INTO actors (actor, device_id, first_seen) VALUES ",
            "(?, ?, ?)",
            chunk.len(),
            "",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            q = q
                .bind(&c.change.actor)
                .bind(c.change.device.to_string())
                .bind(c.change.received_at);
        }
        expect_rows(q.execute(&mut *conn).await?.rows_affected(), chunk.len())?;
    }

    // The log rows, positions assigned in the group's order.
    let mut seqs: Vec<i64> = Vec::with_capacity(accepted.len());
    for chunk in pow2_chunks(&accepted) {
        let sql = rows_sql(
            &format!("INSERT INTO changes ({CHANGE_COLUMNS}) VALUES "),
            &format!("({CHANGE_VALUES})"),
            chunk.len(),
            " RETURNING seq, record_id",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            q = bind_change(q, &c.change);
        }
        let mut rows: Vec<(i64, String)> = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
        rows.sort_unstable();
        // Rows are inserted in the statement's order, each at the next position.
        if rows.len() != chunk.len()
            || rows
                .iter()
                .zip(chunk)
                .any(|((_, id), c)| *id != c.change.record.to_string())
        {
            return Err(Error::Internal(
                "the group's log rows came back out of order".into(),
            ));
        }
        seqs.extend(rows.into_iter().map(|(seq, _)| seq));
    }

    // Search texts, then the rows whose text key reads them.
    let offices: Vec<Option<OfficeRow<'_>>> = accepted
        .iter()
        .zip(&ids)
        .map(|(c, id)| office_row(c, id))
        .collect();
    let texts: Vec<&OfficeRow<'_>> = offices.iter().flatten().collect();
    for chunk in pow2_chunks(&texts) {
        let sql = rows_sql(
            "INSERT INTO record_text (id, text, grams) VALUES ",
            "(?, ?, ?)",
            chunk.len(),
            &format!(" {TEXT_UPSERT}"),
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for office in chunk {
            q = office.bind_text(q);
        }
        q.execute(&mut *conn).await?;
    }

    // New records in multi-row inserts; changes to existing ones row by row.
    let mut new_rows: Vec<(&Commit, &OfficeRow<'_>, i64)> = Vec::new();
    for (((commit, office), id), seq) in accepted.iter().zip(&offices).zip(&ids).zip(&seqs) {
        match (office, &commit.projection) {
            (Some(office), ProjectionUpdate::Record { .. }) if commit.expected_version == 0 => {
                new_rows.push((commit, office, *seq));
            }
            _ => write_row(conn, commit, id, office.as_ref(), *seq).await?,
        }
    }
    for chunk in pow2_chunks(&new_rows) {
        let sql = rows_sql(
            &format!("INSERT INTO records ({}) VALUES ", *INSERT_RECORD_COLUMNS),
            &format!("({})", *INSERT_RECORD_VALUES),
            chunk.len(),
            "",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (commit, office, seq) in chunk {
            q = bind_new_record(office.bind(q), commit, *seq)?;
        }
        expect_rows(q.execute(&mut *conn).await?.rows_affected(), chunk.len())?;
    }

    let mut outcomes = Vec::with_capacity(works.len());
    let (mut decided, mut seqs) = (decided.into_iter(), seqs.into_iter());
    for work in works {
        outcomes.push(match work {
            Work::Commit(_) => match decided.next() {
                Some(Ok(_)) => Ok(Ok(seqs.next().ok_or_else(lost)?)),
                Some(Err(conflict)) => Ok(Err(conflict)),
                None => return Err(lost()),
            },
            Work::Touch { device, now } => touch_in(conn, device, *now).await,
        });
    }
    Ok(Some(outcomes))
}

fn lost() -> Error {
    Error::Internal("a commit group lost track of a change".into())
}

/// Each commit's fate in the group's order: `Ok(binds)` when it is written (`binds`: its actor
/// is new and bound by it), else the conflict [`commit_in`](super::log::commit_in) would report.
async fn decide(
    conn: &mut SqliteConnection,
    commits: &[&Commit],
) -> Result<Vec<std::result::Result<bool, CommitConflict>>> {
    if commits.is_empty() {
        return Ok(Vec::new());
    }
    let keys = serde_json::Value::Array(
        commits
            .iter()
            .map(|c| serde_json::json!([c.change.actor, c.change.record.to_string()]))
            .collect(),
    )
    .to_string();
    let stored: Vec<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT (SELECT device_id FROM actors WHERE actor = json_extract(j.value, '$[0]')),
                (SELECT version FROM records WHERE id = json_extract(j.value, '$[1]'))
         FROM json_each(?) j ORDER BY j.key",
    )
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    if stored.len() != commits.len() {
        return Err(lost());
    }
    // What the group's earlier changes leave, for the later ones to see.
    let mut bound: HashMap<&str, String> = HashMap::new();
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut out = Vec::with_capacity(commits.len());
    for (commit, (stored_device, stored_version)) in commits.iter().zip(stored) {
        let change = &commit.change;
        let device = change.device.to_string();
        let record = change.record.to_string();
        let actor = bound.get(change.actor.as_str()).cloned().or(stored_device);
        if actor.as_ref().is_some_and(|d| *d != device) {
            out.push(Err(CommitConflict::ForeignActor));
            continue;
        }
        let version = versions
            .get(&record)
            .copied()
            .unwrap_or(stored_version.unwrap_or(0));
        if version != commit.expected_version {
            out.push(Err(CommitConflict::Version));
            continue;
        }
        versions.insert(record, version + 1);
        if actor.is_none() {
            bound.insert(&change.actor, device);
        }
        out.push(Ok(actor.is_none()));
    }
    Ok(out)
}

fn expect_rows(written: u64, rows: usize) -> Result<()> {
    if written == rows as u64 {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "a group's insert wrote {written} rows of {rows}"
        )))
    }
}

/// `head` followed by `n` copies of `row`, comma-separated, then `tail`.
fn rows_sql(head: &str, row: &str, n: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + n * (row.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

/// Splits `items` into runs of 256, 128, … 1 (the binary digits of its length), so that a
/// connection's cache keeps at most nine texts of each statement, prepared once each.
fn pow2_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let (head, rest) = items.split_at(1 << items.len().ilog2());
        items = rest;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use linli_sync_core::{DeviceId, RecordId};

    use super::pow2_chunks;
    use crate::store::SyncStore;
    use crate::store::conformance::{Fixture, Phone, new_case, sqlite_store};
    use crate::store::group::{Work, commit_group, commit_group_at_once, commit_group_one_by_one};
    use crate::store::log::CommitConflict;

    #[test]
    fn chunks_follow_the_binary_digits_of_the_length() {
        let items: Vec<u32> = (0..100).collect();
        let sizes: Vec<usize> = pow2_chunks(&items).map(<[u32]>::len).collect();
        assert_eq!(sizes, [64, 32, 4]);
        let back: Vec<u32> = pow2_chunks(&items).flatten().copied().collect();
        assert_eq!(back, items);
        assert_eq!(pow2_chunks::<u32>(&[]).count(), 0);
    }

    /// Every row of the tables a commit writes, as text.
    async fn dump(pool: &sqlx::SqlitePool) -> Vec<String> {
        let mut out = Vec::new();
        for table in ["actors", "changes", "records", "record_text", "devices"] {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                    .bind(table)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            let row = columns
                .iter()
                .map(|c| format!("'{c}=' || quote({c})"))
                .collect::<Vec<_>>()
                .join(" || ' ' || ");
            let sql = format!("SELECT '{table}: ' || {row} FROM {table} ORDER BY rowid");
            out.extend(
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await
                    .unwrap(),
            );
        }
        out
    }

    /// A group holding every outcome (new actors, an actor bound earlier in the group and then
    /// pushed from another device, a stale version, an edit of a stored record, a touch) is
    /// written table by table with the outcomes, log positions and rows that writing it change
    /// by change gives.
    #[tokio::test]
    async fn a_group_written_table_by_table_ends_as_written_change_by_change() {
        let (at_once, one_by_one) = (sqlite_store().await, sqlite_store().await);
        let (d1, d2) = (DeviceId::new(), DeviceId::new());
        let mut phone = Phone::new(d1);
        let stored = RecordId::new();
        let first = phone.edit(stored, "hz/a", "summary", "漏水", 0, true);
        for store in [&at_once, &one_by_one] {
            store.seed(&[d1, d2]).await;
            let again = crate::store::conformance::at_version(&first, 0);
            assert!(matches!(store.commit(again).await, Ok(Ok(_))));
        }

        let new1 = new_case(d1, "hz/a");
        let mut shares_new_actor = new_case(d2, "hz/b");
        shares_new_actor.change.actor = new1.change.actor.clone();
        let mut same_actor_same_device = new_case(d1, "hz/b");
        same_actor_same_device.change.actor = new1.change.actor.clone();
        let mut foreign = new_case(d2, "hz/a");
        foreign.change.actor = first.change.actor.clone();
        let stale = Phone::new(d2).edit(RecordId::new(), "hz/a", "summary", "x", 3, true);
        let edit = phone.edit(stored, "hz/a", "summary", "漏水了", 1, false);
        let works = [
            Work::Commit(Box::new(new1)),
            Work::Commit(Box::new(shares_new_actor)),
            Work::Commit(Box::new(foreign)),
            Work::Touch {
                device: d2.to_string(),
                now: 5_000_000,
            },
            Work::Commit(Box::new(stale)),
            Work::Commit(Box::new(edit)),
            Work::Commit(Box::new(same_actor_same_device)),
        ];
        let refs: Vec<&Work> = works.iter().collect();
        let outcomes = |o: Vec<super::Outcome>| -> Vec<String> {
            o.into_iter().map(|o| format!("{:?}", o.unwrap())).collect()
        };
        let a = commit_group_at_once(&mut at_once.pool.acquire().await.unwrap(), &refs)
            .await
            .unwrap()
            .expect("written at once");
        let b = commit_group_one_by_one(&mut one_by_one.pool.acquire().await.unwrap(), &refs)
            .await
            .unwrap();
        let (a, b) = (outcomes(a), outcomes(b));
        assert_eq!(a, b);
        assert_eq!(
            a,
            [
                "Ok(2)",
                format!("Err({:?})", CommitConflict::ForeignActor).as_str(),
                format!("Err({:?})", CommitConflict::ForeignActor).as_str(),
                "Ok(0)",
                format!("Err({:?})", CommitConflict::Version).as_str(),
                "Ok(3)",
                "Ok(4)",
            ]
        );
        assert_eq!(dump(&at_once.pool).await, dump(&one_by_one.pool).await);
        at_once.finish().await;
        one_by_one.finish().await;
    }

    /// Two changes to one record in a group cannot share a multi-row insert: the group is
    /// written change by change instead, and both commit in order.
    #[tokio::test]
    async fn a_group_with_two_changes_to_one_record_is_written_change_by_change() {
        let store = sqlite_store().await;
        let device = DeviceId::new();
        store.seed(&[device]).await;
        let mut phone = Phone::new(device);
        let record = RecordId::new();
        let works = [
            Work::Commit(Box::new(
                phone.edit(record, "hz/a", "summary", "a", 0, true),
            )),
            Work::Commit(Box::new(
                phone.edit(record, "hz/a", "summary", "b", 1, false),
            )),
        ];
        let refs: Vec<&Work> = works.iter().collect();
        assert!(
            commit_group_at_once(&mut store.pool.acquire().await.unwrap(), &refs)
                .await
                .unwrap()
                .is_none()
        );
        let outcomes = commit_group(&mut store.pool.acquire().await.unwrap(), &refs)
            .await
            .unwrap();
        let seqs: Vec<i64> = outcomes.into_iter().map(|o| o.unwrap().unwrap()).collect();
        assert_eq!(seqs, [1, 2]);
        let version: i64 = sqlx::query_scalar("SELECT version FROM records WHERE id = ?")
            .bind(record.to_string())
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(version, 2);
        store.finish().await;
    }
}
