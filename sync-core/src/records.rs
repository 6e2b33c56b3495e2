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
use crate::schema::{self, FieldType, RecordKind};

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
            Record::Case(c) => c.summary.as_str().lines().next().unwrap_or("").to_string(),
            Record::Bus(b) => format!("{} {} {}", b.run_number, b.date, b.estate)
                .trim()
                .to_string(),
            Record::Contact(c) => format!("{} {}", c.household, c.date),
            Record::Volunteer(v) => format!("{} {}", v.activity, v.date),
        }
    }

    /// The typed value as JSON (tallies as numbers, text as strings).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks every field against its rule and the kind's own rules.
    pub fn validate(&self) -> Result<(), RecordError> {
        let json = self.to_json();
        for spec in self.kind().fields() {
            let v = json.get(spec.name).unwrap_or(&Value::Null);
            let text = v.as_str().unwrap_or("");
            let empty = match v {
                Value::String(s) => s.trim().is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            };
            if spec.required && empty {
                return Err(RecordError::invalid(spec.name, "is required"));
            }
            match spec.ty {
                FieldType::Code(codes) if !text.is_empty() => {
                    schema::check_code(spec.name, codes, text)?
                }
                FieldType::Codes(codes) => {
                    for item in v.as_array().into_iter().flatten() {
                        schema::check_code(spec.name, codes, item.as_str().unwrap_or(""))?;
                    }
                }
                FieldType::Date if !text.is_empty() => schema::check_date(spec.name, text)?,
                FieldType::Phone if !text.is_empty() => schema::check_phone(spec.name, text)?,
                FieldType::Number => {
                    let n = v.as_f64().unwrap_or(-1.0);
                    if !(0.0..=100_000.0).contains(&n) {
                        return Err(RecordError::invalid(
                            spec.name,
                            "must be a number from 0 to 100000",
                        ));
                    }
                }
                FieldType::Str | FieldType::List => {
                    let too_long = match v {
                        Value::String(s) => s.chars().count() > 500,
                        Value::Array(a) => a.len() > 200,
                        _ => false,
                    };
                    if too_long {
                        return Err(RecordError::invalid(spec.name, "is too long"));
                    }
                }
                _ => {}
            }
        }
        if self.place().parse::<PlaceId>().is_err() {
            return Err(RecordError::invalid("place", "is not a place id"));
        }
        if let Record::Case(c) = self {
            if c.status == "evaluated" && c.satisfaction.is_empty() {
                return Err(RecordError::invalid(
                    "satisfaction",
                    "is required once the resident has evaluated the case",
                ));
            }
            if c.summary.as_str().chars().count() > 20_000
                || c.details.as_str().chars().count() > 100_000
            {
                return Err(RecordError::invalid("details", "is too long"));
            }
        }
        Ok(())
    }
}
