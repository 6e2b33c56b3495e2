//! One record = one Automerge document: creating, editing, merging, and reading back the merged
//! value, its conflicts and its history.

use std::collections::BTreeSet;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Change, ChangeHash, ObjId, ROOT, ReadDoc};
use serde::Serialize;
use serde_json::Value;

use crate::error::RecordError;
use crate::ids::{PlaceId, RecordId};
use crate::limits;
use crate::records::{Note, Record, bus_title, case_title, dated_title};
use crate::schema::{FieldSpec, FieldType, RecordKind};

/// Who is editing, on which actor, and the device's claimed time.
#[derive(Debug, Clone)]
pub struct EditContext {
    /// The device's Automerge actor.
    pub actor: ActorId,
    /// The signed-in user's name (recorded in notes and `created_by`).
    pub user: String,
    /// The device clock, ms since epoch. Advisory only: never used for ordering.
    pub now_ms: i64,
}

/// What a list of records shows of one ([`RecordDoc::listing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The record's kind.
    pub kind: RecordKind,
    /// Its place, as stored.
    pub place: String,
    /// A case's status; `None` for other kinds.
    pub status: Option<String>,
    /// Its one-line title ([`Record::title`]).
    pub title: String,
}

/// One value of a conflicted field and who set it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConflictValue {
    /// The value.
    pub value: Value,
    /// The actor that set it (hex).
    pub actor: String,
    /// The change that set it (hex hash).
    pub change: String,
    /// The device's claimed time of that change, ms since epoch.
    pub claimed_at: i64,
}

/// A field that two people set differently while apart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Conflict {
    /// Field name.
    pub field: String,
    /// Chinese label.
    pub label: String,
    /// The value shown (Automerge's deterministic winner).
    pub winner: Value,
    /// Every concurrent value, winner included.
    pub values: Vec<ConflictValue>,
}

/// One change in a record's history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeInfo {
    /// Change hash (hex).
    pub hash: String,
    /// Actor (hex).
    pub actor: String,
    /// The actor's sequence number in this document.
    pub seq: u64,
    /// The device's claimed time, ms since epoch.
    pub claimed_at: i64,
    /// The message the editing device wrote.
    pub message: Option<String>,
    /// Top-level fields the change touched, computed from the change itself.
    pub touched: Vec<String>,
}

/// A record's Automerge document.
#[derive(Debug, Clone)]
pub struct RecordDoc {
    id: RecordId,
    doc: AutoCommit,
}

impl RecordDoc {
    /// An empty document, to receive changes (server side, or a phone pulling a new record).
    pub fn empty(id: RecordId) -> Self {
        Self {
            id,
            doc: AutoCommit::new(),
        }
    }

    /// Loads a saved document.
    pub fn load(id: RecordId, bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(Self {
            id,
            doc: AutoCommit::load(bytes)?,
        })
    }

    /// Creates a record with the creator's fields, as one change.
    pub fn create(
        id: RecordId,
        kind: RecordKind,
        place: &PlaceId,
        ctx: &EditContext,
        fields: &[(String, String)],
    ) -> Result<(Self, Change), RecordError> {
        Self::create_checked(id, kind, place, ctx, fields, true)
    }

    /// As [`RecordDoc::create`], without validating the result when `validate` is false: only
    /// for rebuilding fixtures made under earlier rules (the fuzz regressions' first seed).
    pub(crate) fn create_checked(
        id: RecordId,
        kind: RecordKind,
        place: &PlaceId,
        ctx: &EditContext,
        fields: &[(String, String)],
        validate: bool,
    ) -> Result<(Self, Change), RecordError> {
        let mut doc = AutoCommit::new().with_actor(ctx.actor.clone());
        let record = Record::new(kind, place, &ctx.user, ctx.now_ms);
        let res = match &record {
            Record::Case(r) => autosurgeon::reconcile(&mut doc, r),
            Record::Bus(r) => autosurgeon::reconcile(&mut doc, r),
            Record::Contact(r) => autosurgeon::reconcile(&mut doc, r),
            Record::Volunteer(r) => autosurgeon::reconcile(&mut doc, r),
        };
        res.map_err(|e| RecordError::NotARecord(e.to_string()))?;
        let mut this = Self { id, doc };
        for (field, value) in fields {
            this.put_field(kind, field, value)?;
        }
        // The record id in the message keeps two identical creations (same actor, same second) from
        // producing byte-identical changes with one hash.
        let message = format!("create {kind} {id}");
        let change = if validate {
            this.commit(ctx, message)?
        } else {
            commit_doc(&mut this.doc, ctx, message)?
                .ok_or_else(|| RecordError::invalid("fields", "nothing changed"))?
        };
        Ok((this, change))
    }

