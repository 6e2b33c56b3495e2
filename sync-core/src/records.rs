//! The four record types and their mapping onto Automerge documents (autosurgeon).
//!
//! Optional scalars are empty strings when unset, so every field exists in every document and
//! `field=` clears it. Long text is Automerge `Text` ([`LongText`]), tallies are `Counter`s
//! ([`Tally`]), notes are a list of maps keyed by id.

use autosurgeon::{Hydrate, Reconcile};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::RecordError;
use crate::ids::PlaceId;
use crate::limits;
use crate::schema::{self, FieldSpec, FieldType, RecordKind};

/// The schema version written into new documents.
pub const SCHEMA_VERSION: u64 = 1;

/// Collaborative text: concurrent edits merge character by character.
#[derive(Debug, Clone, Default, Reconcile, Hydrate)]
pub struct LongText(pub autosurgeon::Text);

impl LongText {
    /// The current text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Serialize for LongText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A tally: concurrent increments from several phones add up.
#[derive(Debug, Clone, Default, Reconcile, Hydrate)]
pub struct Tally(pub autosurgeon::Counter);

impl Tally {
    /// The current total.
    pub fn value(&self) -> i64 {
        self.0.value()
    }
}

impl Serialize for Tally {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0.value())
    }
}

/// A dated note on a record; the list is keyed by `id` so concurrent notes both survive.
#[derive(Debug, Clone, Reconcile, Hydrate, Serialize, PartialEq)]
pub struct Note {
    /// Unique id of the note.
    #[key]
    pub id: String,
    /// Who wrote it (user name).
    pub author: String,
    /// Claimed time, ms since epoch.
    pub at: i64,
    /// The note.
    pub text: String,
}

/// 诉求: a case raised by a resident.
#[derive(Debug, Clone, Reconcile, Hydrate, Serialize)]
#[allow(missing_docs)]
pub struct Case {
    pub kind: String,
    pub schema: u64,
    pub place: String,
    pub category: String,
    pub summary: LongText,
    pub details: LongText,
    pub building: String,
    pub unit: String,
    pub room: String,
    pub resident_name: String,
    pub resident_phone: String,
    pub source: String,
    pub session_id: String,
    pub status: String,
    pub departments: Vec<String>,
    pub deadline: String,
    pub resolution: LongText,
    pub satisfaction: String,
    pub photos: Vec<String>,
    pub notes: Vec<Note>,
    pub created_at: i64,
    pub created_by: String,
}

/// 直通车班次 / 三方联合接访: a service-bus session or joint reception.
#[derive(Debug, Clone, Reconcile, Hydrate, Serialize)]
#[allow(missing_docs)]
pub struct BusSession {
    pub kind: String,
    pub schema: u64,
    pub place: String,
    pub session_type: String,
    pub run_number: String,
    pub date: String,
    pub estate: String,
    pub leader: String,
    pub departments: Vec<String>,
    pub consultations: Tally,
    pub answered_on_site: Tally,
    pub leaflets: Tally,
    pub summary: LongText,
    pub notes: Vec<Note>,
    pub created_at: i64,
    pub created_by: String,
}

/// 走访记录: a steward's contact with a household.
#[derive(Debug, Clone, Reconcile, Hydrate, Serialize)]
#[allow(missing_docs)]
pub struct StewardContact {
    pub kind: String,
    pub schema: u64,
    pub place: String,
    pub steward: String,
    pub household: String,
    pub date: String,
    pub channel: String,
    pub topics: Vec<String>,
    pub needs: LongText,
    pub case_id: String,
    pub follow_up_due: String,
    pub notes: Vec<Note>,
    pub created_at: i64,
    pub created_by: String,
}

/// 志愿服务: a volunteer activity.
#[derive(Debug, Clone, Reconcile, Hydrate, Serialize)]
#[allow(missing_docs)]
pub struct VolunteerLog {
    pub kind: String,
    pub schema: u64,
    pub place: String,
    pub activity: String,
    pub activity_type: String,
    pub date: String,
    pub venue: String,
    pub volunteers: Vec<String>,
    pub hours: f64,
    pub residents_served: Tally,
    pub summary: LongText,
    pub notes: Vec<Note>,
    pub created_at: i64,
    pub created_by: String,
}

/// A case's title: the first line of its summary.
pub(crate) fn case_title(summary: &str) -> String {
    summary.lines().next().unwrap_or("").to_string()
}

