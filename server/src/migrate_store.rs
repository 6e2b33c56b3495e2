//! `linli-server migrate-store --from <sqlite> --to <postgres url>`: moves a whole district from
//! its SQLite file to an empty PostgreSQL database, then checks the copy.
//!
//! Phones keep syncing from the cursors they hold, which name a log position and a grant epoch,
//! so every row keeps its ids: `changes.seq` stays each change's position (and becomes its `id`,
//! the row handle PostgreSQL's commit path stamps positions by), `grant_events.id` stays each
//! epoch, and afterwards `log_head` and every sequence continue past what SQLite handed out, so
//! a cursor never meets a position twice and never skips one.
//!
//! The source is only read (its connections are read-only, nothing is migrated or backfilled
//! there). The copy is one PostgreSQL transaction: a failure leaves the target as it was. Every
//! column on each side is accounted for before anything is written: a column or table that one
//! side has and the other lacks stops the move, unless it is listed below as derived on
//! PostgreSQL or as SQLite's own machinery, so nothing is dropped silently.
//!
//! Not copied, and why:
//! - `record_text` and its full-text indexes (`record_fts*`, `record_grams*`), and
//!   `records.text_n` (the key into them): SQLite's search index. PostgreSQL keeps each record's
//!   search text and character pairs in `records.search_text` and `records.grams`, derived here
//!   from the record's value exactly as its commit path derives them.
//! - `sqlite_sequence`: its values become PostgreSQL's sequences and `log_head`.
//! - `_sqlx_migrations`: each backend has its own numbered series.
//!
//! The back-office columns of `records` (`source`, `summary`, `building`, `date`, …) are derived
//! on PostgreSQL as its commit path writes them, from the record's value and the place tree; the
//! verification then finds them equal to SQLite's.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use linli_sync_core::{PlaceId, RecordId};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Decode, PgConnection, Row, Sqlite, SqliteConnection, TypeInfo, ValueRef,
};

use crate::error::{Error, Result};
use crate::store::office::OfficeColumns;
use crate::store::prelude::*;
use crate::store::{PgStore, RecordRow, SqliteStore, Store};

/// Rows per multi-row insert.
const BATCH_ROWS: usize = 1000;
/// Bytes of documents and changes per insert, whatever the rows (a batch of large documents).
const BATCH_BYTES: usize = 8 << 20;
/// Differences listed per check (the rest are counted).
const SHOWN_DIFFERENCES: usize = 5;

/// The tables copied, in an order that satisfies PostgreSQL's foreign keys, each with the
/// columns that order its rows on both sides (its primary key).
const TABLES: &[(&str, &[&str])] = &[
    ("places", &["id"]),
    ("users", &["id"]),
    ("grant_events", &["id"]),
    ("grants", &["user_id", "place_id"]),
    ("devices", &["id"]),
    ("actors", &["actor"]),
    ("signing_keys", &["seq"]),
    ("server_secrets", &["name"]),
    ("refresh_tokens", &["hash"]),
    ("web_sessions", &["hash"]),
    ("records", &["id"]),
    ("changes", &["seq"]),
    ("rejections", &["id"]),
    ("changes_archive", &["seq"]),
];

/// PostgreSQL tables that are not copied row by row.
const PG_ONLY_TABLES: &[&str] = &[
    // Set to the end of the copied log.
    "log_head",
    "_sqlx_migrations",
];

/// SQLite's own tables, which PostgreSQL does without (see the module's documentation).
fn sqlite_only_table(name: &str) -> bool {
    name == "record_text"
        || name.starts_with("record_fts")
        || name.starts_with("record_grams")
        || name.starts_with("sqlite_")
        || name == "_sqlx_migrations"
}

/// SQLite columns PostgreSQL does without.
const SQLITE_ONLY_COLUMNS: &[(&str, &str)] = &[("records", "text_n")];

/// `records` columns PostgreSQL's commit path derives from the record's value (and the place
/// tree): derived here the same way, not copied.
const OFFICE_COLUMNS: &[&str] = &[
    "source",
    "session_id",
    "departments",
    "deadline",
    "satisfaction",
    "summary",
    "building",
    "date",
    "session_type",
    "run_number",
    "consultations",
    "answered",
    "leaflets",
    "hours",
    "residents_served",
    "activity_type",
    "has_resolution",
    "search_text",
    "grams",
];

/// Copies the district in the SQLite database `from` (a file, `sqlite://` path or data
/// directory) into the empty PostgreSQL database `to`, then verifies the copy, printing
/// progress and the verdict on `out`. Fails, after printing them, when the copy differs.
pub async fn run(from: &str, to: &str, out: &mut impl Write) -> Result<()> {
    let source = Source::open(from).await?;
    let target = match PgStore::open(to).await {
        Ok(target) => target,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let result = async {
        writeln!(
            out,
            "migrate-store: {} (SQLite, read only) → {}",
            source.path.display(),
            redact(to)
        )
        .map_err(Error::internal)?;
        let copied = copy(&source, &target, out).await?;
        writeln!(
            out,
            "committed: {} rows in {:.1} s",
            copied.rows,
            copied.took.as_secs_f64()
        )
        .map_err(Error::internal)?;
        let started = Instant::now();
        let differences = verify(&source, &target, out).await?;
        if differences.is_empty() {
            writeln!(
                out,
                "verified in {:.1} s: the copy is whole; start the servers with --database-url",
                started.elapsed().as_secs_f64()
            )
            .map_err(Error::internal)?;
            Ok(())
        } else {
            writeln!(out, "the copy differs from the source:").map_err(Error::internal)?;
            for d in &differences {
                writeln!(out, "  {d}").map_err(Error::internal)?;
            }
            Err(Error::Conflict(format!(
                "the copy differs from the source in {} places (listed above); do not serve \
                 from it: drop it and move again into a new database",
                differences.len()
            )))
        }
    }
    .await;
    source.close().await;
    target.close().await;
    result
}

/// The URL without its credentials, for printing.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_string(),
    }
}

/// The SQLite database being moved, opened read-only.
pub(crate) struct Source {
    path: PathBuf,
    pool: SqlitePool,
    store: Store,
}

