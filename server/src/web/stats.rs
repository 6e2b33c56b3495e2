//! Statistics (统计): computed from the records at request time (SQL aggregates over the
//! projection, never stored totals), filtered by place and period. Every figure links to the
//! queue of the records behind it; every chart has its table beside it.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use linli_sync_core::PlaceId;
use linli_sync_core::schema;
use serde_json::json;

use super::session::{Fields, WebUser};
use super::view::{Nav, PlaceNames};
use super::{WebError, WebResult, render};
use crate::state::AppState;
use crate::store::prelude::*;
use crate::store::{OfficeStats, Share, StatsFilter};

/// A figure with its link to the records behind it.
pub struct Figure {
    /// Label.
    pub label: String,
    /// The number as shown.
    pub value: String,
    /// The queue of its records.
    pub href: String,
}

/// A table row: cells and the queue link of the row.
pub struct Row {
    /// Cells as shown.
    pub cells: Vec<String>,
    /// The queue of the row's records.
    pub href: String,
}

/// One section: figures, a chart and its table.
pub struct Section {
    /// Element id.
    pub id: &'static str,
    /// Heading.
    pub title: &'static str,
    /// What it counts.
    pub note: &'static str,
    /// Big figures.
    pub figures: Vec<Figure>,
    /// The chart's JSON (`{type, labels, series, links}`), drawn by ECharts; empty for none.
    pub chart: String,
    /// Column headings of the table.
    pub head: Vec<&'static str>,
    /// The table.
    pub rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    nav: Nav,
    place: String,
    date_from: String,
    date_to: String,
    places: Vec<(String, String)>,
    sections: Vec<Section>,
}

fn percent(s: &Share) -> String {
    if s.total == 0 {
        "—".into()
    } else {
        format!("{:.1}%", s.ratio() * 100.0)
    }
}

/// Builds queue links that keep the page's place and period.
struct Links {
    base: Vec<(String, String)>,
}

impl Links {
    fn to(&self, extra: &[(&str, &str)]) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.base {
            s.append_pair(k, v);
        }
        for (k, v) in extra {
            s.append_pair(k, v);
        }
        format!("/office/records?{}", s.finish())
    }
}