    /// A new document holding `record`'s current value as one change by `ctx`, without the
    /// history that led to it: how the server rebuilds a record whose history must go (residents'
    /// details written into it before records had a personal part). Tallies keep their totals,
    /// texts their content, notes their authors and times; the audit fields are the record's own.
    pub fn rebuild(
        id: RecordId,
        record: &Record,
        ctx: &EditContext,
        message: String,
    ) -> Result<(Self, Change), RecordError> {
        let kind = record.kind();
        let place: PlaceId = record
            .place()
            .parse()
            .map_err(|_| RecordError::invalid("place", "is not a place id"))?;
        let mut doc = AutoCommit::new().with_actor(ctx.actor.clone());
        // A fresh record with the original audit fields, then every value written anew (a
        // hydrated text or tally remembers the document it came from and cannot be reconciled
        // into another).
        let fresh = Record::new(kind, &place, record.created_by(), record.created_at());
        let res = match &fresh {
            Record::Case(r) => autosurgeon::reconcile(&mut doc, r),
            Record::Bus(r) => autosurgeon::reconcile(&mut doc, r),
            Record::Contact(r) => autosurgeon::reconcile(&mut doc, r),
            Record::Volunteer(r) => autosurgeon::reconcile(&mut doc, r),
        };
        res.map_err(|e| RecordError::NotARecord(e.to_string()))?;
        let mut this = Self { id, doc };
        let json = record.to_json();
        let bad = |e: autosurgeon::ReconcileError| RecordError::NotARecord(e.to_string());
        for spec in kind.fields() {
            let v = json.get(spec.name).cloned().unwrap_or(Value::Null);
            match spec.ty {
                FieldType::Fixed => {}
                FieldType::Counter => {
                    let n = v.as_i64().unwrap_or(0);
                    if n != 0 {
                        this.doc.increment(ROOT, spec.name, n)?;
                    }
                }
                FieldType::List | FieldType::Codes(_) => {
                    let items: Vec<String> = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| i.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    autosurgeon::reconcile_prop(&mut this.doc, ROOT, spec.name, &items)
                        .map_err(bad)?;
                }
                _ => {
                    let text = match &v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    this.put_field(kind, spec.name, &text)?;
                }
            }
        }
        autosurgeon::reconcile_prop(&mut this.doc, ROOT, "notes", record.notes()).map_err(bad)?;
        let change = this.commit(ctx, message)?;
        Ok((this, change))
    }

    /// The kind stored in the document, if it is a Linli record.
    pub fn kind(&self) -> Result<RecordKind, RecordError> {
        match self.doc.get(ROOT, "kind")? {
            Some((automerge::Value::Scalar(s), _)) => match s.as_str() {
                Some(k) => k.parse(),
                None => Err(RecordError::NotARecord("kind is not text".into())),
            },
            _ => Err(RecordError::NotARecord("no kind".into())),
        }
    }

    /// The merged, typed value.
    pub fn record(&self) -> Result<Record, RecordError> {
        Record::hydrate(&self.doc, self.kind()?)
    }

    /// What a list shows of the record, read from only the fields it needs: the kind, place,
    /// status and title [`RecordDoc::record`] gives wherever that succeeds, without hydrating the
    /// rest (a phone lists every record of a bootstrap, where hydrating each whole took a third
    /// of its time). An error where one of those fields is missing or of another type.
    pub fn listing(&self) -> Result<Listing, RecordError> {
        let kind = self.kind()?;
        // As the typed record reads them: a `String` field from a text scalar, a `LongText`
        // from a text object.
        let scalar = |key: &str| {
            self.doc
                .get(ROOT, key)?
                .and_then(|(v, _)| v.as_str().map(str::to_owned))
                .ok_or_else(|| RecordError::NotARecord(format!("{key} is not text")))
        };
        let long = |key: &str| match self.doc.get(ROOT, key)? {
            Some((automerge::Value::Object(automerge::ObjType::Text), obj)) => {
                Ok(self.doc.text(&obj)?)
            }
            _ => Err(RecordError::NotARecord(format!("{key} is not long text"))),
        };
        let place = scalar("place")?;
        let (status, title) = match kind {
            RecordKind::Case => (Some(scalar("status")?), case_title(&long("summary")?)),
            RecordKind::Bus => (
                None,
                bus_title(&scalar("run_number")?, &scalar("date")?, &scalar("estate")?),
            ),
            RecordKind::Contact => (None, dated_title(&scalar("household")?, &scalar("date")?)),
            RecordKind::Volunteer => (None, dated_title(&scalar("activity")?, &scalar("date")?)),
        };
        Ok(Listing {
            kind,
            place,
            status,
            title,
        })
    }