impl Source {
    /// Opens `from` read-only and checks it is fully migrated by this version, so its schema is
    /// the one this copy knows. Never writes (a store opened normally would migrate and
    /// backfill).
    pub(crate) async fn open(from: &str) -> Result<Source> {
        let trimmed = from
            .strip_prefix("sqlite://")
            .or_else(|| from.strip_prefix("sqlite:"))
            .unwrap_or(from);
        let mut path = PathBuf::from(trimmed);
        if path.is_dir() {
            path = path.join("linli.db");
        }
        if !path.is_file() {
            return Err(Error::BadRequest(format!(
                "no SQLite database at {}",
                path.display()
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let store = Store::Sqlite(SqliteStore::over(pool.clone()));
        let source = Source { path, pool, store };
        let unapplied = source.store.unapplied_migrations().await?;
        if !unapplied.is_empty() {
            let list: Vec<String> = unapplied
                .iter()
                .map(|m| format!("{} {} ({})", m.version, m.description, m.problem))
                .collect();
            source.close().await;
            return Err(Error::BadRequest(format!(
                "{} lacks migrations this version applies ({}): start this version's server on \
                 it once, stop it, then move it",
                source.path.display(),
                list.join(", ")
            )));
        }
        let unfinished: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM records WHERE has_conflicts IS NULL")
                .fetch_one(&source.pool)
                .await?;
        if unfinished > 0 {
            source.close().await;
            return Err(Error::BadRequest(format!(
                "{} has {unfinished} records whose back-office columns a server start has not \
                 finished deriving: start this version's server on it once, stop it, then move it",
                source.path.display()
            )));
        }
        Ok(source)
    }

    pub(crate) async fn close(&self) {
        self.store.close().await;
    }
}

/// What a PostgreSQL column holds, as far as copying and comparing go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
    Float,
    Bytes,
    Json,
    /// The character pairs of a record's search text, built here as lexemes.
    Tsvector,
}

impl Kind {
    fn of_pg(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "text" | "character varying" => Kind::Text,
            "bigint" | "integer" | "smallint" => Kind::Int,
            "boolean" => Kind::Bool,
            "double precision" | "real" => Kind::Float,
            "bytea" => Kind::Bytes,
            "jsonb" | "json" => Kind::Json,
            "tsvector" => Kind::Tsvector,
            _ => return None,
        })
    }

    /// The array type a batch of this column is bound as.
    fn pg_array(self) -> &'static str {
        match self {
            Kind::Text | Kind::Json | Kind::Tsvector => "text[]",
            Kind::Int => "bigint[]",
            Kind::Bool => "boolean[]",
            Kind::Float => "float8[]",
            Kind::Bytes => "bytea[]",
        }
    }
}

/// One column of a table's plan.
#[derive(Clone, Debug)]
struct Col {
    name: String,
    kind: Kind,
    /// PostgreSQL's type name (a JSON column is cast to it).
    pg_type: String,
}

/// How one table moves: the columns read from SQLite, those derived on the way, and those
/// both sides hold (what the verification compares).
#[derive(Clone, Debug)]
struct Plan {
    table: &'static str,
    keys: &'static [&'static str],
    /// Read from SQLite and written unchanged; the key columns first.
    copied: Vec<Col>,
    /// Written from what the copied columns say.
    derived: Vec<Col>,
    /// Held by both sides; the key columns first.
    shared: Vec<Col>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every table's plan, after checking that each column and table of either side is either
/// copied, derived or known not to be needed.
async fn plans(sqlite: &mut SqliteConnection, pg: &mut PgConnection) -> Result<Vec<Plan>> {
    let mut problems = Vec::new();
    let pg_tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut *pg)
    .await?;
    let sqlite_tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut *sqlite)
            .await?;
    let known = |t: &str| TABLES.iter().any(|(name, _)| *name == t);
    for t in &pg_tables {
        if !known(t) && !PG_ONLY_TABLES.contains(&t.as_str()) {
            problems.push(format!(
                "PostgreSQL table {t} is not filled by migrate-store"
            ));
        }
    }
    for t in &sqlite_tables {
        if !known(t) && !sqlite_only_table(t) {
            problems.push(format!("SQLite table {t} has no counterpart on PostgreSQL"));
        }
    }
    let mut plans = Vec::new();
    for (table, keys) in TABLES {
        let pg_cols: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *pg)
        .await?;
        let sqlite_cols: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut *sqlite)
                .await?;
        if pg_cols.is_empty() || sqlite_cols.is_empty() {
            problems.push(format!(
                "table {table} is missing on {}",
                if pg_cols.is_empty() {
                    "PostgreSQL"
                } else {
                    "SQLite"
                }
            ));
            continue;
        }
        let mut plan = Plan {
            table,
            keys,
            copied: Vec::new(),
            derived: Vec::new(),
            shared: Vec::new(),
        };
        for (name, data_type) in &pg_cols {
            let Some(kind) = Kind::of_pg(data_type) else {
                problems.push(format!(
                    "PostgreSQL column {table}.{name} has type {data_type}, which migrate-store \
                     does not know"
                ));
                continue;
            };
            let col = Col {
                name: name.clone(),
                kind,
                pg_type: data_type.clone(),
            };
            let in_sqlite = sqlite_cols.contains(name);
            let derived = (*table == "records" && OFFICE_COLUMNS.contains(&name.as_str()))
                || (*table == "changes" && name == "id");
            if in_sqlite && kind != Kind::Tsvector {
                plan.shared.push(col.clone());
            }
            if derived {
                plan.derived.push(col);
            } else if in_sqlite {
                plan.copied.push(col);
            } else {
                problems.push(format!(
                    "PostgreSQL column {table}.{name} has no counterpart on SQLite"
                ));
            }
        }
        for name in &sqlite_cols {
            if !pg_cols.iter().any(|(n, _)| n == name)
                && !SQLITE_ONLY_COLUMNS.contains(&(*table, name.as_str()))
            {
                problems.push(format!(
                    "SQLite column {table}.{name} has no counterpart on PostgreSQL"
                ));
            }
        }
        for key in keys.iter().rev() {
            for list in [&mut plan.copied, &mut plan.shared] {
                match list.iter().position(|c| c.name == *key) {
                    Some(i) => {
                        let c = list.remove(i);
                        list.insert(0, c);
                    }
                    None => problems.push(format!("{table} lacks its key column {key}")),
                }
            }
        }
        plans.push(plan);
    }
    if problems.is_empty() {
        Ok(plans)
    } else {
        Err(Error::Internal(format!(
            "the two schemas do not match as this version of migrate-store expects: {}",
            problems.join("; ")
        )))
    }
}