fn sections(stats: &OfficeStats, names: &PlaceNames, links: &Links) -> Vec<Section> {
    let mut out = Vec::new();

    // Bus runs and joint receptions: received vs answered on site, as the phones tallied them.
    let sessions: Vec<_> = stats.sessions.iter().take(12).collect();
    let run_label = |s: &crate::store::SessionStat| {
        format!(
            "{}{}",
            s.run_number.clone().unwrap_or_default(),
            s.date
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )
    };
    let total_received: i64 = stats.sessions.iter().map(|s| s.consultations).sum();
    let total_answered: i64 = stats.sessions.iter().map(|s| s.answered).sum();
    out.push(Section {
        id: "sessions",
        title: "直通车 / 三方联合接访",
        note: "每班次收到的咨询及问题数与现场解答数，按手机上的计数器累计。",
        figures: vec![
            Figure {
                label: "班次".into(),
                value: stats.sessions.len().to_string(),
                href: links.to(&[("kind", "bus")]),
            },
            Figure {
                label: "收到咨询及问题".into(),
                value: total_received.to_string(),
                href: links.to(&[("kind", "bus")]),
            },
            Figure {
                label: "现场解答".into(),
                value: total_answered.to_string(),
                href: links.to(&[("kind", "bus")]),
            },
        ],
        chart: json!({
            "type": "bar",
            "labels": sessions.iter().rev().map(|s| run_label(s)).collect::<Vec<_>>(),
            "series": [
                {"name": "收到", "data": sessions.iter().rev().map(|s| s.consultations).collect::<Vec<_>>()},
                {"name": "现场解答", "data": sessions.iter().rev().map(|s| s.answered).collect::<Vec<_>>()},
            ],
            "links": sessions.iter().rev().map(|s| format!("/office/records/{}", s.id)).collect::<Vec<_>>(),
        })
        .to_string(),
        head: vec!["班次号", "类型", "日期", "地点", "收到", "现场解答", "解答率", "发放资料", "关联诉求"],
        rows: stats
            .sessions
            .iter()
            .map(|s| Row {
                cells: vec![
                    s.run_number.clone().unwrap_or_default(),
                    s.session_type
                        .as_deref()
                        .map(|t| schema::code_label(schema::SESSION_TYPES, t))
                        .unwrap_or_default(),
                    s.date.clone().unwrap_or_default(),
                    names.label(&s.place),
                    s.consultations.to_string(),
                    s.answered.to_string(),
                    percent(&Share {
                        part: s.answered,
                        total: s.consultations,
                    }),
                    s.leaflets.to_string(),
                    s.cases.to_string(),
                ],
                href: links.to(&[("kind", "case"), ("session", &s.id)]),
            })
            .collect(),
    });

    // The problem list's resolved share and the reply rate.
    let open = stats.resolved.total - stats.resolved.part;
    out.push(Section {
        id: "resolved",
        title: "问题清单办结情况",
        note: "已解决或已评价的诉求占全部诉求（不含已撤回）的比例；答复率含现场解答和已写办理结果的诉求。",
        figures: vec![
            Figure {
                label: "诉求总数".into(),
                value: stats.resolved.total.to_string(),
                href: links.to(&[("kind", "case")]),
            },
            Figure {
                label: "已办结".into(),
                value: stats.resolved.part.to_string(),
                href: links.to(&[("kind", "case"), ("status", "resolved")]),
            },
            Figure {
                label: "办结率".into(),
                value: percent(&stats.resolved),
                href: links.to(&[("kind", "case")]),
            },
            Figure {
                label: "答复率".into(),
                value: format!(
                    "{}（{}/{}）",
                    percent(&stats.replied),
                    stats.replied.part,
                    stats.replied.total
                ),
                href: links.to(&[("kind", "case")]),
            },
        ],
        chart: json!({
            "type": "pie",
            "labels": ["已办结", "未办结"],
            "series": [{"name": "诉求", "data": [stats.resolved.part, open]}],
            "links": [links.to(&[("kind", "case"), ("status", "resolved")]), links.to(&[("kind", "case"), ("status", "assigned")])],
        })
        .to_string(),
        head: vec!["状态", "诉求数"],
        rows: vec![
            Row {
                cells: vec!["已办结（已解决/已评价）".into(), stats.resolved.part.to_string()],
                href: links.to(&[("kind", "case"), ("status", "resolved")]),
            },
            Row {
                cells: vec!["未办结".into(), open.to_string()],
                href: links.to(&[("kind", "case"), ("status", "assigned")]),
            },
        ],
    });

    // Cases per month with the change against the month before.
    out.push(Section {
        id: "per-month",
        title: "每月诉求数",
        note: "按诉求受理日期统计，环比为与上月相比的增减。",
        figures: Vec::new(),
        chart: json!({
            "type": "line",
            "labels": stats.per_month.iter().map(|m| m.month.clone()).collect::<Vec<_>>(),
            "series": [{"name": "诉求数", "data": stats.per_month.iter().map(|m| m.count).collect::<Vec<_>>()}],
            "links": stats.per_month.iter().map(|m| month_link(links, &m.month)).collect::<Vec<_>>(),
        })
        .to_string(),
        head: vec!["月份", "诉求数", "环比"],
        rows: stats
            .per_month
            .iter()
            .rev()
            .map(|m| Row {
                cells: vec![
                    m.month.clone(),
                    m.count.to_string(),
                    m.change
                        .map(|c| if c > 0 { format!("+{c}") } else { c.to_string() })
                        .unwrap_or_else(|| "—".into()),
                ],
                href: month_link(links, &m.month),
            })
            .collect(),
    });

    // The residents' evaluation.
    let rated: i64 = stats.satisfaction.iter().map(|c| c.count).sum();
    let satisfied: i64 = stats
        .satisfaction
        .iter()
        .filter(|c| c.code == "satisfied" || c.code == "basically_satisfied")
        .map(|c| c.count)
        .sum();
    out.push(Section {
        id: "satisfaction",
        title: "群众满意度（双向评价）",
        note: "已评价诉求中居民给出的评价。",
        figures: vec![Figure {
            label: "满意及基本满意".into(),
            value: percent(&Share {
                part: satisfied,
                total: rated,
            }),
            href: links.to(&[("kind", "case"), ("status", "evaluated")]),
        }],
        chart: json!({
            "type": "pie",
            "labels": stats.satisfaction.iter().map(|c| schema::code_label(schema::SATISFACTION, &c.code)).collect::<Vec<_>>(),
            "series": [{"name": "评价", "data": stats.satisfaction.iter().map(|c| c.count).collect::<Vec<_>>()}],
        })
        .to_string(),
        head: vec!["评价", "诉求数"],
        rows: stats
            .satisfaction
            .iter()
            .map(|c| Row {
                cells: vec![
                    schema::code_label(schema::SATISFACTION, &c.code),
                    c.count.to_string(),
                ],
                href: links.to(&[("kind", "case"), ("status", "evaluated")]),
            })
            .collect(),
    });

    // Steward contacts per building.
    let contacts: Vec<_> = stats.contacts.iter().take(15).collect();
    let building_label = |b: &crate::store::BuildingCount| {
        b.name
            .as_ref()
            .map(|_| names.label(&b.building))
            .unwrap_or_else(|| b.building.clone())
    };
    let building_link = |b: &crate::store::BuildingCount| {
        if b.building.parse::<PlaceId>().is_ok() && b.name.is_some() {
            links.to_place(&[("kind", "contact")], &b.building)
        } else {
            links.to(&[("kind", "contact")])
        }
    };
    out.push(Section {
        id: "contacts",
        title: "楼长走访（按楼栋）",
        note: "楼长走访、电话和微信联系住户的次数。",
        figures: vec![Figure {
            label: "走访次数".into(),
            value: stats.contacts.iter().map(|c| c.contacts).sum::<i64>().to_string(),
            href: links.to(&[("kind", "contact")]),
        }],
        chart: json!({
            "type": "bar",
            "labels": contacts.iter().map(|b| building_label(b)).collect::<Vec<_>>(),
            "series": [{"name": "走访", "data": contacts.iter().map(|b| b.contacts).collect::<Vec<_>>()}],
            "links": contacts.iter().map(|b| building_link(b)).collect::<Vec<_>>(),
        })
        .to_string(),
        head: vec!["楼栋", "走访次数"],
        rows: stats
            .contacts
            .iter()
            .map(|b| Row {
                cells: vec![building_label(b), b.contacts.to_string()],
                href: building_link(b),
            })
            .collect(),
    });

    // Volunteer activities, hours and residents served.
    out.push(Section {
        id: "volunteering",
        title: "志愿服务",
        note: "志愿活动场次、服务时长和服务居民人次。",
        figures: vec![
            Figure {
                label: "活动场次".into(),
                value: stats.volunteering.iter().map(|v| v.activities).sum::<i64>().to_string(),
                href: links.to(&[("kind", "volunteer")]),
            },
            Figure {
                label: "服务时长（小时）".into(),
                value: format!("{:.1}", stats.volunteering.iter().map(|v| v.hours).sum::<f64>()),
                href: links.to(&[("kind", "volunteer")]),
            },
            Figure {
                label: "服务居民".into(),
                value: stats
                    .volunteering
                    .iter()
                    .map(|v| v.residents_served)
                    .sum::<i64>()
                    .to_string(),
                href: links.to(&[("kind", "volunteer")]),
            },
        ],
        chart: json!({
            "type": "bar",
            "labels": stats.volunteering.iter().map(|v| schema::code_label(schema::ACTIVITY_TYPES, &v.activity_type)).collect::<Vec<_>>(),
            "series": [
                {"name": "场次", "data": stats.volunteering.iter().map(|v| v.activities).collect::<Vec<_>>()},
                {"name": "服务居民", "data": stats.volunteering.iter().map(|v| v.residents_served).collect::<Vec<_>>()},
            ],
        })
        .to_string(),
        head: vec!["活动类型", "场次", "时长（小时）", "服务居民"],
        rows: stats
            .volunteering
            .iter()
            .map(|v| Row {
                cells: vec![
                    schema::code_label(schema::ACTIVITY_TYPES, &v.activity_type),
                    v.activities.to_string(),
                    format!("{:.1}", v.hours),
                    v.residents_served.to_string(),
                ],
                href: links.to(&[("kind", "volunteer")]),
            })
            .collect(),
    });
    out
}

