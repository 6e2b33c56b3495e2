//! Exports of record lists to CSV and `.xlsx`, for the back-office's 导出 buttons.
//!
//! # Design
//!
//! An export may cover a whole street's history (100,000 records and more), so neither format
//! ever holds the list in memory: rows arrive as a [`Stream`] (the caller feeds keyset batches
//! of about a thousand rows, e.g. [`Store::office_stream`](crate::store::Store::office_stream)) and memory stays flat whatever the row count.
//!
//! - **CSV** is written as it is read: every [`CSV_CHUNK_ROWS`] rows become one chunk of the
//!   response body, so the download starts at once and the server holds one chunk at a time.
//!   UTF-8 with a byte-order mark (so Excel opens Chinese correctly), RFC 4180 quoting with CRLF
//!   line ends (the `csv` crate).
//! - **XLSX** is a zip archive whose directory comes last, so the whole file must exist before
//!   its first byte can be sent with a length. `rust_xlsxwriter` writes it in constant-memory
//!   mode (each row goes to the sheet's own temporary file as soon as the next row starts) on a
//!   blocking thread fed through a bounded channel; the finished archive goes to an anonymous
//!   temporary file (unlinked at once, so nothing is left behind whatever happens to the request)
//!   that is then streamed as the body. Temporary files live in the system temporary directory
//!   (`TMPDIR`): keep it on disk, not on a RAM-backed tmpfs, for exports to stay out of memory.
//!
//! # Columns
//!
//! Headers are Chinese. An export of one kind has 编号, 类型, 位置, then every field of the kind
//! from the shared schema (`RecordKind::fields`) by its label, except the internal ones (kind,
//! schema version, and place and creation time, which have their own columns), then 创建时间 and
//! 更新时间 (first and last receive time at the server, local time UTC+8). A field whose label
//! repeats a fixed column's (the bus session's 类型) is prefixed with the kind's label
//! (直通车班次类型). An export of mixed kinds uses a compact common set instead of the union of
//! four schemas: 编号, 类型, 位置, 摘要 (a case's summary, or the title phones show for the other
//! kinds), 类别, 状态, 创建时间, 更新时间.
//!
//! Coded values are shown by their labels (`assigned` → 转办), lists of codes and lists joined
//! with 、, tallies and numbers as numbers (numeric cells in `.xlsx`), dates and times as date
//! cells in `.xlsx`. Residents' personal data is shown as the role may see it, through
//! [`value_for_role`] like every page and list.
//!
//! # Untrusted text
//!
//! Everything a phone sent is untrusted. In `.xlsx` text is only ever written as string cells,
//! never formulas, so `=HYPERLINK(...)` stays text. CSV has no cell types, so a text cell that
//! starts with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'` (the OWASP advice
//! against formula injection). Markup such as `<img src=x onerror=alert(1)>` is data here and is
//! written as it is.
//!
//! # Failures
//!
//! A failure before the response starts (the first batch of CSV rows, or anything at all for
//! `.xlsx`, which is complete before it is sent) is returned as an [`Error`]. A failure while a
//! CSV body is streaming can no longer change the status: it is logged and the body is cut off
//! with an error, so the connection is aborted and the browser reports the download as failed
//! rather than saving a silently truncated file.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt, stream};
use linli_sync_core::schema::{self, FieldSpec, FieldType, RecordKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rust_xlsxwriter::{ExcelDateTime, Workbook, XlsxError};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::Role;
use crate::records::value_for_role;
use crate::store::RecordRow;

/// Rows per chunk of a CSV body.
pub const CSV_CHUNK_ROWS: usize = 500;
/// Rows in flight between the row stream and the `.xlsx` writer thread.
const XLSX_CHANNEL_ROWS: usize = 1024;
/// Most data rows in one `.xlsx` sheet (Excel's 1,048,576 rows, less the header).
pub const XLSX_MAX_ROWS: u32 = 1_048_575;
/// Longest text Excel keeps in one cell.
const XLSX_MAX_CHARS: usize = 32_767;
/// Local time of the users (China Standard Time, no daylight saving).
const UTC_OFFSET_SECS: i64 = 8 * 3600;

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values, UTF-8 with BOM.
    Csv,
    /// Excel workbook.
    Xlsx,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(&self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Xlsx => "xlsx",
        }
    }

    /// The `Content-Type` of the response.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