/// One value, as read from either database.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    fn size(&self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::Bytes(b) => b.len(),
            _ => 8,
        }
    }

    /// An unambiguous encoding, for digests.
    fn hash_into(&self, h: &mut Sha256) {
        match self {
            Cell::Null => h.update([0]),
            Cell::Int(n) => {
                h.update([1]);
                h.update(n.to_be_bytes());
            }
            Cell::Bool(b) => h.update([2, u8::from(*b)]),
            Cell::Float(f) => {
                h.update([3]);
                h.update(f.to_bits().to_be_bytes());
            }
            Cell::Text(s) => {
                h.update([4]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            Cell::Bytes(b) => {
                h.update([5]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Int(n) => write!(f, "{n}"),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Float(x) => write!(f, "{x}"),
            Cell::Text(s) => write!(f, "{s}"),
            Cell::Bytes(b) => f.write_str(&hex(&b[..b.len().min(8)])),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_text(cells: &[Cell]) -> String {
    cells
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A SQLite value as PostgreSQL's column `kind` takes it, refusing anything that would change
/// on the way (a 2 in a boolean column, text in a blob column).
fn sqlite_cell(row: &SqliteRow, i: usize, kind: Kind) -> std::result::Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let ty = raw.type_info().name().to_string();
    let decoded = match (kind, ty.as_str()) {
        (Kind::Text | Kind::Json | Kind::Tsvector, "TEXT") => {
            <String as Decode<Sqlite>>::decode(raw).map(Cell::Text)
        }
        (Kind::Int, "INTEGER") => <i64 as Decode<Sqlite>>::decode(raw).map(Cell::Int),
        (Kind::Bool, "INTEGER") => match <i64 as Decode<Sqlite>>::decode(raw) {
            Ok(0) => Ok(Cell::Bool(false)),
            Ok(1) => Ok(Cell::Bool(true)),
            Ok(n) => return Err(format!("holds {n} where a boolean (0 or 1) belongs")),
            Err(e) => Err(e),
        },
        (Kind::Float, "REAL" | "INTEGER") => <f64 as Decode<Sqlite>>::decode(raw).map(Cell::Float),
        (Kind::Bytes, "BLOB") => <Vec<u8> as Decode<Sqlite>>::decode(raw).map(Cell::Bytes),
        _ => {
            return Err(format!(
                "holds a {ty} value where PostgreSQL keeps {kind:?}"
            ));
        }
    };
    decoded.map_err(|e| e.to_string())
}

/// A PostgreSQL value of a column of `kind` (JSON read as its text).
fn pg_cell(row: &PgRow, i: usize, kind: Kind) -> Result<Cell> {
    let cell = match kind {
        Kind::Text | Kind::Json | Kind::Tsvector => {
            row.try_get::<Option<String>, _>(i)?.map(Cell::Text)
        }
        Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
        Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
        Kind::Float => row.try_get::<Option<f64>, _>(i)?.map(Cell::Float),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Cell::Bytes),
    };
    Ok(cell.unwrap_or(Cell::Null))
}

/// JSON text in one spelling (`serde_json`'s compact form, keys sorted), whichever database
/// spelled it: `jsonb` spaces and orders keys its own way.
fn json_spelling(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_string())
}

fn normalize_json(cell: Cell) -> Cell {
    match cell {
        Cell::Text(text) => Cell::Text(json_spelling(&text)),
        other => other,
    }
}

/// Reads the `cols` of a SQLite row; errors name the table, column and row.
fn sqlite_cells(table: &str, cols: &[Col], row: &SqliteRow, keys: usize) -> Result<Vec<Cell>> {
    let mut cells = Vec::with_capacity(cols.len());
    for (i, col) in cols.iter().enumerate() {
        let cell = sqlite_cell(row, i, col.kind).map_err(|e| {
            Error::BadRequest(format!(
                "{table}.{} of row {}: {e}",
                col.name,
                key_text(&cells[..keys.min(cells.len())])
            ))
        })?;
        cells.push(cell);
    }
    Ok(cells)
}

/// The back-office columns of one record as PostgreSQL's commit path writes them
/// (`pg_office::OfficeRow`): `OfficeColumns::derive` of its value, the
/// building-level place it lies in, its search text lower-cased and that text's pairs.
struct Derived {
    cols: OfficeColumns,
    building: Option<String>,
    search_text: String,
    grams: String,
}

impl Derived {
    fn of(
        value: &str,
        place: &str,
        buildings: &HashSet<String>,
    ) -> std::result::Result<Self, String> {
        let value: Value = serde_json::from_str(value).map_err(|e| format!("value: {e}"))?;
        let place: PlaceId = place.parse().map_err(|e| format!("place {place}: {e}"))?;
        let cols = OfficeColumns::derive(&value);
        // The nearest building-level place among itself and its ancestors.
        let mut building = None;
        let mut at = Some(place);
        while let Some(p) = at {
            if building.is_none() && buildings.contains(p.as_str()) {
                building = Some(p.as_str().to_string());
            }
            at = p.parent();
        }
        let search_text = crate::store::search_fold(&cols.text);
        let grams = crate::store::search_grams(&search_text).join(" ");
        Ok(Derived {
            building: building.or_else(|| cols.building_field.clone()),
            cols,
            search_text,
            grams,
        })
    }

    fn cell(&self, column: &str) -> Option<Cell> {
        let text = |v: &Option<String>| v.clone().map_or(Cell::Null, Cell::Text);
        let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
        let c = &self.cols;
        Some(match column {
            "source" => text(&c.source),
            "session_id" => text(&c.session_id),
            "departments" => text(&c.departments),
            "deadline" => text(&c.deadline),
            "satisfaction" => text(&c.satisfaction),
            "summary" => text(&c.summary),
            "building" => text(&self.building),
            "date" => text(&c.date),
            "session_type" => text(&c.session_type),
            "run_number" => text(&c.run_number),
            "consultations" => int(c.consultations),
            "answered" => int(c.answered),
            "leaflets" => int(c.leaflets),
            "hours" => c.hours.map_or(Cell::Null, Cell::Float),
            "residents_served" => int(c.residents_served),
            "activity_type" => text(&c.activity_type),
            "has_resolution" => Cell::Bool(c.has_resolution),
            "search_text" => Cell::Text(self.search_text.clone()),
            // Lexemes are letters and digits only, so a space separates them unambiguously.
            "grams" => Cell::Text(self.grams.clone()),
            _ => return None,
        })
    }
}

/// A batch of rows for one table, column by column.
enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Float(Vec<Option<f64>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Text | Kind::Json | Kind::Tsvector => Column::Text(Vec::new()),
            Kind::Int => Column::Int(Vec::new()),
            Kind::Bool => Column::Bool(Vec::new()),
            Kind::Float => Column::Float(Vec::new()),
            Kind::Bytes => Column::Bytes(Vec::new()),
        }
    }

    fn push(&mut self, cell: Cell) -> std::result::Result<(), Cell> {
        match (self, cell) {
            (Column::Text(v), Cell::Null) => v.push(None),
            (Column::Int(v), Cell::Null) => v.push(None),
            (Column::Bool(v), Cell::Null) => v.push(None),
            (Column::Float(v), Cell::Null) => v.push(None),
            (Column::Bytes(v), Cell::Null) => v.push(None),
            (Column::Text(v), Cell::Text(s)) => v.push(Some(s)),
            (Column::Int(v), Cell::Int(n)) => v.push(Some(n)),
            (Column::Bool(v), Cell::Bool(b)) => v.push(Some(b)),
            (Column::Float(v), Cell::Float(f)) => v.push(Some(f)),
            (Column::Bytes(v), Cell::Bytes(b)) => v.push(Some(b)),
            (_, other) => return Err(other),
        }
        Ok(())
    }
}

/// Rows waiting to be inserted into one table.
struct Batch {
    columns: Vec<Column>,
    rows: usize,
    bytes: usize,
}

impl Batch {
    fn new(cols: &[Col]) -> Batch {
        Batch {
            columns: cols.iter().map(|c| Column::new(c.kind)).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, table: &str, cols: &[Col], cells: Vec<Cell>) -> Result<()> {
        for ((column, col), cell) in self.columns.iter_mut().zip(cols).zip(cells) {
            self.bytes += cell.size();
            column.push(cell).map_err(|cell| {
                Error::Internal(format!(
                    "{table}.{}: {cell:?} does not fit a {:?} column",
                    col.name, col.kind
                ))
            })?;
        }
        self.rows += 1;
        Ok(())
    }

    fn full(&self) -> bool {
        self.rows >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    /// Inserts the batch with one statement (an `UNNEST` of one array per column) and empties it.
    async fn flush(&mut self, conn: &mut PgConnection, sql: &str) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut query = sqlx::query(AssertSqlSafe(sql.to_string()));
        for column in &mut self.columns {
            query = match column {
                Column::Text(v) => query.bind(std::mem::take(v)),
                Column::Int(v) => query.bind(std::mem::take(v)),
                Column::Bool(v) => query.bind(std::mem::take(v)),
                Column::Float(v) => query.bind(std::mem::take(v)),
                Column::Bytes(v) => query.bind(std::mem::take(v)),
            };
        }
        query.execute(&mut *conn).await?;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

impl Plan {
    /// Every PostgreSQL column written: the copied ones, then the derived ones.
    fn written(&self) -> Vec<Col> {
        self.copied.iter().chain(&self.derived).cloned().collect()
    }

    fn order_by(&self, pg: bool) -> String {
        self.keys
            .iter()
            .map(|k| {
                let text = self
                    .shared
                    .iter()
                    .any(|c| c.name == *k && c.kind == Kind::Text);
                if pg && text {
                    format!("{} COLLATE \"C\"", quote(k))
                } else {
                    quote(k)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The SQLite query the copy reads: places parents first, everything else by key.
    fn copy_select(&self) -> String {
        let t = quote(self.table);
        let cols = self
            .copied
            .iter()
            .map(|c| format!("{t}.{}", quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        if self.table == "places" {
            // A place's parent is inserted in an earlier statement than the place (PostgreSQL
            // checks the foreign key at each statement's end). A place no root reaches is left
            // out here, and the count check after the copy stops the move.
            format!(
                "WITH RECURSIVE tree(id, depth) AS (
                     SELECT id, 0 FROM places WHERE parent IS NULL
                     UNION ALL
                     SELECT p.id, tree.depth + 1 FROM places p JOIN tree ON p.parent = tree.id)
                 SELECT {cols} FROM places JOIN tree ON tree.id = places.id
                 ORDER BY tree.depth, places.id"
            )
        } else {
            format!("SELECT {cols} FROM {t} ORDER BY {}", self.order_by(false))
        }
    }

    fn insert_sql(&self) -> String {
        let written = self.written();
        let names = written
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let arrays = written
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 1, c.kind.pg_array()))
            .collect::<Vec<_>>()
            .join(", ");
        let values = written
            .iter()
            .map(|c| {
                let v = format!("v.{}", quote(&c.name));
                match c.kind {
                    Kind::Json => format!("{v}::{}", c.pg_type),
                    Kind::Tsvector => format!("array_to_tsvector(string_to_array({v}, ' '))"),
                    _ => v,
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({names}) SELECT {values} FROM UNNEST({arrays}) AS v({names})",
            quote(self.table)
        )
    }

    /// The cells of the derived columns of a row whose copied cells are `copied`.
    fn derive(&self, copied: &[Cell], buildings: &HashSet<String>) -> Result<Vec<Cell>> {
        if self.derived.is_empty() {
            return Ok(Vec::new());
        }
        let at = |name: &str| {
            self.copied
                .iter()
                .position(|c| c.name == name)
                .map(|i| &copied[i])
                .ok_or_else(|| Error::Internal(format!("{} has no column {name}", self.table)))
        };
        match self.table {
            "changes" => {
                // The row handle is the position: unique, and what the sequence continues past.
                let seq = at("seq")?.clone();
                self.derived
                    .iter()
                    .map(|c| match c.name.as_str() {
                        "id" => Ok(seq.clone()),
                        other => Err(Error::Internal(format!("changes.{other} is not derived"))),
                    })
                    .collect()
            }
            "records" => {
                let (Cell::Text(value), Cell::Text(place), Cell::Text(id)) =
                    (at("value")?, at("place")?, at("id")?)
                else {
                    return Err(Error::BadRequest(
                        "a record without an id, place or value".into(),
                    ));
                };
                let derived = Derived::of(value, place, buildings)
                    .map_err(|e| Error::BadRequest(format!("record {id}: {e}")))?;
                self.derived
                    .iter()
                    .map(|c| {
                        derived.cell(&c.name).ok_or_else(|| {
                            Error::Internal(format!("records.{} is not derived", c.name))
                        })
                    })
                    .collect()
            }
            other => Err(Error::Internal(format!("{other} has no derived columns"))),
        }
    }
}

/// What the copy did.
struct Copied {
    rows: u64,
    took: Duration,
}

/// Copies every table in one PostgreSQL transaction, reading SQLite in one read transaction
/// (one snapshot).
async fn copy(source: &Source, target: &PgStore, out: &mut impl Write) -> Result<Copied> {
    let started = Instant::now();
    let mut sqlite = source.pool.begin().await?;
    let mut pg = target.pool().begin().await?;
    let plans = plans(&mut sqlite, &mut pg).await?;

    // Refuse a database that holds anything: merging two districts' logs is not a move. The
    // lock keeps a server started on it meanwhile from writing until the copy is committed.
    let tables: Vec<String> = plans.iter().map(|p| quote(p.table)).collect();
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {}, log_head IN EXCLUSIVE MODE",
        tables.join(", ")
    )))
    .execute(&mut *pg)
    .await?;
    let mut held = Vec::new();
    for plan in &plans {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quote(plan.table)
        )))
        .fetch_one(&mut *pg)
        .await?;
        if n > 0 {
            held.push(format!("{} {n}", plan.table));
        }
    }
    let head: i64 = sqlx::query_scalar("SELECT seq FROM log_head")
        .fetch_one(&mut *pg)
        .await?;
    if head > 0 {
        held.push(format!("log position {head}"));
    }
    if !held.is_empty() {
        return Err(Error::BadRequest(format!(
            "the target database is not empty ({}): migrate-store moves a district into a new, \
             empty database only (createdb one)",
            held.join(", ")
        )));
    }

    let buildings: HashSet<String> =
        sqlx::query_scalar("SELECT id FROM places WHERE level = 'building'")
            .fetch_all(&mut *sqlite)
            .await?
            .into_iter()
            .collect();
    writeln!(out, "copying (one transaction):").map_err(Error::internal)?;
    let mut rows = 0u64;
    for plan in &plans {
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quote(plan.table)
        )))
        .fetch_one(&mut *sqlite)
        .await?;
        let written = plan.written();
        let insert = plan.insert_sql();
        let mut batch = Batch::new(&written);
        let mut done = 0i64;
        let mut shown = 0i64;
        {
            let mut stream = sqlx::query(AssertSqlSafe(plan.copy_select())).fetch(&mut *sqlite);
            while let Some(row) = stream.try_next().await? {
                let mut cells = sqlite_cells(plan.table, &plan.copied, &row, plan.keys.len())?;
                let derived = plan.derive(&cells, &buildings)?;
                cells.extend(derived);
                batch.push(plan.table, &written, cells)?;
                if batch.full() {
                    done += batch.rows as i64;
                    batch.flush(&mut pg, &insert).await?;
                    if done - shown >= 10_000 {
                        writeln!(out, "  {:<16} {done}/{total}", plan.table)
                            .map_err(Error::internal)?;
                        shown = done;
                    }
                }
            }
        }
        done += batch.rows as i64;
        batch.flush(&mut pg, &insert).await?;
        writeln!(out, "  {:<16} {done}/{total}", plan.table).map_err(Error::internal)?;
        out.flush().map_err(Error::internal)?;
        if done != total {
            return Err(Error::BadRequest(format!(
                "{}: copied {done} of {total} rows{}",
                plan.table,
                if plan.table == "places" {
                    " (some places are not below any root of the place tree)"
                } else {
                    ""
                }
            )));
        }
        rows += done as u64;
    }

    // Positions and epochs continue past the highest SQLite ever handed out: AUTOINCREMENT's
    // counter (`sqlite_sequence`), which a deleted last row does not move back, so a cursor a
    // phone got before such a delete never names a position given again.
    let handed_out: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT name, seq FROM sqlite_sequence")
            .fetch_all(&mut *sqlite)
            .await?
            .into_iter()
            .collect();
    let log_end: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .fetch_one(&mut *pg)
        .await?;
    let log_end = log_end.max(handed_out.get("changes").copied().unwrap_or(0));
    sqlx::query("UPDATE log_head SET seq = $1")
        .bind(log_end)
        .execute(&mut *pg)
        .await?;
    let mut continued = Vec::new();
    for (table, column) in serial_columns(&mut pg).await? {
        let max: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COALESCE(MAX({}), 0)::bigint FROM {}",
            quote(&column),
            quote(&table)
        )))
        .fetch_one(&mut *pg)
        .await?;
        let last = max.max(handed_out.get(&table).copied().unwrap_or(0));
        sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)")
            .bind(quote(&table))
            .bind(&column)
            .bind(last.max(1))
            .bind(last > 0)
            .execute(&mut *pg)
            .await?;
        continued.push(format!("{table}.{column} from {}", last + 1));
    }
    writeln!(
        out,
        "  log end {log_end}; next ids: {}",
        continued.join(", ")
    )
    .map_err(Error::internal)?;
    pg.commit().await?;
    sqlite.rollback().await?;
    // Planner statistics now, not when autovacuum gets round to it: a page of a pull or of the
    // queue planned with an empty table's statistics sorts every row instead of walking an index.
    sqlx::query(AssertSqlSafe(format!("ANALYZE {}", tables.join(", "))))
        .execute(target.pool())
        .await?;
    Ok(Copied {
        rows,
        took: started.elapsed(),
    })
}