fn month_link(links: &Links, month: &str) -> String {
    let from = format!("{month}-01");
    let to = format!("{month}-31");
    links.to(&[("kind", "case"), ("from", &from), ("to", &to)])
}

impl Links {
    /// A link narrowed to `place` instead of the page's place.
    fn to_place(&self, extra: &[(&str, &str)], place: &str) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.base.iter().filter(|(k, _)| k != "place") {
            s.append_pair(k, v);
        }
        s.append_pair("place", place);
        for (k, v) in extra {
            s.append_pair(k, v);
        }
        format!("/office/records?{}", s.finish())
    }
}

fn check_date(d: Option<&str>) -> WebResult<Option<String>> {
    match d {
        None => Ok(None),
        Some(d) if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() => {
            Ok(Some(d.to_string()))
        }
        Some(d) => Err(WebError::page(
            StatusCode::BAD_REQUEST,
            format!("日期格式应为 年-月-日（如 2026-11-01）：{d}"),
        )),
    }
}

/// `GET /office/stats?place=…&from=…&to=…`: every figure over the user's grants.
pub async fn page(
    State(state): State<AppState>,
    user: WebUser,
    RawQuery(query): RawQuery,
) -> WebResult {
    let q = Fields::parse(query.unwrap_or_default().as_bytes());
    let place = match q.get("place") {
        Some(p) => Some(p.parse::<PlaceId>().map_err(|_| {
            WebError::page(StatusCode::BAD_REQUEST, format!("地点格式不正确：{p}"))
        })?),
        None => None,
    };
    let date_from = check_date(q.get("from"))?;
    let date_to = check_date(q.get("to"))?;
    let filter = StatsFilter {
        scopes: user.auth.scopes_within(place.as_ref()),
        place: None,
        date_from: date_from.clone(),
        date_to: date_to.clone(),
    };
    let stats = state.store.office_stats(&filter).await?;
    let names = PlaceNames::load(&state.store).await?;
    let mut base = Vec::new();
    if let Some(p) = &place {
        base.push(("place".to_string(), p.to_string()));
    }
    if let Some(d) = &date_from {
        base.push(("from".to_string(), d.clone()));
    }
    if let Some(d) = &date_to {
        base.push(("to".to_string(), d.clone()));
    }
    let links = Links { base };
    let places = state
        .store
        .places_within(&user.auth.places)
        .await?
        .into_iter()
        .filter(|p| p.id.depth() <= 4)
        .map(|p| {
            let label = format!("{}{}", "　".repeat(p.id.depth().saturating_sub(2)), p.name);
            (p.id.to_string(), label)
        })
        .collect();
    render(&StatsPage {
        nav: Nav::new(&user, "stats"),
        place: place.map(|p| p.to_string()).unwrap_or_default(),
        date_from: date_from.unwrap_or_default(),
        date_to: date_to.unwrap_or_default(),
        places,
        sections: sections(&stats, &names, &links),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_page_filters() {
        let links = Links {
            base: vec![("place".into(), "hz/baiyang".into())],
        };
        assert_eq!(
            links.to(&[("kind", "case")]),
            "/office/records?place=hz%2Fbaiyang&kind=case"
        );
        assert_eq!(
            links.to_place(&[("kind", "contact")], "hz/baiyang/dabei/wenhuiyuan/b1"),
            "/office/records?place=hz%2Fbaiyang%2Fdabei%2Fwenhuiyuan%2Fb1&kind=contact"
        );
    }
}