    /// Sets fields from `field=value` text, as one change. Lists are comma-separated; an empty
    /// value clears an optional field. Personal fields take only their masked form here: use
    /// [`crate::capture`] to record a resident's name or phone.
    pub fn set_fields(
        &mut self,
        ctx: &EditContext,
        fields: &[(String, String)],
    ) -> Result<Change, RecordError> {
        self.try_set_fields(ctx, fields)?
            .ok_or_else(|| RecordError::invalid("fields", "nothing changed"))
    }

    /// As [`RecordDoc::set_fields`], but `None` when every field already had that value.
    pub(crate) fn try_set_fields(
        &mut self,
        ctx: &EditContext,
        fields: &[(String, String)],
    ) -> Result<Option<Change>, RecordError> {
        let kind = self.kind()?;
        self.doc.set_actor(ctx.actor.clone());
        for (field, value) in fields {
            if let Err(e) = self.put_field(kind, field, value) {
                self.doc.rollback();
                return Err(e);
            }
        }
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        self.try_commit(ctx, format!("set {}", names.join(",")))
    }

    /// Adds `n` to a tally; concurrent tallies add up.
    pub fn tally(&mut self, ctx: &EditContext, field: &str, n: i64) -> Result<Change, RecordError> {
        let kind = self.kind()?;
        let spec = kind.field(field)?;
        if spec.ty != FieldType::Counter {
            return Err(RecordError::invalid(field, "is not a tally"));
        }
        if n == 0 || n.abs() > limits::MAX_TALLY_STEP {
            return Err(RecordError::invalid(
                field,
                format!(
                    "a tally step must be a non-zero number up to {}",
                    limits::MAX_TALLY_STEP
                ),
            ));
        }
        self.doc.set_actor(ctx.actor.clone());
        self.doc.increment(ROOT, field, n)?;
        self.commit(ctx, format!("tally {field} {n:+}"))
    }