/// The columns a sequence fills (`BIGSERIAL`), as (table, column).
async fn serial_columns(pg: &mut PgConnection) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'
         ORDER BY table_name, column_name",
    )
    .fetch_all(&mut *pg)
    .await?)
}

/// Differences, with the number not listed.
#[derive(Default)]
struct Differences {
    shown: Vec<String>,
    more: usize,
}

impl Differences {
    fn add(&mut self, d: String) {
        if self.shown.len() < SHOWN_DIFFERENCES {
            self.shown.push(d);
        } else {
            self.more += 1;
        }
    }

    fn into_lines(self, what: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .shown
            .into_iter()
            .map(|d| format!("{what}: {d}"))
            .collect();
        if self.more > 0 {
            lines.push(format!("{what}: and {} more", self.more));
        }
        lines
    }
}

/// Checks the copy against the source and prints each check; returns the differences found
/// (none: the copy is whole).
pub(crate) async fn verify(
    source: &Source,
    target: &PgStore,
    out: &mut impl Write,
) -> Result<Vec<String>> {
    let mut sqlite = source.pool.acquire().await?;
    let mut pg = target.pool().acquire().await?;
    let plans = plans(&mut sqlite, &mut pg).await?;
    let target_store = Store::Postgres(target.clone());
    let mut differences = Vec::new();
    writeln!(out, "verifying:").map_err(Error::internal)?;

    // Every row of every table, every column both sides hold, in key order.
    for plan in &plans {
        let (a, b, diffs) = compare_table(plan, &mut sqlite, &mut pg).await?;
        if a == b && diffs.shown.is_empty() {
            writeln!(
                out,
                "  {:<16} {} rows equal (sha256 {})",
                plan.table,
                a.0,
                &a.1[..16]
            )
            .map_err(Error::internal)?;
        } else {
            writeln!(
                out,
                "  {:<16} DIFFERS: {} rows on SQLite, {} on PostgreSQL",
                plan.table, a.0, b.0
            )
            .map_err(Error::internal)?;
            if diffs.shown.is_empty() {
                differences.push(format!("{}: the tables' digests differ", plan.table));
            }
            differences.extend(diffs.into_lines(plan.table));
        }
    }

    // The log as phones pull it.
    let log = "SELECT seq, record_id, hash, bytes FROM changes ORDER BY seq";
    let log_kinds = [Kind::Int, Kind::Text, Kind::Bytes, Kind::Bytes];
    let (n_a, sha_a) = {
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut rows = sqlx::query(log).fetch(&mut *sqlite);
        while let Some(row) = rows.try_next().await? {
            for (i, kind) in log_kinds.iter().enumerate() {
                sqlite_cell(&row, i, *kind)
                    .map_err(|e| Error::BadRequest(format!("changes: {e}")))?
                    .hash_into(&mut h);
            }
            n += 1;
        }
        (n, hex(&h.finalize()))
    };
    let (n_b, sha_b) = {
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut rows = sqlx::query(log).fetch(&mut *pg);
        while let Some(row) = rows.try_next().await? {
            for (i, kind) in log_kinds.iter().enumerate() {
                pg_cell(&row, i, *kind)?.hash_into(&mut h);
            }
            n += 1;
        }
        (n, hex(&h.finalize()))
    };
    if (n_a, &sha_a) == (n_b, &sha_b) {
        writeln!(
            out,
            "  {:<16} {n_a} changes (seq, record, hash, bytes), sha256 {} on both",
            "change log",
            &sha_a[..16]
        )
        .map_err(Error::internal)?;
    } else {
        writeln!(out, "  {:<16} DIFFERS", "change log").map_err(Error::internal)?;
        differences.push(format!(
            "change log: {n_a} changes, sha256 {sha_a} on SQLite; {n_b}, sha256 {sha_b} on \
             PostgreSQL"
        ));
    }

    // Each record's documents as the sync path reads them, and its projection row.
    let mut diffs = Differences::default();
    let mut records = 0u64;
    let mut after = String::new();
    loop {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM records WHERE id > ? ORDER BY id LIMIT 1000")
                .bind(&after)
                .fetch_all(&mut *sqlite)
                .await?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        records += ids.len() as u64;
        let checks = futures_util::stream::iter(ids)
            .map(|id| compare_record(&source.store, &target_store, id))
            .buffer_unordered(8);
        let found: Vec<Vec<String>> = checks.try_collect().await?;
        for d in found.into_iter().flatten() {
            diffs.add(d);
        }
    }
    if diffs.shown.is_empty() {
        writeln!(
            out,
            "  {:<16} {records} records: saved documents and projection rows equal",
            "documents"
        )
        .map_err(Error::internal)?;
    } else {
        writeln!(out, "  {:<16} DIFFER", "documents").map_err(Error::internal)?;
        differences.extend(diffs.into_lines("documents"));
    }

    // Where cursors stand.
    let handed_out: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT name, seq FROM sqlite_sequence")
            .fetch_all(&mut *sqlite)
            .await?
            .into_iter()
            .collect();
    let end_a = source.store.log_end().await?;
    let end_b = target_store.log_end().await?;
    let expected = end_a.max(handed_out.get("changes").copied().unwrap_or(0));
    if end_b == expected {
        writeln!(out, "  {:<16} {end_b} on both", "log end").map_err(Error::internal)?;
    } else {
        writeln!(out, "  {:<16} DIFFERS", "log end").map_err(Error::internal)?;
        differences.push(format!(
            "log end: {end_a} on SQLite (positions handed out up to {expected}), {end_b} on \
             PostgreSQL"
        ));
    }
    let epoch_a = source.store.grant_epoch().await?;
    let epoch_b = target_store.grant_epoch().await?;
    if epoch_a == epoch_b {
        writeln!(out, "  {:<16} {epoch_a} on both", "grant epoch").map_err(Error::internal)?;
    } else {
        writeln!(out, "  {:<16} DIFFERS", "grant epoch").map_err(Error::internal)?;
        differences.push(format!(
            "grant epoch: {epoch_a} on SQLite, {epoch_b} on PostgreSQL"
        ));
    }
    let mut behind = Vec::new();
    for (table, column) in serial_columns(&mut pg).await? {
        let (max, next): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT (SELECT COALESCE(MAX({c}), 0)::bigint FROM {t}),
                    (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
                     FROM {s})",
            c = quote(&column),
            t = quote(&table),
            s = serial_name(&mut pg, &table, &column).await?,
        )))
        .fetch_one(&mut *pg)
        .await?;
        let floor = max.max(handed_out.get(&table).copied().unwrap_or(0));
        if next <= floor {
            behind.push(format!(
                "sequence of {table}.{column} gives {next} next, not past {floor}"
            ));
        }
    }
    if behind.is_empty() {
        writeln!(out, "  {:<16} past every copied id", "sequences").map_err(Error::internal)?;
    } else {
        writeln!(out, "  {:<16} BEHIND", "sequences").map_err(Error::internal)?;
        differences.extend(behind);
    }
    Ok(differences)
}