impl FromStr for Format {
    type Err = Error;
    /// `csv` or `xlsx`, as in a query string.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "csv" => Ok(Self::Csv),
            "xlsx" => Ok(Self::Xlsx),
            other => Err(Error::BadRequest(format!(
                "unknown export format '{other}' (expected csv or xlsx)"
            ))),
        }
    }
}

/// Turns a place path into the names people read (e.g. `hz/baiyang/haitian` → 白杨街道 海天社区).
pub type PlaceNamer = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The export of `rows` as a download named `file_stem.csv` or `file_stem.xlsx`.
///
/// `kind` decides the columns: that kind's fields, or the compact common set for mixed kinds
/// (see the module documentation). `role` decides how residents' personal data shows.
/// `place_name` turns place paths into names; without it the path is shown.
///
/// Errors before the response starts are returned; a CSV body that fails later is cut off (see
/// the module documentation).
pub async fn export_response<S>(
    format: Format,
    kind: Option<RecordKind>,
    role: Role,
    rows: S,
    place_name: Option<PlaceNamer>,
    file_stem: &str,
) -> Result<Response>
where
    S: Stream<Item = Result<RecordRow>> + Send + 'static,
{
    let sheet = Arc::new(Sheet::new(kind, role, place_name));
    let (body, length) = match format {
        Format::Csv => (csv_body(sheet, rows).await?, None),
        Format::Xlsx => {
            let (file, len) = xlsx_file(sheet, rows).await?;
            let file = tokio::fs::File::from_std(file);
            let chunks = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
            (Body::from_stream(chunks), Some(len))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(file_stem, format.extension()),
    );
    // Residents' personal data: never kept by a shared cache or the browser's cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(len) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(response)
}

/// What a column shows.
#[derive(Debug, Clone, Copy)]
enum Source {
    Id,
    Kind,
    Place,
    Field(&'static FieldSpec),
    Title,
    Category,
    Status,
    Created,
    Updated,
}

#[derive(Debug, Clone)]
struct Column {
    source: Source,
    header: String,
    /// Width in Excel character units.
    width: f64,
}

/// One value ready to be written.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Empty,
    Text(String),
    Number(f64),
    /// `YYYY-MM-DD` as the record holds it.
    Date(String),
    /// Milliseconds since the epoch.
    Time(i64),
}

/// The columns of an export and how a row becomes cells.
struct Sheet {
    kind: Option<RecordKind>,
    role: Role,
    place_name: Option<PlaceNamer>,
    columns: Vec<Column>,
}

fn column(source: Source, header: impl Into<String>, width: f64) -> Column {
    let header = header.into();
    // CJK characters are about two units wide; leave room for the filter button.
    let header_width = header
        .chars()
        .map(|c| if c.is_ascii() { 1.1 } else { 2.1 })
        .sum::<f64>()
        + 3.0;
    Column {
        source,
        header,
        width: width.max(header_width),
    }
}

fn field_width(spec: &FieldSpec) -> f64 {
    match spec.ty {
        FieldType::Text => 40.0,
        FieldType::Codes(_) => 24.0,
        FieldType::List => 20.0,
        FieldType::Str | FieldType::Fixed => 14.0,
        FieldType::Phone => 14.0,
        FieldType::Code(_) => 12.0,
        FieldType::Date => 12.0,
        FieldType::Number | FieldType::Counter => 8.0,
    }
}

/// Fields with their own columns, or internal to documents.
const SKIPPED_FIELDS: [&str; 4] = ["kind", "schema", "place", "created_at"];

impl Sheet {
    fn new(kind: Option<RecordKind>, role: Role, place_name: Option<PlaceNamer>) -> Self {
        let mut columns = vec![
            column(Source::Id, "编号", 38.0),
            column(Source::Kind, "类型", 10.0),
            column(Source::Place, "位置", 30.0),
        ];
        match kind {
            Some(kind) => {
                for spec in kind.fields() {
                    if SKIPPED_FIELDS.contains(&spec.name) {
                        continue;
                    }
                    let header = if ["编号", "类型", "位置", "创建时间", "更新时间"]
                        .contains(&spec.label)
                    {
                        format!("{}{}", kind.label(), spec.label)
                    } else {
                        spec.label.to_string()
                    };
                    columns.push(column(Source::Field(spec), header, field_width(spec)));
                }
            }
            None => {
                columns.push(column(Source::Title, "摘要", 40.0));
                columns.push(column(Source::Category, "类别", 14.0));
                columns.push(column(Source::Status, "状态", 10.0));
            }
        }
        columns.push(column(Source::Created, "创建时间", 17.0));
        columns.push(column(Source::Updated, "更新时间", 17.0));
        Self {
            kind,
            role,
            place_name,
            columns,
        }
    }

    /// The sheet's name in a workbook.
    fn title(&self) -> &'static str {
        self.kind.map_or("记录", |k| k.label())
    }

    fn cells(&self, row: &RecordRow) -> Result<Vec<Cell>> {
        let value = value_for_role(row, self.role)?;
        let kind: Option<RecordKind> = row.kind.parse().ok();
        Ok(self
            .columns
            .iter()
            .map(|col| match col.source {
                Source::Id => Cell::Text(row.id.clone()),
                Source::Kind => {
                    Cell::Text(kind.map_or_else(|| row.kind.clone(), |k| k.label().into()))
                }
                Source::Place => Cell::Text(match &self.place_name {
                    Some(name) => name(&row.place),
                    None => row.place.clone(),
                }),
                Source::Field(spec) => field_cell(spec, value.get(spec.name)),
                Source::Title => kind.map_or(Cell::Empty, |k| text_cell(title(k, &value))),
                Source::Category => row.category.as_deref().map_or(Cell::Empty, |c| {
                    text_cell(schema::code_label(schema::CATEGORIES, c))
                }),
                Source::Status => row.status.as_deref().map_or(Cell::Empty, |s| {
                    text_cell(schema::code_label(schema::CASE_STATUSES, s))
                }),
                Source::Created => Cell::Time(row.created_at),
                Source::Updated => Cell::Time(row.updated_at),
            })
            .collect())
    }
}

