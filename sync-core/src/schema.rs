//! The field schema of each record kind: names, Chinese labels, types and allowed codes.
//!
//! The typed structs in [`crate::records`] are the Automerge mapping; this table is what generic
//! code (the field CLI's `field=value`, conflict listing, the back-office labels) walks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RecordError;

/// The four kinds of record captured in the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// 诉求 / 问题: a case raised by a resident.
    Case,
    /// 直通车班次 or 三方联合接访: a service-bus session or joint reception.
    Bus,
    /// 走访记录: a steward's contact with a household.
    Contact,
    /// 志愿服务: a volunteer activity.
    Volunteer,
}

impl RecordKind {
    /// Every kind, in display order.
    pub const ALL: [RecordKind; 4] = [Self::Case, Self::Bus, Self::Contact, Self::Volunteer];

    /// The code stored in documents and used in URLs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Case => "case",
            Self::Bus => "bus",
            Self::Contact => "contact",
            Self::Volunteer => "volunteer",
        }
    }

    /// The Chinese label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Case => "诉求",
            Self::Bus => "直通车班次",
            Self::Contact => "走访记录",
            Self::Volunteer => "志愿服务",
        }
    }

    /// The fields of this kind, in display order.
    pub fn fields(&self) -> &'static [FieldSpec] {
        match self {
            Self::Case => CASE_FIELDS,
            Self::Bus => BUS_FIELDS,
            Self::Contact => CONTACT_FIELDS,
            Self::Volunteer => VOLUNTEER_FIELDS,
        }
    }

    /// One field by name, or a clear error.
    pub fn field(&self, name: &str) -> Result<&'static FieldSpec, RecordError> {
        self.fields()
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| RecordError::UnknownField {
                kind: *self,
                field: name.to_string(),
            })
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = RecordError;
    fn from_str(s: &str) -> Result<Self, RecordError> {
        match s {
            "case" => Ok(Self::Case),
            "bus" => Ok(Self::Bus),
            "contact" => Ok(Self::Contact),
            "volunteer" => Ok(Self::Volunteer),
            other => Err(RecordError::UnknownKind(other.to_string())),
        }
    }
}

/// How a field is stored and edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A short string, last writer wins with conflicts kept.
    Str,
    /// One code out of a fixed list.
    Code(&'static [Code]),
    /// Several codes out of a fixed list.
    Codes(&'static [Code]),
    /// A list of short strings.
    List,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A mainland mobile or landline phone number (personal data).
    Phone,
    /// A non-negative decimal number.
    Number,
    /// Collaborative text: concurrent edits merge character by character.
    Text,
    /// A tally: concurrent increments add up.
    Counter,
    /// Set at creation and never changed (kind, place, audit fields).
    Fixed,
}

impl FieldType {
    /// Whether two people setting it differently is a conflict to show (scalar fields).
    pub fn is_scalar(&self) -> bool {
        matches!(
            self,
            Self::Str | Self::Code(_) | Self::Date | Self::Phone | Self::Number | Self::Fixed
        )
    }
}

/// One allowed value of a coded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// Stored value.
    pub code: &'static str,
    /// Chinese label.
    pub label: &'static str,
}

const fn c(code: &'static str, label: &'static str) -> Code {
    Code { code, label }
}

/// A field of a record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The key in the document.
    pub name: &'static str,
    /// Chinese label.
    pub label: &'static str,
    /// Type and rule.
    pub ty: FieldType,
    /// Must be non-empty.
    pub required: bool,
    /// Personal data: masked for roles that don't need it, never logged.
    pub personal: bool,
}

const fn f(name: &'static str, label: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        label,
        ty,
        required: false,
        personal: false,
    }
}

const fn req(name: &'static str, label: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        label,
        ty,
        required: true,
        personal: false,
    }
}

const fn pd(name: &'static str, label: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        label,
        ty,
        required: false,
        personal: true,
    }
}

/// Case categories named in the source articles.
pub const CATEGORIES: &[Code] = &[
    c("rental_housing", "出租房管理/群租"),
    c("fire_safety", "消防安全"),
    c("dogs", "犬事治理"),
    c("waste_sorting", "垃圾分类"),
    c("food_safety", "食品安全"),
    c("legal_services", "法律服务"),
    c("owner_disputes", "业主纠纷"),
    c("property_management", "物管问题"),
    c("facilities", "设施维修"),
    c("parking", "停车"),
    c("noise", "噪音扰民"),
    c("other", "其他"),
];

/// Case status life: received → answered on site | assigned → in progress → resolved → evaluated.
pub const CASE_STATUSES: &[Code] = &[
    c("received", "受理"),
    c("answered_on_site", "现场解答"),
    c("assigned", "转办"),
    c("in_progress", "办理中"),
    c("resolved", "已解决"),
    c("evaluated", "已评价"),
    c("withdrawn", "已撤回"),
];

/// Where a case came from.
pub const CASE_SOURCES: &[Code] = &[
    c("bus_session", "直通车"),
    c("joint_reception", "三方联合接访"),
    c("steward_contact", "楼长走访"),
    c("hotline", "热线"),
    c("other", "其他"),
];