/// A service-bus session's title: run number, date and estate.
pub(crate) fn bus_title(run_number: &str, date: &str, estate: &str) -> String {
    format!("{run_number} {date} {estate}").trim().to_string()
}

/// A contact's or volunteer activity's title: what, then the date.
pub(crate) fn dated_title(what: &str, date: &str) -> String {
    format!("{what} {date}")
}

/// Any record, as hydrated from its document.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(missing_docs, clippy::large_enum_variant)]
pub enum Record {
    Case(Case),
    Bus(BusSession),
    Contact(StewardContact),
    Volunteer(VolunteerLog),
}

macro_rules! common {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            Record::Case($r) => $e,
            Record::Bus($r) => $e,
            Record::Contact($r) => $e,
            Record::Volunteer($r) => $e,
        }
    };
}

impl Record {
    /// A new record with defaults, before the creator's fields are applied.
    pub fn new(kind: RecordKind, place: &PlaceId, created_by: &str, now_ms: i64) -> Record {
        let today = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is valid"))
            .format("%Y-%m-%d")
            .to_string();
        let kind_s = kind.as_str().to_string();
        let place = place.as_str().to_string();
        let created_by = created_by.to_string();
        match kind {
            RecordKind::Case => Record::Case(Case {
                kind: kind_s,
                schema: SCHEMA_VERSION,
                place,
                category: "other".into(),
                summary: LongText::default(),
                details: LongText::default(),
                building: String::new(),
                unit: String::new(),
                room: String::new(),
                resident_name: String::new(),
                resident_phone: String::new(),
                source: "other".into(),
                session_id: String::new(),
                status: "received".into(),
                departments: vec![],
                deadline: String::new(),
                resolution: LongText::default(),
                satisfaction: String::new(),
                photos: vec![],
                notes: vec![],
                created_at: now_ms,
                created_by,
            }),
            RecordKind::Bus => Record::Bus(BusSession {
                kind: kind_s,
                schema: SCHEMA_VERSION,
                place,
                session_type: "service_bus".into(),
                run_number: String::new(),
                date: today,
                estate: String::new(),
                leader: String::new(),
                departments: vec![],
                consultations: Tally::default(),
                answered_on_site: Tally::default(),
                leaflets: Tally::default(),
                summary: LongText::default(),
                notes: vec![],
                created_at: now_ms,
                created_by,
            }),
            RecordKind::Contact => Record::Contact(StewardContact {
                kind: kind_s,
                schema: SCHEMA_VERSION,
                place,
                steward: created_by.clone(),
                household: String::new(),
                date: today,
                channel: "visit".into(),
                topics: vec![],
                needs: LongText::default(),
                case_id: String::new(),
                follow_up_due: String::new(),
                notes: vec![],
                created_at: now_ms,
                created_by,
            }),
            RecordKind::Volunteer => Record::Volunteer(VolunteerLog {
                kind: kind_s,
                schema: SCHEMA_VERSION,
                place,
                activity: String::new(),
                activity_type: "other".into(),
                date: today,
                venue: String::new(),
                volunteers: vec![],
                hours: 0.0,
                residents_served: Tally::default(),
                summary: LongText::default(),
                notes: vec![],
                created_at: now_ms,
                created_by,
            }),
        }
    }