/// The one-line title phones show for a record (mirrors `Record::title`, from the JSON value).
fn title(kind: RecordKind, value: &Value) -> String {
    let s = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or("");
    let joined = |parts: &[&str]| {
        parts
            .iter()
            .copied()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match kind {
        RecordKind::Case => s("summary").lines().next().unwrap_or("").to_string(),
        RecordKind::Bus => joined(&[s("run_number"), s("date"), s("estate")]),
        RecordKind::Contact => joined(&[s("household"), s("date")]),
        RecordKind::Volunteer => joined(&[s("activity"), s("date")]),
    }
}

fn text_cell(s: String) -> Cell {
    if s.is_empty() {
        Cell::Empty
    } else {
        Cell::Text(s)
    }
}

/// Any JSON value as display text.
fn plain_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain_text).collect::<Vec<_>>().join("、"),
        other => other.to_string(),
    }
}

fn field_cell(spec: &FieldSpec, v: Option<&Value>) -> Cell {
    let Some(v) = v else { return Cell::Empty };
    match spec.ty {
        FieldType::Code(codes) => match v {
            Value::String(code) => text_cell(schema::code_label(codes, code)),
            other => text_cell(plain_text(other)),
        },
        FieldType::Codes(codes) => match v {
            Value::Array(items) => text_cell(
                items
                    .iter()
                    .map(|i| match i {
                        Value::String(code) => schema::code_label(codes, code),
                        other => plain_text(other),
                    })
                    .collect::<Vec<_>>()
                    .join("、"),
            ),
            other => text_cell(plain_text(other)),
        },
        FieldType::Number | FieldType::Counter => match v.as_f64() {
            Some(n) => Cell::Number(n),
            None => text_cell(plain_text(v)),
        },
        FieldType::Date => match v {
            Value::String(d) if !d.is_empty() => Cell::Date(d.clone()),
            other => text_cell(plain_text(other)),
        },
        FieldType::Str
        | FieldType::Phone
        | FieldType::Text
        | FieldType::List
        | FieldType::Fixed => text_cell(plain_text(v)),
    }
}