/// Departments that ride the bus or take cases (责任部门).
pub const DEPARTMENTS: &[Code] = &[
    c("court", "法院"),
    c("police", "公安分局"),
    c("housing", "建设(房管)局"),
    c("market_regulation", "市场监管分局"),
    c("enforcement", "综合执法大队"),
    c("fire_brigade", "消防大队"),
    c("residents_committee", "居委会"),
    c("owners_committee", "业委会"),
    c("property_company", "物业公司"),
];

/// The resident's evaluation (双向评价).
pub const SATISFACTION: &[Code] = &[
    c("satisfied", "满意"),
    c("basically_satisfied", "基本满意"),
    c("dissatisfied", "不满意"),
];

/// Service-bus session types.
pub const SESSION_TYPES: &[Code] = &[
    c("service_bus", "直通车"),
    c("joint_reception", "三方联合接访"),
];

/// Contact channels.
pub const CHANNELS: &[Code] = &[
    c("visit", "上门走访"),
    c("phone", "电话"),
    c("wechat", "微信"),
];

/// Volunteer activity types.
pub const ACTIVITY_TYPES: &[Code] = &[
    c("free_clinic", "义诊"),
    c("haircut", "义务理发"),
    c("festival", "节日活动"),
    c("cleanup", "环境整治"),
    c("other", "其他"),
];

const COMMON_HEAD: [FieldSpec; 3] = [
    f("kind", "类型", FieldType::Fixed),
    f("schema", "版本", FieldType::Fixed),
    f("place", "位置", FieldType::Fixed),
];

const COMMON_TAIL: [FieldSpec; 2] = [
    f("created_at", "创建时间", FieldType::Fixed),
    f("created_by", "创建人", FieldType::Fixed),
];

macro_rules! fields {
    ($($spec:expr),* $(,)?) => {
        &[COMMON_HEAD[0], COMMON_HEAD[1], COMMON_HEAD[2], $($spec,)* COMMON_TAIL[0], COMMON_TAIL[1]]
    };
}

static CASE_FIELDS: &[FieldSpec] = fields![
    req("category", "类别", FieldType::Code(CATEGORIES)),
    req("summary", "摘要", FieldType::Text),
    f("details", "详情", FieldType::Text),
    f("building", "楼栋", FieldType::Str),
    f("unit", "单元", FieldType::Str),
    f("room", "房号", FieldType::Str),
    pd("resident_name", "居民姓名", FieldType::Str),
    pd("resident_phone", "居民电话", FieldType::Phone),
    req("source", "来源", FieldType::Code(CASE_SOURCES)),
    f("session_id", "所属班次", FieldType::Str),
    req("status", "状态", FieldType::Code(CASE_STATUSES)),
    f("departments", "责任部门", FieldType::Codes(DEPARTMENTS)),
    f("deadline", "办结时限", FieldType::Date),
    f("resolution", "办理结果", FieldType::Text),
    f("satisfaction", "满意度", FieldType::Code(SATISFACTION)),
    f("photos", "照片", FieldType::List),
];

static BUS_FIELDS: &[FieldSpec] = fields![
    req("session_type", "类型", FieldType::Code(SESSION_TYPES)),
    f("run_number", "班次号", FieldType::Str),
    req("date", "日期", FieldType::Date),
    f("estate", "小区", FieldType::Str),
    f("leader", "车长", FieldType::Str),
    f("departments", "随车部门", FieldType::Codes(DEPARTMENTS)),
    f("consultations", "咨询及问题数", FieldType::Counter),
    f("answered_on_site", "现场解答数", FieldType::Counter),
    f("leaflets", "发放资料", FieldType::Counter),
    f("summary", "情况记录", FieldType::Text),
];

static CONTACT_FIELDS: &[FieldSpec] = fields![
    f("steward", "楼长", FieldType::Str),
    req("household", "住户", FieldType::Str),
    req("date", "日期", FieldType::Date),
    req("channel", "方式", FieldType::Code(CHANNELS)),
    f("topics", "话题", FieldType::List),
    f("needs", "诉求", FieldType::Text),
    f("case_id", "关联诉求", FieldType::Str),
    f("follow_up_due", "回访日期", FieldType::Date),
];

static VOLUNTEER_FIELDS: &[FieldSpec] = fields![
    req("activity", "活动", FieldType::Str),
    f("activity_type", "活动类型", FieldType::Code(ACTIVITY_TYPES)),
    req("date", "日期", FieldType::Date),
    f("venue", "地点", FieldType::Str),
    f("volunteers", "志愿者", FieldType::List),
    f("hours", "时长(小时)", FieldType::Number),
    f("residents_served", "服务居民", FieldType::Counter),
    f("summary", "情况记录", FieldType::Text),
];

/// The label of a code in a list, or the code itself if unknown.
pub fn code_label(codes: &[Code], code: &str) -> String {
    codes
        .iter()
        .find(|c| c.code == code)
        .map(|c| c.label.to_string())
        .unwrap_or_else(|| code.to_string())
}