/// The name of the sequence filling `table.column`, quoted for SQL.
async fn serial_name(pg: &mut PgConnection, table: &str, column: &str) -> Result<String> {
    let name: String = sqlx::query_scalar("SELECT pg_get_serial_sequence($1, $2)")
        .bind(quote(table))
        .bind(column)
        .fetch_one(&mut *pg)
        .await?;
    // Already schema-qualified and quoted where needed by PostgreSQL.
    Ok(name)
}

/// (rows, sha256) of one side of a table.
type Side = (u64, String);

/// Streams both sides of a table in key order side by side, comparing every shared column of
/// each row; returns each side's row count and digest, and the differing rows.
async fn compare_table(
    plan: &Plan,
    sqlite: &mut SqliteConnection,
    pg: &mut PgConnection,
) -> Result<(Side, Side, Differences)> {
    let cols = &plan.shared;
    let names = cols
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let pg_exprs = cols
        .iter()
        .map(|c| match c.kind {
            Kind::Json => format!("{}::text", quote(&c.name)),
            Kind::Int => format!("{}::bigint", quote(&c.name)),
            _ => quote(&c.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let t = quote(plan.table);
    let sqlite_sql = format!("SELECT {names} FROM {t} ORDER BY {}", plan.order_by(false));
    let pg_sql = format!(
        "SELECT {pg_exprs} FROM {t} ORDER BY {}",
        plan.order_by(true)
    );
    let keys = plan.keys.len();
    let normalize = |mut cells: Vec<Cell>| {
        for (cell, col) in cells.iter_mut().zip(cols) {
            if col.kind == Kind::Json {
                *cell = normalize_json(std::mem::replace(cell, Cell::Null));
            }
        }
        cells
    };
    let mut a_rows = sqlx::query(AssertSqlSafe(sqlite_sql)).fetch(&mut *sqlite);
    let mut b_rows = sqlx::query(AssertSqlSafe(pg_sql)).fetch(&mut *pg);
    let (mut ha, mut hb) = (Sha256::new(), Sha256::new());
    let (mut na, mut nb) = (0u64, 0u64);
    let mut diffs = Differences::default();
    let mut a = next_sqlite(&mut a_rows, plan, &normalize).await?;
    let mut b = next_pg(&mut b_rows, cols, &normalize).await?;
    loop {
        match (&a, &b) {
            (None, None) => break,
            (Some(ra), rb)
                if rb.as_ref().is_none_or(|rb| {
                    ra[..keys].partial_cmp(&rb[..keys]) == Some(std::cmp::Ordering::Less)
                }) =>
            {
                diffs.add(format!("row {} only on SQLite", key_text(&ra[..keys])));
                ra.iter().for_each(|c| c.hash_into(&mut ha));
                na += 1;
                a = next_sqlite(&mut a_rows, plan, &normalize).await?;
            }
            (ra, Some(rb))
                if ra.as_ref().is_none_or(|ra| {
                    ra[..keys].partial_cmp(&rb[..keys]) == Some(std::cmp::Ordering::Greater)
                }) =>
            {
                diffs.add(format!("row {} only on PostgreSQL", key_text(&rb[..keys])));
                rb.iter().for_each(|c| c.hash_into(&mut hb));
                nb += 1;
                b = next_pg(&mut b_rows, cols, &normalize).await?;
            }
            (Some(ra), Some(rb)) => {
                if ra != rb {
                    let columns: Vec<&str> = ra
                        .iter()
                        .zip(rb)
                        .zip(cols)
                        .filter(|((x, y), _)| x != y)
                        .map(|(_, c)| c.name.as_str())
                        .collect();
                    diffs.add(format!(
                        "row {} differs in {}",
                        key_text(&ra[..keys]),
                        columns.join(", ")
                    ));
                }
                ra.iter().for_each(|c| c.hash_into(&mut ha));
                rb.iter().for_each(|c| c.hash_into(&mut hb));
                na += 1;
                nb += 1;
                a = next_sqlite(&mut a_rows, plan, &normalize).await?;
                b = next_pg(&mut b_rows, cols, &normalize).await?;
            }
            _ => unreachable!("the arms above cover every pair"),
        }
    }
    Ok(((na, hex(&ha.finalize())), (nb, hex(&hb.finalize())), diffs))
}

async fn next_sqlite(
    rows: &mut (impl futures_util::Stream<Item = sqlx::Result<SqliteRow>> + Unpin),
    plan: &Plan,
    normalize: &impl Fn(Vec<Cell>) -> Vec<Cell>,
) -> Result<Option<Vec<Cell>>> {
    match rows.try_next().await? {
        Some(row) => Ok(Some(normalize(sqlite_cells(
            plan.table,
            &plan.shared,
            &row,
            plan.keys.len(),
        )?))),
        None => Ok(None),
    }
}

async fn next_pg(
    rows: &mut (impl futures_util::Stream<Item = sqlx::Result<PgRow>> + Unpin),
    cols: &[Col],
    normalize: &impl Fn(Vec<Cell>) -> Vec<Cell>,
) -> Result<Option<Vec<Cell>>> {
    match rows.try_next().await? {
        Some(row) => {
            let cells = cols
                .iter()
                .enumerate()
                .map(|(i, c)| pg_cell(&row, i, c.kind))
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(normalize(cells)))
        }
        None => Ok(None),
    }
}

/// A projection row with its JSON in one spelling, for comparing.
fn comparable(row: Option<RecordRow>) -> Option<String> {
    row.map(|mut r| {
        r.value = json_spelling(&r.value);
        r.personal = r.personal.as_deref().map(json_spelling);
        format!("{r:?}")
    })
}

/// One record's documents (as the sync path loads them) and projection row on both stores.
async fn compare_record(sqlite: &Store, pg: &Store, id: String) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let Ok(rid) = id.parse::<RecordId>() else {
        return Ok(vec![format!("record id {id} is not a record id")]);
    };
    let (a, b) = tokio::join!(sqlite.record_doc(rid), pg.record_doc(rid));
    if a? != b? {
        found.push(format!("record {id}: its saved document differs"));
    }
    let (a, b) = tokio::join!(sqlite.personal_doc(rid), pg.personal_doc(rid));
    if a? != b? {
        found.push(format!("record {id}: its personal document differs"));
    }
    let (a, b) = tokio::join!(sqlite.record_row(rid), pg.record_row(rid));
    if comparable(a?) != comparable(b?) {
        found.push(format!("record {id}: its projection row differs"));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::config::Config;
    use crate::store::OfficeFilter;

    /// An empty PostgreSQL database of its own, dropped by `finish`.
    struct FreshPg {
        name: String,
        url: String,
    }

    fn admin_url() -> String {
        std::env::var("LINLI_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    impl FreshPg {
        async fn create() -> FreshPg {
            let name = format!("linli_test_{}", uuid::Uuid::new_v4().simple());
            let admin = admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL must run for these tests (scripts/test starts it)");
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let (base, _) = admin.rsplit_once('/').expect("a postgres url has a path");
            FreshPg {
                url: format!("{base}/{name}"),
                name,
            }
        }

        async fn finish(self) {
            let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }

    /// A SQLite data directory holding the demo district with its records, and a row in each
    /// table the demo leaves empty.
    async fn demo_district() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::run::open(Config::new(dir.path()).with_demo_records())
            .await
            .unwrap();
        state.store.close().await;
        let mut conn = sqlx::SqliteConnection::connect_with(
            &SqliteConnectOptions::new().filename(dir.path().join("linli.db")),
        )
        .await
        .unwrap();
        let (user, device): (String, String) =
            sqlx::query_as("SELECT user_id, device_id FROM changes LIMIT 1")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        for sql in [
            "INSERT INTO changes_archive (seq, hash, record_id, part, bytes, actor, device_id,
                 user_id, claimed_at, received_at, archived_at)
             SELECT seq, hash, record_id, part, bytes, actor, device_id, user_id, claimed_at,
                    received_at, 99 FROM changes ORDER BY seq LIMIT 3",
            "INSERT INTO rejections (hash, record_id, user_id, device_id, code, message, at, place,
                 more)
             VALUES (x'00', 'r1', ?1, ?2, 'out_of_scope', '不在授权范围', 5, 'hz', 2),
                    (x'01', 'r2', ?1, ?2, 'too_large', 'x', 6, NULL, 0)",
            // The last rejection forgotten: its id is not given again on PostgreSQL either.
            "DELETE FROM rejections WHERE record_id = 'r2'",
            "INSERT INTO refresh_tokens (hash, family, user_id, device_id, issued_at, expires_at,
                 spent_at, revoked_at)
             VALUES (x'aa', 'f1', ?1, ?2, 1, 2, NULL, 3)",
            "INSERT INTO web_sessions (hash, user_id, device_id, actor, csrf, session_epoch,
                 created_at, last_seen, ended_at)
             VALUES (x'bb', ?1, ?2, 'abcd', 'csrf', 0, 1, 2, NULL)",
            "INSERT OR IGNORE INTO server_secrets (name, value, created_at)
             VALUES ('test', x'0102', 7)",
        ] {
            sqlx::query(sql)
                .bind(&user)
                .bind(&device)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        dir
    }

    fn file_digest(path: &std::path::Path) -> String {
        hex(&Sha256::digest(std::fs::read(path).unwrap()))
    }

    async fn counts(store: &Store, terms: &[&str], scopes: &[PlaceId]) -> Vec<i64> {
        let mut found = Vec::new();
        for term in terms {
            let filter = OfficeFilter {
                scopes: scopes.to_vec(),
                text: Some((*term).into()),
                limit: 50,
                ..OfficeFilter::default()
            };
            found.push(store.office_count(&filter).await.unwrap());
        }
        found
    }

    /// The demo district (every table filled) moves whole: each table's rows, the log, the
    /// documents, the projection, the log end and the grant epoch verify equal; the source file
    /// is not changed; the back-office finds the same records by text on the copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_demo_district_moves_whole_and_verifies() {
        let dir = demo_district().await;
        let db = dir.path().join("linli.db");
        let before = file_digest(&db);
        let pg = FreshPg::create().await;
        let mut out = Vec::new();
        let started = Instant::now();
        let result = run(&format!("sqlite://{}", db.display()), &pg.url, &mut out).await;
        let took = started.elapsed();
        let printed = String::from_utf8(out).unwrap();
        eprintln!("{printed}(moved and verified in {took:?})");
        result.unwrap();
        assert_eq!(file_digest(&db), before, "the source is only read");

        let source = Source::open(dir.path().to_str().unwrap()).await.unwrap();
        let target = Store::Postgres(PgStore::open(&pg.url).await.unwrap());
        let records = source.store.record_count().await.unwrap();
        assert!(records > 700, "{records}");
        assert!(printed.contains(&format!("records          {records}/{records}")));
        for table in [
            "changes_archive",
            "rejections",
            "refresh_tokens",
            "web_sessions",
        ] {
            assert!(
                printed.contains(&format!("{table:<16} 1/1"))
                    || printed.contains(&format!("{table:<16} 3/3")),
                "{table}: {printed}"
            );
        }
        assert_eq!(
            source.store.log_end().await.unwrap(),
            target.log_end().await.unwrap()
        );
        let next_rejection: i64 = sqlx::query_scalar("SELECT nextval('rejections_id_seq')")
            .fetch_one(match &target {
                Store::Postgres(p) => p.pool(),
                Store::Sqlite(_) => unreachable!(),
            })
            .await
            .unwrap();
        let forgotten: i64 =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'rejections'")
                .fetch_one(&source.pool)
                .await
                .unwrap();
        assert!(next_rejection > forgotten);

        let roots: Vec<String> = sqlx::query_scalar("SELECT id FROM places WHERE parent IS NULL")
            .fetch_all(&source.pool)
            .await
            .unwrap();
        let scopes: Vec<PlaceId> = roots.iter().map(|r| r.parse().unwrap()).collect();
        let terms = ["漏水", "水", "电梯", "噪音", "消防通道", "3幢"];
        let on_sqlite = counts(&source.store, &terms, &scopes).await;
        assert!(on_sqlite.iter().any(|n| *n > 0), "{on_sqlite:?}");
        assert_eq!(on_sqlite, counts(&target, &terms, &scopes).await);
        source.close().await;
        target.close().await;
        pg.finish().await;
    }

    /// A difference planted in the copy after it was made (one change's bytes) fails the
    /// verification, which names the table, the row and the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_finds_a_planted_difference() {
        let dir = demo_district().await;
        let pg = FreshPg::create().await;
        let from = dir.path().to_str().unwrap();
        run(from, &pg.url, &mut Vec::new()).await.unwrap();

        let target = PgStore::open(&pg.url).await.unwrap();
        let seq: i64 = sqlx::query_scalar(
            "UPDATE changes SET bytes = bytes || '\\x00'::bytea
             WHERE seq = (SELECT MAX(seq) FROM changes) RETURNING seq",
        )
        .fetch_one(target.pool())
        .await
        .unwrap();
        let source = Source::open(from).await.unwrap();
        let mut out = Vec::new();
        let differences = verify(&source, &target, &mut out).await.unwrap();
        let printed = String::from_utf8(out).unwrap();
        assert!(printed.contains("changes          DIFFERS"), "{printed}");
        assert!(
            differences
                .iter()
                .any(|d| d == &format!("changes: row {seq} differs in bytes")),
            "{differences:?}"
        );
        assert!(differences.iter().any(|d| d.starts_with("change log:")));
        source.close().await;
        target.close().await;
        pg.finish().await;
    }

    /// A target that holds anything is refused before anything is written to it, and the
    /// command fails with a clear message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_target_that_is_not_empty_is_refused() {
        let dir = demo_district().await;
        let pg = FreshPg::create().await;
        let from = dir.path().to_str().unwrap();
        run(from, &pg.url, &mut Vec::new()).await.unwrap();
        let target = PgStore::open(&pg.url).await.unwrap();
        let before = target.change_count().await.unwrap();

        let err = run(from, &pg.url, &mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("not empty"), "{message}");
        assert!(message.contains("users"), "{message}");
        assert!(message.contains("records"), "{message}");
        assert_eq!(target.change_count().await.unwrap(), before);
        target.close().await;
        pg.finish().await;
    }

    /// A source this version has not migrated is refused, and left as it was.
    #[tokio::test]
    async fn an_unmigrated_source_is_refused_and_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        let mut conn = sqlx::SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE places (id TEXT PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let before = file_digest(&db);
        let err = match Source::open(db.to_str().unwrap()).await {
            Err(e) => e,
            Ok(_) => panic!("an unmigrated source was opened"),
        };
        assert!(err.to_string().contains("lacks migrations"), "{err}");
        assert_eq!(file_digest(&db), before);
        let missing = dir.path().join("missing.db");
        assert!(Source::open(missing.to_str().unwrap()).await.is_err());
        assert!(!missing.exists(), "nothing is created");
    }

    /// The back-office columns this copy derives (and its search text and pairs, the twins of
    /// `pg_office`'s) are those PostgreSQL's commit path wrote for the demo records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn derived_columns_match_what_the_pg_commit_path_writes() {
        let pg = FreshPg::create().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path()).with_demo_records();
        config.database_url = Some(pg.url.clone());
        let state = crate::run::open(config).await.unwrap();
        let Store::Postgres(store) = &state.store else {
            panic!("a PostgreSQL store was opened")
        };
        let buildings: HashSet<String> =
            sqlx::query_scalar("SELECT id FROM places WHERE level = 'building'")
                .fetch_all(store.pool())
                .await
                .unwrap()
                .into_iter()
                .collect();
        let columns: Vec<&str> = OFFICE_COLUMNS
            .iter()
            .copied()
            .filter(|c| *c != "grams")
            .collect();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, place, value::text, grams::text, {} FROM records",
            columns.join(", ")
        )))
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(rows.len() > 700);
        let kinds = |c: &str| match c {
            "consultations" | "answered" | "leaflets" | "residents_served" => Kind::Int,
            "hours" => Kind::Float,
            "has_resolution" => Kind::Bool,
            _ => Kind::Text,
        };
        let mut searchable = 0;
        for row in &rows {
            let id: String = row.get(0);
            let place: String = row.get(1);
            let value: String = row.get(2);
            let grams: String = row.get(3);
            let derived = Derived::of(&value, &place, &buildings).unwrap();
            for (i, c) in columns.iter().enumerate() {
                assert_eq!(
                    pg_cell(row, 4 + i, kinds(c)).unwrap(),
                    derived.cell(c).unwrap(),
                    "{id}: {c}"
                );
            }
            let mine: String =
                sqlx::query_scalar("SELECT array_to_tsvector(string_to_array($1, ' '))::text")
                    .bind(&derived.grams)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(mine, grams, "{id}: grams");
            if !derived.grams.is_empty() {
                searchable += 1;
            }
        }
        assert!(searchable > 700, "{searchable}");
        // Not closed: its change listener holds a connection of the pool until the process
        // ends; dropping the database ends that connection.
        drop(state);
        pg.finish().await;
    }
}