/// Local time of `ms` as `YYYY-MM-DD HH:MM`.
fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + UTC_OFFSET_SECS * 1000)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// A CSV text cell that spreadsheet programs will not run as a formula.
fn neutralise(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// Writes CSV into a buffer that is taken chunk by chunk.
struct CsvEncoder {
    sheet: Arc<Sheet>,
    writer: csv::Writer<Vec<u8>>,
}

impl CsvEncoder {
    /// The encoder with the BOM and header row written.
    fn new(sheet: Arc<Sheet>) -> Result<Self> {
        let mut writer = csv_writer("\u{feff}".as_bytes().to_vec());
        writer
            .write_record(sheet.columns.iter().map(|c| c.header.as_str()))
            .map_err(Error::internal)?;
        Ok(Self { sheet, writer })
    }

    fn row(&mut self, row: &RecordRow) -> Result<()> {
        let cells = self.sheet.cells(row)?;
        let fields = cells.iter().map(|cell| match cell {
            Cell::Empty => String::new(),
            Cell::Text(s) | Cell::Date(s) => neutralise(s).into_owned(),
            Cell::Number(n) => n.to_string(),
            Cell::Time(ms) => local_time(*ms),
        });
        self.writer.write_record(fields).map_err(Error::internal)
    }

    /// What was written since the last call.
    fn take(&mut self) -> Result<Bytes> {
        // The csv writer lends no mutable access to its buffer: swap in a fresh one (it keeps
        // no state between records that matters here).
        let full = std::mem::replace(&mut self.writer, csv_writer(Vec::new()));
        let bytes = full.into_inner().map_err(|e| Error::internal(e.error()))?;
        Ok(Bytes::from(bytes))
    }
}

/// RFC 4180: fields quoted when needed, CRLF line ends.
fn csv_writer(buf: Vec<u8>) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(buf)
}

/// The CSV body: the first item of `rows` is read before returning, so a failing first batch
/// is an error rather than a broken download.
async fn csv_body<S>(sheet: Arc<Sheet>, rows: S) -> Result<Body>
where
    S: Stream<Item = Result<RecordRow>> + Send + 'static,
{
    let mut rows = Box::pin(rows);
    let first = match rows.next().await {
        Some(Err(e)) => return Err(e),
        first => first,
    };
    let mut encoder = CsvEncoder::new(sheet)?;
    if let Some(Ok(row)) = &first {
        encoder.row(row)?;
    }
    let done = first.is_none();
    let chunks = stream::unfold(
        (rows, encoder, done),
        |(mut rows, mut encoder, mut done)| async move {
            if done {
                return None;
            }
            for _ in 0..CSV_CHUNK_ROWS {
                let step = match rows.next().await {
                    Some(Ok(row)) => encoder.row(&row),
                    Some(Err(e)) => Err(e),
                    None => {
                        done = true;
                        break;
                    }
                };
                if let Err(e) = step {
                    tracing::error!(error = %e, "CSV export failed mid-stream: cutting the download off");
                    let cut = std::io::Error::other("export failed");
                    return Some((Err(cut), (rows, encoder, true)));
                }
            }
            let chunk = encoder.take().map_err(std::io::Error::other);
            Some((chunk, (rows, encoder, done)))
        },
    );
    Ok(Body::from_stream(chunks))
}

/// What the `.xlsx` writer thread receives: rows, then `End`. A channel closed without `End`
/// means the export was abandoned (failed or the client went away): no file is finished.
enum Feed {
    Row(Box<RecordRow>),
    End,
}