/// Checks a code against its list, with a message that lists the allowed codes.
pub fn check_code(field: &str, codes: &[Code], value: &str) -> Result<(), RecordError> {
    if codes.iter().any(|c| c.code == value) {
        Ok(())
    } else {
        let allowed: Vec<&str> = codes.iter().map(|c| c.code).collect();
        Err(RecordError::invalid(
            field,
            format!(
                "'{value}' is not allowed (expected one of {})",
                allowed.join(", ")
            ),
        ))
    }
}

/// Checks a `YYYY-MM-DD` date.
pub fn check_date(field: &str, value: &str) -> Result<(), RecordError> {
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| {
            RecordError::invalid(
                field,
                format!("'{value}' is not a date (expected YYYY-MM-DD)"),
            )
        })
}

/// Checks a phone number without echoing it (it is personal data).
pub fn check_phone(field: &str, value: &str) -> Result<(), RecordError> {
    let digits = value.chars().filter(|c| c.is_ascii_digit()).count();
    let shape_ok = value
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == ' ');
    if shape_ok && (7..=15).contains(&digits) {
        Ok(())
    } else {
        Err(RecordError::invalid(
            field,
            "not a phone number (7 to 15 digits)",
        ))
    }
}

/// The masked form of a personal value, as roles without access to personal data see it (and as
/// the shared record document stores it): phone numbers keep their first three and last four
/// digits (`138****5678`), names their first character (`王**`). Empty stays empty.
pub fn mask_personal(spec: &FieldSpec, value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return String::new();
    }
    match spec.ty {
        FieldType::Phone => mask_phone(value),
        _ => mask_name(value),
    }
}

/// Whether `value` is a masked form ([`mask_personal`]) rather than a full personal value: what
/// the shared record document may hold in a personal field.
pub fn is_masked(spec: &FieldSpec, value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let chars: Vec<char> = value.chars().collect();
    let stars = chars.iter().filter(|c| **c == '*').count();
    match spec.ty {
        FieldType::Phone => {
            // Up to 3 leading and 4 trailing digits around one run of at least 4 stars.
            let first = chars.iter().position(|c| *c == '*');
            let last = chars.iter().rposition(|c| *c == '*');
            match (first, last) {
                (Some(f), Some(l)) => {
                    f <= 3
                        && chars.len() - 1 - l <= 4
                        && stars == l - f + 1
                        && stars >= 4
                        && chars[..f].iter().all(char::is_ascii_digit)
                        && chars[l + 1..].iter().all(char::is_ascii_digit)
                }
                _ => false,
            }
        }
        _ => chars.len() <= 50 && chars.iter().skip(1).all(|c| *c == '*') && stars >= 1,
    }
}

/// Masks a name: its first character, then one star per further character; a one-character
/// name is a single star (its first character would be all of it).
pub fn mask_name(value: &str) -> String {
    let mut chars = value.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => match chars.count() {
            0 => "*".to_string(),
            rest => format!("{first}{}", "*".repeat(rest)),
        },
    }
}

/// Masks a phone number for roles that may not see it: at least four of its digits are hidden;
/// of the rest, up to the last four and then up to the first three stay (`138****5678`,
/// `****0000` for an 8-digit landline); separators are dropped.
pub fn mask_phone(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    let len = digits.len();
    let tail = 4.min(len.saturating_sub(4));
    let head = 3.min(len.saturating_sub(4 + tail));
    let hidden = (len - head - tail).max(4);
    let head: String = digits[..head].iter().collect();
    let tail: String = digits[len - tail..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_unique_field_names() {
        for kind in RecordKind::ALL {
            let mut names: Vec<_> = kind.fields().iter().map(|f| f.name).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "{kind}");
        }
    }

    #[test]
    fn masked_forms_are_recognised_and_full_values_are_not() {
        let phone = RecordKind::Case.field("resident_phone").unwrap();
        let name = RecordKind::Case.field("resident_name").unwrap();
        for full in ["13812345678", "0571-86000000", "+86 138 1234 5678"] {
            assert!(!is_masked(phone, full), "{full}");
            assert!(is_masked(phone, &mask_personal(phone, full)), "{full}");
        }
        assert!(!is_masked(phone, "1381234****"));
        assert!(!is_masked(phone, "138**5678"));
        for full in ["王小明", "欧阳修", "王", "Li Lei"] {
            assert!(!is_masked(name, full), "{full}");
            let masked = mask_personal(name, full);
            assert!(is_masked(name, &masked), "{full} -> {masked}");
            assert_ne!(masked, full);
        }
        assert_eq!(mask_personal(name, "王小明"), "王**");
        assert_eq!(mask_personal(name, "王"), "*");
        assert!(is_masked(phone, ""));
    }

    #[test]
    fn phone_masking_keeps_ends_only() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("5678"), "****");
        assert_eq!(mask_phone("86000000"), "****0000");
        assert_eq!(mask_phone("8600000"), "****000");
        assert_eq!(mask_phone("0571-86000000"), "057*****0000");
        let err = check_phone("resident_phone", "call me maybe").unwrap_err();
        assert!(!err.to_string().contains("maybe"));
    }
}