    /// Hydrates a document of the given kind.
    pub fn hydrate<D: autosurgeon::ReadDoc>(
        doc: &D,
        kind: RecordKind,
    ) -> Result<Record, RecordError> {
        let bad = |e: autosurgeon::HydrateError| RecordError::NotARecord(e.to_string());
        Ok(match kind {
            RecordKind::Case => Record::Case(autosurgeon::hydrate(doc).map_err(bad)?),
            RecordKind::Bus => Record::Bus(autosurgeon::hydrate(doc).map_err(bad)?),
            RecordKind::Contact => Record::Contact(autosurgeon::hydrate(doc).map_err(bad)?),
            RecordKind::Volunteer => Record::Volunteer(autosurgeon::hydrate(doc).map_err(bad)?),
        })
    }

    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Case(_) => RecordKind::Case,
            Record::Bus(_) => RecordKind::Bus,
            Record::Contact(_) => RecordKind::Contact,
            Record::Volunteer(_) => RecordKind::Volunteer,
        }
    }

    /// The place it belongs to, as stored.
    pub fn place(&self) -> &str {
        common!(self, r => &r.place)
    }

    /// Claimed creation time (ms since epoch).
    pub fn created_at(&self) -> i64 {
        common!(self, r => r.created_at)
    }

    /// Who created it.
    pub fn created_by(&self) -> &str {
        common!(self, r => &r.created_by)
    }

    /// The notes.
    pub fn notes(&self) -> &[Note] {
        common!(self, r => &r.notes)
    }

    /// A case's status; `None` for other kinds.
    pub fn status(&self) -> Option<&str> {
        match self {
            Record::Case(c) => Some(&c.status),
            _ => None,
        }
    }

    /// A case's category; `None` for other kinds.
    pub fn category(&self) -> Option<&str> {
        match self {
            Record::Case(c) => Some(&c.category),
            _ => None,
        }
    }

    /// The date the record is about (sessions, contacts, volunteer logs).
    pub fn date(&self) -> Option<&str> {
        match self {
            Record::Case(_) => None,
            Record::Bus(b) => Some(&b.date),
            Record::Contact(c) => Some(&c.date),
            Record::Volunteer(v) => Some(&v.date),
        }
    }

    /// A one-line title for lists.
    pub fn title(&self) -> String {
        match self {
            Record::Case(c) => case_title(c.summary.as_str()),
            Record::Bus(b) => bus_title(&b.run_number, &b.date, &b.estate),
            Record::Contact(c) => dated_title(&c.household, &c.date),
            Record::Volunteer(v) => dated_title(&v.activity, &v.date),
        }
    }

    /// The record with its personal fields in their masked form, and the full values it held
    /// (the non-empty ones): how a record written before records had a personal part is split.
    pub fn split_personal(&self) -> (Record, Vec<(String, String)>) {
        let mut out = self.clone();
        let mut values = Vec::new();
        if let Record::Case(c) = &mut out {
            let kind = RecordKind::Case;
            for (name, value) in [
                ("resident_name", &mut c.resident_name),
                ("resident_phone", &mut c.resident_phone),
            ] {
                let Ok(spec) = kind.field(name) else { continue };
                if !value.is_empty() && !schema::is_masked(spec, value) {
                    values.push((name.to_string(), value.clone()));
                    *value = schema::mask_personal(spec, value);
                }
            }
        }
        (out, values)
    }

    /// The typed value as JSON (tallies as numbers, text as strings).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks every field against its rule and the kind's own rules (the merged value; the
    /// server also checks every concurrent value, see [`crate::shape`]).
    pub fn validate(&self) -> Result<(), RecordError> {
        let json = self.to_json();
        let kind = self.kind();
        for spec in kind.fields() {
            let v = json.get(spec.name).unwrap_or(&Value::Null);
            let empty = match v {
                Value::String(s) => s.trim().is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            };
            if spec.required && empty {
                return Err(RecordError::invalid(spec.name, "is required"));
            }
            check_value(kind, spec, v)?;
        }
        if self.place().parse::<PlaceId>().is_err() {
            return Err(RecordError::invalid("place", "is not a place id"));
        }
        check_notes(self.notes())?;
        if let Record::Case(c) = self
            && c.status == "evaluated"
            && c.satisfaction.is_empty()
        {
            return Err(RecordError::invalid(
                "satisfaction",
                "is required once the resident has evaluated the case",
            ));
        }
        Ok(())
    }
}