/// Writes the `.xlsx` on a blocking thread fed by `rows`; returns the finished file, rewound,
/// and its length.
async fn xlsx_file<S>(sheet: Arc<Sheet>, rows: S) -> Result<(File, u64)>
where
    S: Stream<Item = Result<RecordRow>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Feed>(XLSX_CHANNEL_ROWS);
    let writer = tokio::task::spawn_blocking(move || {
        let rows = std::iter::from_fn(move || match rx.blocking_recv() {
            Some(Feed::Row(row)) => Some(Ok(*row)),
            Some(Feed::End) => None,
            None => Some(Err(Error::internal("export abandoned"))),
        });
        let mut file = tempfile::tempfile().map_err(Error::internal)?;
        write_xlsx(&sheet, rows, &mut file)?;
        let len = file.seek(SeekFrom::End(0)).map_err(Error::internal)?;
        file.seek(SeekFrom::Start(0)).map_err(Error::internal)?;
        Ok::<_, Error>((file, len))
    });
    let mut rows = pin!(rows);
    let mut failure = None;
    while let Some(item) = rows.next().await {
        match item {
            Ok(row) => {
                // A closed channel means the writer stopped: its error is returned below.
                if tx.send(Feed::Row(Box::new(row))).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none() {
        // The writer may have stopped already; then its own error is returned below.
        let _ = tx.send(Feed::End).await;
    }
    drop(tx);
    let written = writer.await.map_err(Error::internal)?;
    match failure {
        Some(e) => Err(e),
        None => written,
    }
}

fn xlsx_error(e: XlsxError) -> Error {
    Error::internal(format!("writing xlsx: {e}"))
}

/// Writes an `.xlsx` workbook of `rows` into `out` in constant memory; returns the number of
/// data rows. Stops at the first failing row.
fn write_xlsx(
    sheet: &Sheet,
    rows: impl Iterator<Item = Result<RecordRow>>,
    out: &mut File,
) -> Result<u32> {
    let mut workbook = Workbook::new();
    let bold = rust_xlsxwriter::Format::new().set_bold();
    let date = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd");
    let time = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd hh:mm");
    let ws = workbook
        .add_worksheet_with_constant_memory()
        .map_err(xlsx_error)?;
    ws.set_name(sheet.title()).map_err(xlsx_error)?;
    let last_col = u16::try_from(sheet.columns.len() - 1).map_err(Error::internal)?;
    for (c, col) in (0u16..).zip(&sheet.columns) {
        ws.set_column_width(c, col.width).map_err(xlsx_error)?;
        ws.write_string_with_format(0, c, &col.header, &bold)
            .map_err(xlsx_error)?;
    }
    ws.set_freeze_panes(1, 0).map_err(xlsx_error)?;
    let mut n: u32 = 0;
    for row in rows {
        let row = row?;
        if n == XLSX_MAX_ROWS {
            return Err(Error::Unprocessable(format!(
                "导出超过 {XLSX_MAX_ROWS} 行（Excel 的上限），请缩小筛选范围或导出 CSV"
            )));
        }
        n += 1;
        for (c, cell) in (0u16..).zip(sheet.cells(&row)?) {
            match cell {
                Cell::Empty => {}
                Cell::Text(s) => {
                    // Always a string cell, never a formula, whatever the text starts with.
                    ws.write_string(n, c, clip(s)).map_err(xlsx_error)?;
                }
                Cell::Number(x) => {
                    ws.write_number(n, c, x).map_err(xlsx_error)?;
                }
                Cell::Date(d) => match ExcelDateTime::parse_from_str(&d) {
                    Ok(dt) => ws.write_datetime_with_format(n, c, &dt, &date),
                    Err(_) => ws.write_string(n, c, clip(d)),
                }
                .map(drop)
                .map_err(xlsx_error)?,
                Cell::Time(ms) => {
                    match ExcelDateTime::from_timestamp(ms.div_euclid(1000) + UTC_OFFSET_SECS) {
                        Ok(dt) => ws.write_datetime_with_format(n, c, &dt, &time),
                        Err(_) => ws.write_string(n, c, local_time(ms)),
                    }
                    .map(drop)
                    .map_err(xlsx_error)?
                }
            }
        }
    }
    ws.autofilter(0, 0, n, last_col).map_err(xlsx_error)?;
    let mut buffered = BufWriter::with_capacity(256 * 1024, &mut *out);
    workbook.save_to_writer(&mut buffered).map_err(xlsx_error)?;
    buffered.flush().map_err(Error::internal)?;
    Ok(n)
}

/// Text cut to what one Excel cell holds.
fn clip(s: String) -> String {
    match s.char_indices().nth(XLSX_MAX_CHARS) {
        Some((at, _)) => s[..at].to_string(),
        None => s,
    }
}

/// RFC 5987 `attr-char`s stay as they are; everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` with the UTF-8 name (RFC 5987/6266 `filename*`) and an ASCII fallback for old
/// clients (`export` plus the stem's ASCII letters, digits and dashes, e.g. a date).
fn content_disposition(stem: &str, ext: &str) -> HeaderValue {
    let stem: String = stem
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\'))
        .collect();
    let stem = if stem.trim().is_empty() {
        "export".to_string()
    } else {
        stem
    };
    let ascii: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let ascii = ascii.trim_matches(['-', '_']);
    let fallback = if ascii.is_empty() {
        "export".to_string()
    } else if stem.is_ascii() {
        ascii.to_string()
    } else {
        format!("export-{ascii}")
    };
    let encoded = utf8_percent_encode(&format!("{stem}.{ext}"), ATTR_CHAR).to_string();
    let value = format!("attachment; filename=\"{fallback}.{ext}\"; filename*=UTF-8''{encoded}");
    // Only ASCII letters, digits, `-`, `_` and percent-encoding remain: always a valid header.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use calamine::{Data, DataType, Reader, Xlsx};
    use linli_sync_core::automerge::ActorId;
    use linli_sync_core::{EditContext, PlaceId, RecordId, capture};

    use super::*;

    const T0: i64 = 1_714_521_600_000; // 2024-05-01 00:00 UTC = 08:00 in Hangzhou

    const XSS: &str = "<img src=x onerror=alert(1)>";

    /// A projection row made the way the sync path makes it: captured through sync-core, the
    /// shared value as JSON and the personal part's values.
    fn row(kind: RecordKind, fields: &[(&str, &str)], at: i64) -> RecordRow {
        let id = RecordId::new();
        let place: PlaceId = "hz/baiyang/haitian/haitiancheng".parse().unwrap();
        let ctx = EditContext {
            actor: ActorId::random(),
            user: "bus1".into(),
            now_ms: at,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (doc, personal, _) = capture::create(id, kind, &place, &ctx, &fields).unwrap();
        let record = doc.record().unwrap();
        let personal: serde_json::Map<String, Value> = personal
            .values()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        RecordRow {
            id: id.to_string(),
            kind: kind.as_str().into(),
            place: place.to_string(),
            status: record.status().map(String::from),
            category: record.category().map(String::from),
            created_at: at,
            updated_at: at + 90 * 60_000,
            last_seq: 1,
            value: record.to_json().to_string(),
            personal: (!personal.is_empty()).then(|| Value::Object(personal).to_string()),
            ..RecordRow::default()
        }
    }

    fn case(summary: &str) -> RecordRow {
        row(
            RecordKind::Case,
            &[
                ("category", "fire_safety"),
                ("summary", summary),
                ("source", "bus_session"),
                ("status", "assigned"),
                ("departments", "fire_brigade,police"),
                ("deadline", "2024-05-15"),
                ("resident_name", "王小明"),
                ("resident_phone", "13812345678"),
                ("building", "3幢"),
            ],
            T0,
        )
    }

    fn rows_stream(rows: Vec<RecordRow>) -> impl Stream<Item = Result<RecordRow>> + Send + 'static {
        stream::iter(rows.into_iter().map(Ok))
    }

    fn namer() -> Option<PlaceNamer> {
        Some(Arc::new(|p: &str| {
            if p == "hz/baiyang/haitian/haitiancheng" {
                "白杨街道 海天社区 海天城小区".to_string()
            } else {
                p.to_string()
            }
        }))
    }

    async fn export(
        format: Format,
        kind: Option<RecordKind>,
        role: Role,
        rows: impl Stream<Item = Result<RecordRow>> + Send + 'static,
    ) -> (Response, Vec<u8>) {
        let response = export_response(format, kind, role, rows, namer(), "诉求清单-2024-05-01")
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (Response::from_parts(parts, Body::empty()), bytes.to_vec())
    }

    fn read_csv(bytes: &[u8]) -> Vec<Vec<String>> {
        let text = std::str::from_utf8(bytes).unwrap();
        let text = text.strip_prefix('\u{feff}').expect("a BOM first");
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect()
    }

    fn read_xlsx(bytes: Vec<u8>) -> (Vec<String>, Vec<Vec<Data>>) {
        let mut book = Xlsx::new(Cursor::new(bytes)).unwrap();
        let names = book.sheet_names();
        let range = book.worksheet_range(&names[0]).unwrap();
        let rows: Vec<Vec<Data>> = range.rows().map(|r| r.to_vec()).collect();
        (names, rows)
    }

    fn col(header: &[String], name: &str) -> usize {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    }

    #[tokio::test]
    async fn csv_has_chinese_headers_labels_and_is_safe_to_open() {
        let rows = vec![
            case(XSS),
            case("=HYPERLINK(\"http://evil\",\"点我\")"),
            case("-1+1"),
        ];
        let (resp, bytes) = export(
            Format::Csv,
            Some(RecordKind::Case),
            Role::Office,
            rows_stream(rows),
        )
        .await;
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/csv; charset=utf-8"
        );
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert!(bytes.windows(2).any(|w| w == b"\r\n"), "RFC 4180 line ends");
        let table = read_csv(&bytes);
        let header = &table[0];
        assert_eq!(&header[..3], ["编号", "类型", "位置"]);
        assert_eq!(&header[header.len() - 2..], ["创建时间", "更新时间"]);
        for internal in ["版本", "kind", "schema"] {
            assert!(
                !header.iter().any(|h| h == internal),
                "{internal} is internal"
            );
        }
        assert_eq!(table.len(), 4);
        let r = &table[1];
        assert_eq!(r[col(header, "类型")], "诉求");
        assert_eq!(r[col(header, "位置")], "白杨街道 海天社区 海天城小区");
        assert_eq!(r[col(header, "状态")], "转办");
        assert_eq!(r[col(header, "类别")], "消防安全");
        assert_eq!(r[col(header, "来源")], "直通车");
        assert_eq!(r[col(header, "责任部门")], "消防大队、公安分局");
        assert_eq!(r[col(header, "办结时限")], "2024-05-15");
        assert_eq!(r[col(header, "居民电话")], "13812345678");
        assert_eq!(r[col(header, "居民姓名")], "王小明");
        assert_eq!(r[col(header, "创建时间")], "2024-05-01 08:00");
        assert_eq!(r[col(header, "更新时间")], "2024-05-01 09:30");
        // Markup is data: written as it came.
        assert_eq!(r[col(header, "摘要")], XSS);
        // Formulas are neutralised.
        assert_eq!(
            table[2][col(header, "摘要")],
            "'=HYPERLINK(\"http://evil\",\"点我\")"
        );
        assert_eq!(table[3][col(header, "摘要")], "'-1+1");
    }

    #[tokio::test]
    async fn personal_data_shows_as_the_role_may_see_it() {
        for (role, phone, name) in [
            (Role::Office, "13812345678", "王小明"),
            (Role::Admin, "13812345678", "王小明"),
            (Role::Steward, "138****5678", "王**"),
            (Role::Bus, "138****5678", "王**"),
        ] {
            let (_, bytes) = export(
                Format::Csv,
                Some(RecordKind::Case),
                role,
                rows_stream(vec![case("漏水")]),
            )
            .await;
            let table = read_csv(&bytes);
            assert_eq!(table[1][col(&table[0], "居民电话")], phone, "{role:?}");
            assert_eq!(table[1][col(&table[0], "居民姓名")], name, "{role:?}");

            let (_, bytes) = export(
                Format::Xlsx,
                Some(RecordKind::Case),
                role,
                rows_stream(vec![case("漏水")]),
            )
            .await;
            let (_, rows) = read_xlsx(bytes);
            let header: Vec<String> = rows[0].iter().map(|d| d.to_string()).collect();
            assert_eq!(
                rows[1][col(&header, "居民电话")],
                Data::String(phone.into()),
                "{role:?}"
            );
        }
    }

    #[tokio::test]
    async fn xlsx_has_typed_cells_labels_and_text_never_formulas() {
        let bus = row(
            RecordKind::Bus,
            &[
                ("session_type", "joint_reception"),
                ("run_number", "1801"),
                ("date", "2024-05-01"),
                ("departments", "court,fire_brigade"),
                ("summary", "=1+1"),
            ],
            T0,
        );
        let mut tallied: Value = serde_json::from_str(&bus.value).unwrap();
        tallied["consultations"] = 82.into();
        tallied["answered_on_site"] = 79.into();
        let bus = RecordRow {
            value: tallied.to_string(),
            ..bus
        };
        let (resp, bytes) = export(
            Format::Xlsx,
            Some(RecordKind::Bus),
            Role::Office,
            rows_stream(vec![bus]),
        )
        .await;
        assert_eq!(
            resp.headers()[header::CONTENT_LENGTH],
            bytes.len().to_string().as_str()
        );
        let disposition = resp.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap();
        assert_eq!(
            disposition,
            "attachment; filename=\"export-2024-05-01.xlsx\"; filename*=UTF-8''\
             %E8%AF%89%E6%B1%82%E6%B8%85%E5%8D%95-2024-05-01.xlsx"
        );
        let mut book = Xlsx::new(Cursor::new(bytes)).unwrap();
        assert_eq!(book.sheet_names(), ["直通车班次"]);
        let range = book.worksheet_range("直通车班次").unwrap();
        let formulas = book.worksheet_formula("直通车班次").unwrap();
        assert!(
            formulas.used_cells().next().is_none(),
            "no formula anywhere"
        );
        let rows: Vec<Vec<Data>> = range.rows().map(|r| r.to_vec()).collect();
        let header: Vec<String> = rows[0].iter().map(|d| d.to_string()).collect();
        assert!(header.contains(&"直通车班次类型".to_string()), "{header:?}");
        let r = &rows[1];
        assert_eq!(r[col(&header, "类型")], Data::String("直通车班次".into()));
        assert_eq!(
            r[col(&header, "直通车班次类型")],
            Data::String("三方联合接访".into())
        );
        assert_eq!(r[col(&header, "班次号")], Data::String("1801".into()));
        assert_eq!(
            r[col(&header, "随车部门")],
            Data::String("法院、消防大队".into())
        );
        assert_eq!(r[col(&header, "咨询及问题数")], Data::Float(82.0));
        assert_eq!(r[col(&header, "现场解答数")], Data::Float(79.0));
        assert_eq!(r[col(&header, "情况记录")], Data::String("=1+1".into()));
        let date = r[col(&header, "日期")].as_date().unwrap();
        assert_eq!(date.to_string(), "2024-05-01");
        let created = r[col(&header, "创建时间")].as_datetime().unwrap();
        assert_eq!(
            created.format("%Y-%m-%d %H:%M").to_string(),
            "2024-05-01 08:00"
        );
    }

    #[tokio::test]
    async fn mixed_kinds_share_a_compact_set_of_columns() {
        let volunteer = row(
            RecordKind::Volunteer,
            &[
                ("activity", "义诊"),
                ("date", "2024-05-02"),
                ("hours", "2.5"),
            ],
            T0,
        );
        let rows = vec![case(XSS), volunteer];
        let (_, bytes) = export(Format::Xlsx, None, Role::Steward, rows_stream(rows)).await;
        let (names, rows) = read_xlsx(bytes);
        assert_eq!(names, ["记录"]);
        let header: Vec<String> = rows[0].iter().map(|d| d.to_string()).collect();
        assert_eq!(
            header,
            [
                "编号",
                "类型",
                "位置",
                "摘要",
                "类别",
                "状态",
                "创建时间",
                "更新时间"
            ]
        );
        assert_eq!(rows[1][3], Data::String(XSS.into()));
        assert_eq!(rows[1][5], Data::String("转办".into()));
        assert_eq!(rows[2][1], Data::String("志愿服务".into()));
        assert_eq!(rows[2][3], Data::String("义诊 2024-05-02".into()));
        assert_eq!(rows[2][5], Data::Empty);
    }

    #[tokio::test]
    async fn a_failing_first_batch_is_an_error_and_a_later_one_cuts_the_download() {
        for format in [Format::Csv, Format::Xlsx] {
            let rows = stream::iter(vec![Err(Error::internal("database gone"))]);
            let err = export_response(format, None, Role::Office, rows, None, "x")
                .await
                .unwrap_err();
            assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        // XLSX is complete before it is sent: a later failure is still an error.
        let rows = stream::iter(vec![Ok(case("a")), Err(Error::internal("database gone"))]);
        assert!(
            export_response(Format::Xlsx, None, Role::Office, rows, None, "x")
                .await
                .is_err()
        );
        // CSV has started: the body fails instead of ending as if complete.
        let mut items: Vec<Result<RecordRow>> =
            (0..CSV_CHUNK_ROWS + 10).map(|_| Ok(case("a"))).collect();
        items.push(Err(Error::internal("database gone")));
        let resp = export_response(
            Format::Csv,
            None,
            Role::Office,
            stream::iter(items),
            None,
            "x",
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .is_err()
        );
    }

    #[test]
    fn file_names_fall_back_to_ascii() {
        let h = content_disposition("report", "csv");
        assert_eq!(
            h,
            "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
        );
        let h = content_disposition("统计/\"导出\"\r\n", "csv");
        assert_eq!(
            h,
            "attachment; filename=\"export.csv\"; filename*=UTF-8''\
             %E7%BB%9F%E8%AE%A1%22%E5%AF%BC%E5%87%BA%22.csv"
        );
    }

    /// Generated rows for the large exports: a case each, varied a little.
    fn generated(n: usize) -> impl Stream<Item = Result<RecordRow>> + Send + 'static {
        let template = case("楼道堆放杂物，存在消防隐患");
        stream::iter((0..n).map(move |i| {
            let mut r = template.clone();
            r.id = format!("{i:08}");
            r.updated_at = T0 + i as i64;
            Ok(r)
        }))
    }

    #[tokio::test]
    async fn large_exports_keep_every_row() {
        const N: usize = 20_000;
        let (_, bytes) = export(
            Format::Csv,
            Some(RecordKind::Case),
            Role::Office,
            generated(N),
        )
        .await;
        let table = read_csv(&bytes);
        assert_eq!(table.len(), N + 1);
        assert_eq!(table[N][0], format!("{:08}", N - 1));

        let (_, bytes) = export(
            Format::Xlsx,
            Some(RecordKind::Case),
            Role::Office,
            generated(N),
        )
        .await;
        let (_, rows) = read_xlsx(bytes);
        assert_eq!(rows.len(), N + 1);
        assert_eq!(rows[N][0], Data::String(format!("{:08}", N - 1)));
    }
}