    /// Appends a note.
    pub fn add_note(&mut self, ctx: &EditContext, text: &str) -> Result<Change, RecordError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > limits::MAX_NOTE_CHARS {
            return Err(RecordError::invalid(
                "notes",
                format!(
                    "a note must have 1 to {} characters",
                    limits::MAX_NOTE_CHARS
                ),
            ));
        }
        self.kind()?;
        self.doc.set_actor(ctx.actor.clone());
        let mut notes: Vec<Note> = autosurgeon::hydrate_prop(&self.doc, ROOT, "notes")
            .map_err(|e| RecordError::NotARecord(e.to_string()))?;
        notes.push(Note {
            id: uuid::Uuid::new_v4().simple().to_string(),
            author: ctx.user.clone(),
            at: ctx.now_ms,
            text: text.to_string(),
        });
        autosurgeon::reconcile_prop(&mut self.doc, ROOT, "notes", &notes)
            .map_err(|e| RecordError::NotARecord(e.to_string()))?;
        self.commit(ctx, "note".to_string())
    }

    fn put_field(&mut self, kind: RecordKind, field: &str, value: &str) -> Result<(), RecordError> {
        let spec = kind.field(field)?;
        let value = value.trim();
        let bad = |e: autosurgeon::ReconcileError| RecordError::NotARecord(e.to_string());
        match spec.ty {
            FieldType::Fixed => {
                return Err(RecordError::ReadOnlyField {
                    field: field.into(),
                    reason: "it is fixed when the record is created".into(),
                });
            }
            FieldType::Counter => {
                return Err(RecordError::ReadOnlyField {
                    field: field.into(),
                    reason: "it is a tally: add to it instead of setting it".into(),
                });
            }
            FieldType::Number => {
                let n: f64 = value.parse().map_err(|_| {
                    RecordError::invalid(field, format!("'{value}' is not a number"))
                })?;
                self.doc.put(ROOT, field, n)?;
            }
            FieldType::Text => {
                let obj = match self.doc.get(ROOT, field)? {
                    Some((automerge::Value::Object(automerge::ObjType::Text), id)) => id,
                    _ => return Err(RecordError::NotARecord(format!("{field} is not text"))),
                };
                // A diff against the current text, so concurrent edits elsewhere in it survive.
                self.doc.update_text(&obj, value)?;
            }
            FieldType::Codes(_) | FieldType::List => {
                let items: Vec<String> = value
                    .split([',', '，'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                autosurgeon::reconcile_prop(&mut self.doc, ROOT, field, &items).map_err(bad)?;
            }
            FieldType::Str | FieldType::Code(_) | FieldType::Date | FieldType::Phone => {
                self.doc.put(ROOT, field, value)?;
            }
        }
        Ok(())
    }

    /// Validates the pending edits and commits them as one change.
    fn commit(&mut self, ctx: &EditContext, message: String) -> Result<Change, RecordError> {
        self.try_commit(ctx, message)?
            .ok_or_else(|| RecordError::invalid("fields", "nothing changed"))
    }

    /// Validates the pending edits and commits them as one change; `None` when they changed
    /// nothing (every value was already so).
    fn try_commit(
        &mut self,
        ctx: &EditContext,
        message: String,
    ) -> Result<Option<Change>, RecordError> {
        if let Err(e) = self.record().and_then(|r| r.validate()) {
            self.doc.rollback();
            return Err(e);
        }
        commit_doc(&mut self.doc, ctx, message)
    }

    /// Fields that two or more people set differently while apart, with every value and who set
    /// it (actor and change; the caller maps those to users and devices).
    pub fn conflicts(&mut self) -> Vec<Conflict> {
        let Ok(kind) = self.kind() else { return vec![] };
        conflicts_in(
            &mut self.doc,
            kind.fields().iter().filter(|s| s.ty.is_scalar()),
        )
    }
}

/// The operations every Linli document type shares: applying changes made elsewhere, heads,
/// saving, history. One macro rather than a trait, so both types keep inherent methods.
macro_rules! document_basics {
    ($t:ty) => {
        impl $t {
            /// The record id.
            pub fn id(&self) -> RecordId {
                self.id
            }

            /// Applies a change made elsewhere. Applying one already held is a no-op.
            pub fn apply_change(&mut self, bytes: &[u8]) -> Result<ChangeHash, RecordError> {
                let change = Change::from_bytes(bytes.to_vec()).map_err(|e| {
                    RecordError::NotARecord(format!("not an automerge change: {e}"))
                })?;
                let hash = change.hash();
                self.doc.apply_changes([change])?;
                Ok(hash)
            }

            /// Applies already-parsed changes.
            pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<(), RecordError> {
                self.doc.apply_changes(changes)?;
                Ok(())
            }

            /// Whether the document holds this change.
            pub fn has_change(&mut self, hash: &ChangeHash) -> bool {
                self.doc.get_change_by_hash(hash).is_some()
            }

            /// The current heads.
            pub fn heads(&mut self) -> Vec<ChangeHash> {
                self.doc.get_heads()
            }

            /// Whether the document holds no change at all.
            pub fn is_empty(&mut self) -> bool {
                self.doc.get_heads().is_empty()
            }

            /// Every change, in causal order.
            pub fn changes(&mut self) -> Vec<Change> {
                self.doc.get_changes(&[])
            }

            /// The compact saved form.
            pub fn save(&mut self) -> Vec<u8> {
                self.doc.save()
            }

            /// The saved form without DEFLATE: what phones keep, so their files can be searched
            /// byte for byte (no value hides in a compressed column).
            pub fn save_plain(&mut self) -> Vec<u8> {
                self.doc.save_nocompress()
            }

            /// The underlying Automerge document (read-only).
            pub fn automerge(&self) -> &AutoCommit {
                &self.doc
            }

            /// A copy to try changes on.
            pub(crate) fn fork(&mut self) -> Self {
                Self {
                    id: self.id,
                    doc: self.doc.fork().with_actor(ActorId::random()),
                }
            }

            /// Every value of one root field, with the op ids that set them.
            pub(crate) fn values_of(&self, field: &str) -> Vec<(Value, ObjId)> {
                $crate::document::values_of(&self.doc, field)
            }

            /// The top-level fields that changes between two sets of heads touched.
            pub fn touched(&mut self, before: &[ChangeHash], after: &[ChangeHash]) -> Vec<String> {
                $crate::document::touched(&mut self.doc, before, after)
            }

            /// Every change in causal order with what it touched.
            pub fn history(&mut self) -> Vec<ChangeInfo> {
                let changes = self.doc.get_changes(&[]);
                let mut out = Vec::with_capacity(changes.len());
                for c in changes {
                    let touched = $crate::document::touched(&mut self.doc, c.deps(), &[c.hash()]);
                    out.push(ChangeInfo {
                        hash: c.hash().to_string(),
                        actor: c.actor_id().to_hex_string(),
                        seq: c.seq(),
                        claimed_at: c.timestamp().saturating_mul(1000),
                        message: c.message().map(String::from),
                        touched,
                    });
                }
                out
            }
        }
    };
}
pub(crate) use document_basics;

document_basics!(RecordDoc);

/// Commits a document's pending operations as one change with the editor's claimed time; `None`
/// when there were none.
pub(crate) fn commit_doc(
    doc: &mut AutoCommit,
    ctx: &EditContext,
    message: String,
) -> Result<Option<Change>, RecordError> {
    let opts = CommitOptions::default()
        .with_message(message)
        .with_time(ctx.now_ms.div_euclid(1000));
    if doc.commit_with(opts).is_none() {
        return Ok(None);
    }
    doc.get_last_local_change()
        .map(Some)
        .ok_or_else(|| RecordError::NotARecord("the change was not recorded".into()))
}

/// Every value of one root field, with the op ids that set them.
pub(crate) fn values_of(doc: &AutoCommit, field: &str) -> Vec<(Value, ObjId)> {
    doc.get_all(ROOT, field)
        .unwrap_or_default()
        .into_iter()
        .map(|(v, id)| (value_json(&v), id))
        .collect()
}

/// The top-level fields that changes between two sets of heads touched.
pub(crate) fn touched(
    doc: &mut AutoCommit,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Vec<String> {
    if before.is_empty() {
        // From nothing, every key the document holds at `after` was touched, and only those:
        // what the diff would say, without building its patches.
        let keys: BTreeSet<String> = doc.keys_at(ROOT, after).collect();
        return keys.into_iter().collect();
    }
    touched_by_diff(doc, before, after)
}

fn touched_by_diff(
    doc: &mut AutoCommit,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for patch in doc.diff(before, after) {
        let prop = match patch.path.first() {
            Some((_, p)) => Some(p.clone()),
            None => match patch.action {
                automerge::PatchAction::PutMap { key, .. } => Some(automerge::Prop::Map(key)),
                automerge::PatchAction::Increment { prop, .. } => Some(prop),
                automerge::PatchAction::Conflict { prop } => Some(prop),
                automerge::PatchAction::DeleteMap { key } => Some(automerge::Prop::Map(key)),
                _ => None,
            },
        };
        if let Some(automerge::Prop::Map(k)) = prop {
            out.insert(k);
        }
    }
    out.into_iter().collect()
}

/// The scalar fields among `specs` that hold two or more concurrent values, each with who set it.
pub(crate) fn conflicts_in<'a>(
    doc: &mut AutoCommit,
    specs: impl Iterator<Item = &'a FieldSpec>,
) -> Vec<Conflict> {
    let conflicted: Vec<(&FieldSpec, Vec<(Value, ObjId)>)> = specs
        .map(|spec| (spec, values_of(doc, spec.name)))
        .filter(|(_, all)| all.len() >= 2)
        .collect();
    if conflicted.is_empty() {
        // Attributing values means walking every change: only when there is something to show.
        return Vec::new();
    }
    let index = ChangeIndex::new(doc);
    let mut out = vec![];
    for (spec, all) in conflicted {
        let winner = doc
            .get(ROOT, spec.name)
            .ok()
            .flatten()
            .map(|(v, _)| value_json(&v))
            .unwrap_or(Value::Null);
        let values = all
            .into_iter()
            .map(|(value, id)| {
                let (actor, change, claimed_at) = index.lookup(&id);
                ConflictValue {
                    value,
                    actor,
                    change,
                    claimed_at,
                }
            })
            .collect();
        out.push(Conflict {
            field: spec.name.to_string(),
            label: spec.label.to_string(),
            winner,
            values,
        });
    }
    out
}

/// Maps an op id to the change that made it.
struct ChangeIndex {
    // (actor, first op counter, last op counter, hash, claimed ms)
    spans: Vec<(ActorId, u64, u64, ChangeHash, i64)>,
}

impl ChangeIndex {
    fn new(doc: &mut AutoCommit) -> Self {
        let spans = doc
            .get_changes(&[])
            .iter()
            .map(|c| {
                let start = c.start_op().get();
                (
                    c.actor_id().clone(),
                    start,
                    start + c.len() as u64,
                    c.hash(),
                    c.timestamp().saturating_mul(1000),
                )
            })
            .collect();
        Self { spans }
    }

    fn lookup(&self, id: &ObjId) -> (String, String, i64) {
        if let ObjId::Id(counter, actor, _) = id {
            if let Some((_, _, _, hash, at)) = self
                .spans
                .iter()
                .find(|(a, start, end, _, _)| a == actor && *counter >= *start && *counter < *end)
            {
                return (actor.to_hex_string(), hash.to_string(), *at);
            }
            return (actor.to_hex_string(), String::new(), 0);
        }
        (String::new(), String::new(), 0)
    }
}

pub(crate) fn value_json(v: &automerge::Value<'_>) -> Value {
    use automerge::ScalarValue as S;
    match v {
        automerge::Value::Scalar(s) => match s.as_ref() {
            S::Str(t) => Value::String(t.to_string()),
            S::Int(i) => Value::from(*i),
            S::Uint(u) => Value::from(*u),
            S::F64(f) => Value::from(*f),
            S::Counter(c) => Value::from(i64::from(c)),
            S::Timestamp(t) => Value::from(*t),
            S::Boolean(b) => Value::Bool(*b),
            S::Null => Value::Null,
            other => Value::String(other.to_string()),
        },
        automerge::Value::Object(t) => Value::String(format!("<{t}>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(user: &str) -> EditContext {
        EditContext {
            actor: ActorId::random(),
            user: user.into(),
            now_ms: 1_700_000_000_000,
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn concurrent_edits_merge_and_status_conflict_is_kept() {
        let place: PlaceId = "hz/baiyang/haitian/haitiancheng".parse().unwrap();
        let a = ctx("bus1");
        let b = ctx("bus2");
        let (mut doc_a, c0) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &a,
            &kv(&[("summary", "3幢楼道堆放杂物"), ("source", "bus_session")]),
        )
        .unwrap();
        let mut doc_b = RecordDoc::empty(doc_a.id());
        doc_b.apply_change(c0.raw_bytes()).unwrap();

        let ca = doc_a
            .set_fields(
                &a,
                &kv(&[
                    ("summary", "3幢楼道堆放杂物,消防通道堵塞"),
                    ("status", "assigned"),
                ]),
            )
            .unwrap();
        let cb1 = doc_b
            .set_fields(
                &b,
                &kv(&[("category", "fire_safety"), ("status", "answered_on_site")]),
            )
            .unwrap();
        let cb2 = doc_b.add_note(&b, "已联系物业清理").unwrap();

        doc_a.apply_change(cb1.raw_bytes()).unwrap();
        doc_a.apply_change(cb2.raw_bytes()).unwrap();
        doc_b.apply_change(ca.raw_bytes()).unwrap();

        for doc in [&mut doc_a, &mut doc_b] {
            let Record::Case(case) = doc.record().unwrap() else {
                panic!("not a case")
            };
            assert_eq!(case.summary.as_str(), "3幢楼道堆放杂物,消防通道堵塞");
            assert_eq!(case.category, "fire_safety");
            assert_eq!(case.notes.len(), 1);
            let conflicts = doc.conflicts();
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].field, "status");
            let mut vals: Vec<_> = conflicts[0]
                .values
                .iter()
                .map(|v| v.value.clone())
                .collect();
            vals.sort_by_key(|v| v.to_string());
            assert_eq!(
                vals,
                vec![Value::from("answered_on_site"), Value::from("assigned")]
            );
            let actors: BTreeSet<_> = conflicts[0]
                .values
                .iter()
                .map(|v| v.actor.clone())
                .collect();
            assert_eq!(
                actors,
                BTreeSet::from([a.actor.to_hex_string(), b.actor.to_hex_string()])
            );
        }
        assert_eq!(
            doc_a.record().unwrap().status(),
            doc_b.record().unwrap().status()
        );
    }

    #[test]
    fn tallies_add_up_across_phones() {
        let place: PlaceId = "hz/baiyang/haitian/haitiancheng".parse().unwrap();
        let a = ctx("bus1");
        let b = ctx("bus2");
        let (mut doc_a, c0) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Bus,
            &place,
            &a,
            &kv(&[("run_number", "1801")]),
        )
        .unwrap();
        let mut doc_b = RecordDoc::empty(doc_a.id());
        doc_b.apply_change(c0.raw_bytes()).unwrap();
        let x = doc_a.tally(&a, "leaflets", 300).unwrap();
        let y = doc_b.tally(&b, "leaflets", 330).unwrap();
        doc_a.apply_change(y.raw_bytes()).unwrap();
        doc_b.apply_change(x.raw_bytes()).unwrap();
        for doc in [&doc_a, &doc_b] {
            let Record::Bus(bus) = doc.record().unwrap() else {
                panic!()
            };
            assert_eq!(bus.leaflets.value(), 630);
        }
        assert!(doc_a.conflicts().is_empty());
    }

    #[test]
    fn invalid_edits_are_refused_and_leave_nothing() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let a = ctx("office1");
        let (mut doc, _) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &a,
            &kv(&[("summary", "漏水")]),
        )
        .unwrap();
        let heads = doc.heads();
        let err = doc.set_fields(&a, &kv(&[("status", "done")])).unwrap_err();
        assert!(
            err.to_string().contains("status: 'done' is not allowed"),
            "{err}"
        );
        let err = doc
            .set_fields(&a, &kv(&[("deadline", "next week")]))
            .unwrap_err();
        assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
        let err = doc.set_fields(&a, &kv(&[("place", "hz")])).unwrap_err();
        assert!(matches!(err, RecordError::ReadOnlyField { .. }));
        let err = doc.set_fields(&a, &kv(&[("colour", "red")])).unwrap_err();
        assert!(matches!(err, RecordError::UnknownField { .. }));
        let err = doc
            .set_fields(&a, &kv(&[("resident_phone", "secret-abc")]))
            .unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert_eq!(doc.heads(), heads);
        let err =
            RecordDoc::create(RecordId::new(), RecordKind::Case, &place, &a, &[]).unwrap_err();
        assert!(err.to_string().contains("summary: is required"), "{err}");
    }

    #[test]
    fn history_names_touched_fields() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let a = ctx("office1");
        let (mut doc, _) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &a,
            &kv(&[("summary", "停车难")]),
        )
        .unwrap();
        doc.set_fields(
            &a,
            &kv(&[("status", "assigned"), ("departments", "police,housing")]),
        )
        .unwrap();
        doc.add_note(&a, "转交公安").unwrap();
        let h = doc.history();
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[1].touched,
            vec!["departments".to_string(), "status".to_string()]
        );
        assert_eq!(h[2].touched, vec!["notes".to_string()]);
        assert_eq!(h[0].claimed_at, 1_700_000_000_000);
    }

    #[test]
    fn what_a_change_from_nothing_touched_is_what_the_diff_says() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let a = ctx("office1");
        let (mut doc, _) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &a,
            &kv(&[("summary", "停车难"), ("building", "3幢")]),
        )
        .unwrap();
        doc.add_note(&a, "转交公安").unwrap();
        // A key put and deleted within one change: neither way names it.
        doc.doc.put(ROOT, "scratch", "x").unwrap();
        doc.doc.delete(ROOT, "scratch").unwrap();
        doc.doc.put(ROOT, "status", "assigned").unwrap();
        doc.doc.commit();
        let changes = doc.doc.get_changes(&[]);
        let mut prefixes: Vec<Vec<ChangeHash>> = changes.iter().map(|c| vec![c.hash()]).collect();
        prefixes.push(doc.heads());
        for after in prefixes {
            let fast = touched(&mut doc.doc, &[], &after);
            assert_eq!(fast, touched_by_diff(&mut doc.doc, &[], &after));
            assert!(!fast.contains(&"scratch".to_string()));
        }
        let heads = doc.heads();
        assert!(touched(&mut doc.doc, &[], &heads).contains(&"notes".to_string()));
    }

    #[test]
    fn a_rebuilt_record_keeps_its_value_without_its_history() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let a = ctx("bus1");
        let (mut doc, _) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Bus,
            &place,
            &a,
            &kv(&[("run_number", "1801"), ("summary", "海天城")]),
        )
        .unwrap();
        doc.tally(&a, "leaflets", 630).unwrap();
        doc.add_note(&a, "车已到站").unwrap();
        let before = doc.record().unwrap().to_json();
        let (mut rebuilt, _) = RecordDoc::rebuild(
            doc.id(),
            &doc.record().unwrap(),
            &ctx("linli-system"),
            "rebuild".into(),
        )
        .unwrap();
        assert_eq!(rebuilt.record().unwrap().to_json(), before);
        assert_eq!(rebuilt.history().len(), 1);
        // It still works as a record: tallies add, texts merge.
        rebuilt.tally(&a, "leaflets", 5).unwrap();
        let crate::records::Record::Bus(bus) = rebuilt.record().unwrap() else {
            panic!()
        };
        assert_eq!(bus.leaflets.value(), 635);
    }

    /// What `record()` says a list shows.
    fn listed(doc: &RecordDoc) -> Listing {
        let r = doc.record().unwrap();
        Listing {
            kind: r.kind(),
            place: r.place().to_string(),
            status: r.status().map(str::to_owned),
            title: r.title(),
        }
    }

    #[test]
    fn a_listing_is_what_the_typed_record_lists() {
        let place: PlaceId = "hz/baiyang/haitian".parse().unwrap();
        let (a, b) = (ctx("bus1"), ctx("bus2"));
        type Fields = Vec<(String, String)>;
        let cases: [(RecordKind, Fields, Fields); 5] = [
            (
                RecordKind::Case,
                kv(&[
                    ("summary", "3幢楼道堆放杂物\n消防通道堵塞"),
                    ("source", "bus_session"),
                ]),
                kv(&[("status", "assigned")]),
            ),
            (
                RecordKind::Case,
                kv(&[("summary", "路灯不亮")]),
                kv(&[("summary", "路灯不亮\n已报修")]),
            ),
            (
                RecordKind::Bus,
                kv(&[("run_number", "1801"), ("date", "2026-11-03")]),
                kv(&[("estate", "海天城")]),
            ),
            (
                RecordKind::Contact,
                kv(&[("household", "5幢2单元301"), ("date", "2026-11-04")]),
                kv(&[("date", "2026-11-05")]),
            ),
            (
                RecordKind::Volunteer,
                kv(&[("activity", "义诊"), ("hours", "2.5")]),
                kv(&[("activity", "理发")]),
            ),
        ];
        for (kind, create, edit) in cases {
            let (mut doc_a, c0) =
                RecordDoc::create(RecordId::new(), kind, &place, &a, &create).unwrap();
            // Before its creation arrives, a document has no kind: no listing, as no record.
            let mut doc_b = RecordDoc::empty(doc_a.id());
            assert!(doc_b.listing().is_err() && doc_b.record().is_err());
            doc_b.apply_change(c0.raw_bytes()).unwrap();
            assert_eq!(doc_a.listing().unwrap(), listed(&doc_a));
            // Concurrent edits of the same fields: both read the same winner.
            let x = doc_a.set_fields(&a, &edit).unwrap();
            let mut other = edit.clone();
            for (field, v) in &mut other {
                if field == "date" {
                    *v = "2026-11-06".into();
                } else {
                    v.push('乙');
                }
            }
            if kind == RecordKind::Case {
                other.push(("status".into(), "resolved".into()));
            }
            let y = doc_b.set_fields(&b, &other).unwrap();
            doc_a.apply_change(y.raw_bytes()).unwrap();
            doc_b.apply_change(x.raw_bytes()).unwrap();
            for doc in [&doc_a, &doc_b] {
                assert_eq!(doc.listing().unwrap(), listed(doc), "{kind:?}");
            }
            // A record that is only its first change (a snapshot of an unsaved record).
            let loaded = RecordDoc::load(doc_a.id(), c0.raw_bytes()).unwrap();
            assert_eq!(loaded.listing().unwrap(), listed(&loaded));
            assert_eq!(doc_a.listing().unwrap(), doc_b.listing().unwrap());
        }
    }

    #[test]
    fn saved_documents_load_back() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let a = ctx("steward1");
        let (mut doc, _) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Volunteer,
            &place,
            &a,
            &kv(&[
                ("activity", "义诊"),
                ("hours", "2.5"),
                ("volunteers", "张医生,李护士"),
            ]),
        )
        .unwrap();
        let bytes = doc.save();
        let back = RecordDoc::load(doc.id(), &bytes).unwrap();
        let Record::Volunteer(v) = back.record().unwrap() else {
            panic!()
        };
        assert_eq!(v.volunteers, vec!["张医生", "李护士"]);
        assert_eq!(v.hours, 2.5);
    }
}