/// Checks one value of a field against its rule and bounds. Personal fields may hold only their
/// masked form in a record document: the full value lives in the record's personal part.
pub fn check_value(kind: RecordKind, spec: &FieldSpec, v: &Value) -> Result<(), RecordError> {
    let text = v.as_str().unwrap_or("");
    let chars = || text.chars().count();
    if spec.personal {
        if !v.is_string() && !v.is_null() {
            return Err(RecordError::invalid(spec.name, "must be text"));
        }
        if !schema::is_masked(spec, text) {
            return Err(RecordError::invalid(
                spec.name,
                "only the masked form is kept in the record (the full value goes in its personal part)",
            ));
        }
        return Ok(());
    }
    let too_long = |max: usize| {
        Err(RecordError::invalid(
            spec.name,
            format!("is too long (at most {max} characters)"),
        ))
    };
    match spec.ty {
        FieldType::Code(codes) if !text.is_empty() => schema::check_code(spec.name, codes, text)?,
        FieldType::Codes(codes) => {
            let items = v.as_array().map_or(&[][..], Vec::as_slice);
            if items.len() > limits::MAX_LIST_ITEMS {
                return Err(RecordError::invalid(spec.name, "has too many items"));
            }
            for item in items {
                schema::check_code(spec.name, codes, item.as_str().unwrap_or(""))?;
            }
        }
        FieldType::Date if !text.is_empty() => schema::check_date(spec.name, text)?,
        FieldType::Phone if !text.is_empty() => schema::check_phone(spec.name, text)?,
        FieldType::Number => {
            let n = v.as_f64().unwrap_or(-1.0);
            if !(0.0..=limits::MAX_HOURS).contains(&n) {
                return Err(RecordError::invalid(
                    spec.name,
                    format!("must be a number from 0 to {}", limits::MAX_HOURS),
                ));
            }
        }
        FieldType::Str if chars() > limits::MAX_STR_CHARS => {
            return too_long(limits::MAX_STR_CHARS);
        }
        FieldType::List => {
            let items = v.as_array().map_or(&[][..], Vec::as_slice);
            if items.len() > limits::MAX_LIST_ITEMS {
                return Err(RecordError::invalid(spec.name, "has too many items"));
            }
            if items.iter().any(|i| {
                i.as_str()
                    .is_none_or(|s| s.chars().count() > limits::MAX_LIST_ITEM_CHARS)
            }) {
                return Err(RecordError::invalid(
                    spec.name,
                    format!(
                        "items must be text of at most {} characters",
                        limits::MAX_LIST_ITEM_CHARS
                    ),
                ));
            }
        }
        FieldType::Text => {
            let max = if kind == RecordKind::Case && spec.name == "summary" {
                limits::MAX_SUMMARY_CHARS
            } else {
                limits::MAX_TEXT_CHARS
            };
            if chars() > max {
                return too_long(max);
            }
        }
        FieldType::Counter => {
            let n = v.as_i64().unwrap_or(i64::MAX);
            if !(-limits::MAX_TALLY..=limits::MAX_TALLY).contains(&n) {
                return Err(RecordError::invalid(
                    spec.name,
                    format!("a tally must stay within ±{}", limits::MAX_TALLY),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks the notes list: how many, and each note's text and author.
pub fn check_notes(notes: &[Note]) -> Result<(), RecordError> {
    if notes.len() > limits::MAX_NOTES {
        return Err(RecordError::invalid(
            "notes",
            format!("a record holds at most {} notes", limits::MAX_NOTES),
        ));
    }
    for n in notes {
        check_note(n)?;
    }
    Ok(())
}

/// Checks one note.
pub fn check_note(n: &Note) -> Result<(), RecordError> {
    let len = n.text.trim().chars().count();
    if len == 0 || n.text.chars().count() > limits::MAX_NOTE_CHARS {
        return Err(RecordError::invalid(
            "notes",
            format!(
                "a note must have 1 to {} characters",
                limits::MAX_NOTE_CHARS
            ),
        ));
    }
    if n.author.is_empty() || n.author.chars().count() > 64 || n.id.is_empty() || n.id.len() > 64 {
        return Err(RecordError::invalid(
            "notes",
            "a note needs an id and an author",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_personal_field_is_split() {
        // `split_personal` names the case's personal fields; the schema must not have others.
        for kind in RecordKind::ALL {
            let personal: Vec<&str> = kind
                .fields()
                .iter()
                .filter(|f| f.personal)
                .map(|f| f.name)
                .collect();
            let want: &[&str] = match kind {
                RecordKind::Case => &["resident_name", "resident_phone"],
                _ => &[],
            };
            assert_eq!(personal, want, "{kind}");
        }
        let place: PlaceId = "hz".parse().unwrap();
        let mut r = Record::new(RecordKind::Case, &place, "bus1", 0);
        if let Record::Case(c) = &mut r {
            c.resident_name = "王小明".into();
            c.resident_phone = "13812345678".into();
        }
        let (masked, values) = r.split_personal();
        let json = masked.to_json();
        assert_eq!(json["resident_phone"], "138****5678");
        assert_eq!(json["resident_name"], "王**");
        assert_eq!(values.len(), 2);
        // Already masked: nothing to split.
        assert!(masked.split_personal().1.is_empty());
    }
}
