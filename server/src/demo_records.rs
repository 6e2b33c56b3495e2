//! Demo records (`serve --demo`): a street's worth of work to look at in the back-office, made
//! the way phones make it. Every record is built with sync-core's capture API under a demo
//! user's own device and actor, and committed through [`crate::sync::submit`], the accept path
//! of a phone's push: rules, audit fields, projection, log and all.
//!
//! What is seeded (only into a database without records):
//! - 直通车 run 1801 at 海天城 (82 consultations, 79 answered on site, 630 leaflets, tallied by
//!   two bus phones) with the cases it raised, one of them with a category two phones set
//!   differently (a conflict); a joint reception (三方联合接访) at 文汇苑;
//! - a problem list of 707 cases across 白杨街道's estates over the last six months, 706 of them
//!   resolved or evaluated and one overdue, plus two withdrawn ones;
//! - steward contacts in every building and volunteer activities with hours and residents served.
//!
//! The same inputs give the same records (a fixed pseudo-random sequence), dated back from now.

use linli_sync_core::automerge::{ActorId, Change};
use linli_sync_core::capture;
use linli_sync_core::protocol::{Part, PushChange};
use linli_sync_core::{
    DeviceId, EditContext, PersonalDoc, PlaceId, RecordDoc, RecordId, RecordKind,
};

use crate::auth::AuthUser;
use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::state::AppState;
use crate::store::prelude::*;

/// Cases in the problem list, all kinds of source.
pub const PROBLEM_LIST_CASES: usize = 707;
/// The run number of the seeded service-bus run.
pub const DEMO_RUN: &str = "1801";

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A demo user signed in on the seeding device.
struct Seeder {
    user: AuthUser,
    actor: ActorId,
}

impl Seeder {
    async fn new(state: &AppState, username: &str, n: u8) -> Result<Seeder> {
        let user = state
            .store
            .user_by_username(username)
            .await?
            .ok_or_else(|| Error::Internal(format!("demo user {username} is missing")))?;
        // Stable ids, so the seeding device is recognisable in the device list.
        let device: DeviceId = format!("00000000-0000-4000-8000-0000000d{n:04x}")
            .parse()
            .map_err(Error::internal)?;
        state
            .store
            .register_device(device, &user.id, "演示数据", now_ms())
            .await?;
        Ok(Seeder {
            user: AuthUser {
                places: state.store.grants_of(&user.id).await?,
                user_id: user.id,
                username: user.username,
                role: user.role,
                device_id: device,
            },
            actor: ActorId::from(format!("linli-demo-{n}").as_bytes()),
        })
    }

    fn ctx(&self, at_ms: i64) -> EditContext {
        EditContext {
            actor: self.actor.clone(),
            user: self.user.username.clone(),
            // Whole seconds: a change's claimed time has no milliseconds.
            now_ms: at_ms - at_ms.rem_euclid(1000),
        }
    }

    async fn push(
        &self,
        state: &AppState,
        id: RecordId,
        kind: RecordKind,
        part: Part,
        change: &Change,
    ) -> Result<()> {
        let push = PushChange {
            record: *id.as_bytes(),
            kind,
            part,
            change: change.raw_bytes().to_vec(),
        };
        // Boxed: the accept path's future is large, and the seeding nests it many times.
        Box::pin(crate::sync::submit(state, &self.user, &push))
            .await
            .map(|_| ())
            .map_err(|r| {
                Error::Internal(format!(
                    "a demo record was refused ({}): {}",
                    r.code.as_str(),
                    r.message
                ))
            })
    }

    /// Creates a record and pushes its changes.
    async fn create(
        &self,
        state: &AppState,
        kind: RecordKind,
        place: &PlaceId,
        at_ms: i64,
        fields: &[(&str, String)],
    ) -> Result<(RecordId, RecordDoc, PersonalDoc)> {
        let id = RecordId::new();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        let (doc, personal, captured) =
            capture::create(id, kind, place, &self.ctx(at_ms), &fields).map_err(Error::internal)?;
        if let Some(c) = &captured.record {
            self.push(state, id, kind, Part::Record, c).await?;
        }
        if let Some(c) = &captured.personal {
            self.push(state, id, kind, Part::Personal, c).await?;
        }
        Ok((id, doc, personal))
    }

    /// Sets fields of a record and pushes the change.
    #[allow(clippy::too_many_arguments)]
    async fn set(
        &self,
        state: &AppState,
        id: RecordId,
        kind: RecordKind,
        doc: &mut RecordDoc,
        personal: &mut PersonalDoc,
        at_ms: i64,
        fields: &[(&str, String)],
    ) -> Result<()> {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        let captured = capture::set_fields(doc, personal, &self.ctx(at_ms), &fields)
            .map_err(Error::internal)?;
        if let Some(c) = &captured.record {
            self.push(state, id, kind, Part::Record, c).await?;
        }
        Ok(())
    }

    async fn tally(
        &self,
        state: &AppState,
        id: RecordId,
        doc: &mut RecordDoc,
        at_ms: i64,
        field: &str,
        n: i64,
    ) -> Result<()> {
        let change = doc
            .tally(&self.ctx(at_ms), field, n)
            .map_err(Error::internal)?;
        self.push(state, id, RecordKind::Bus, Part::Record, &change)
            .await
    }
}

/// A fixed pseudo-random sequence (xorshift), so every demo database looks alike.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The `YYYY-MM-DD` day (UTC+8) of a time in ms.
fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is valid"))
        .format("%Y-%m-%d")
        .to_string()
}

fn place(s: &str) -> Result<PlaceId> {
    s.parse().map_err(Error::internal)
}

/// (category, departments, summary, details, resolution)
const CASE_TEMPLATES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "fire_safety",
        "fire_brigade,property_company",
        "消防通道被私家车长期占用",
        "楼下消防通道每晚停满私家车，消防车无法通行，居民多次反映无果。",
        "消防大队会同物业施划禁停标线，安装隔离桩，夜间巡查劝离。",
    ),
    (
        "fire_safety",
        "fire_brigade,residents_committee",
        "楼道堆放杂物存在消防隐患",
        "楼道内堆放纸箱、旧家具，阻碍疏散，存在火灾隐患。",
        "居委会组织清理楼道杂物，消防大队上门开展消防安全宣传。",
    ),
    (
        "fire_safety",
        "fire_brigade,property_company",
        "电动车在楼道内充电",
        "有住户将电动车推入楼道飞线充电，邻居担心起火。",
        "物业增设集中充电桩，消防大队入户宣传电动车充电安全。",
    ),
    (
        "rental_housing",
        "police,housing",
        "出租房群租人员复杂",
        "一套住房隔成多个小间出租，进出人员多，居民担心治安。",
        "公安分局与房管局联合检查，责令房东整改恢复原状，登记租住人员。",
    ),
    (
        "dogs",
        "enforcement,residents_committee",
        "小区内遛狗不牵绳",
        "傍晚有居民遛大型犬不牵绳，老人小孩受到惊吓。",
        "综合执法大队开展犬只专项整治，居委会张贴文明养犬倡议。",
    ),
    (
        "waste_sorting",
        "residents_committee,property_company",
        "垃圾分类投放点异味严重",
        "垃圾投放点清运不及时，夏天异味大、蚊蝇多。",
        "物业调整清运频次为每日两次，投放点加装除臭设施。",
    ),
    (
        "food_safety",
        "market_regulation",
        "小区门口早餐摊卫生堪忧",
        "门口流动早餐摊无证经营，食材露天摆放。",
        "市场监管分局检查后引导摊主入驻便民早餐点，办理相关证照。",
    ),
    (
        "legal_services",
        "court",
        "咨询房屋继承法律问题",
        "居民咨询父母去世后房屋继承及过户手续。",
        "法院法官现场解答继承顺序及所需材料，提供诉讼指引。",
    ),
    (
        "owner_disputes",
        "owners_committee,residents_committee",
        "楼上漏水邻里纠纷",
        "楼上卫生间漏水导致楼下天花板发霉，双方协商未果。",
        "居委会组织双方调解，楼上住户修复防水并赔偿楼下损失。",
    ),
    (
        "property_management",
        "property_company,owners_committee",
        "物业服务不到位",
        "小区绿化无人修剪，门禁损坏多日未修。",
        "业委会约谈物业，物业制定整改清单并于两周内完成。",
    ),
    (
        "facilities",
        "property_company",
        "电梯频繁故障困人",
        "本月电梯已故障三次，有老人被困。",
        "物业联系维保单位全面检修，更换老化部件，增加维保频次。",
    ),
    (
        "facilities",
        "property_company,housing",
        "单元门口路灯损坏",
        "单元门口路灯不亮，夜间出行不便。",
        "物业更换路灯灯具，恢复照明。",
    ),
    (
        "parking",
        "property_company,enforcement",
        "小区停车位紧张乱停车",
        "外来车辆进入小区占用车位，绿化带被压坏。",
        "物业实行车辆登记管理，综合执法大队清理僵尸车。",
    ),
    (
        "noise",
        "police,residents_committee",
        "夜间装修噪音扰民",
        "有住户晚上十点后仍在装修施工，影响休息。",
        "社区民警上门劝导，居委会告知装修时间规定，施工方已遵守。",
    ),
    (
        "other",
        "residents_committee",
        "希望增设老年活动室",
        "小区老人多，缺少活动场地。",
        "居委会协调闲置用房改建为老年活动室，已投入使用。",
    ),
];

const ESTATES: &[(&str, &str, usize)] = &[
    ("hz/baiyang/haitian/haitiancheng", "海天城", 6),
    ("hz/baiyang/haitian/tianyuan", "天元公寓", 3),
    ("hz/baiyang/dabei/wenhuiyuan", "文汇苑", 4),
];

const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴"];

/// Seeds the demo records if the database holds no record yet (the demo places and users must
/// exist: see [`crate::demo::seed`]). Returns how many records were created.
pub async fn seed_records(state: &AppState) -> Result<usize> {
    if state.store.record_count().await? > 0 {
        return Ok(0);
    }
    let now = now_ms();
    let bus1 = Seeder::new(state, "bus1", 1).await?;
    let bus2 = Seeder::new(state, "bus2", 2).await?;
    let office = Seeder::new(state, "office1", 3).await?;
    let steward1 = Seeder::new(state, "steward1", 4).await?;
    let steward2 = Seeder::new(state, "steward2", 5).await?;
    let mut dice = Dice(0x2545_f491_4f6c_dd1d);
    let mut created = 0usize;

    // Service-bus run 1801 at 海天城, 12 days ago, tallied on two phones.
    let run_at = now - 12 * DAY_MS;
    let haitiancheng = place("hz/baiyang/haitian/haitiancheng")?;
    let (run_id, mut run_doc, _) = bus1
        .create(
            state,
            RecordKind::Bus,
            &haitiancheng,
            run_at,
            &[
                ("session_type", "service_bus".into()),
                ("run_number", DEMO_RUN.into()),
                ("date", day(run_at)),
                ("estate", "海天城".into()),
                ("leader", "李强".into()),
                (
                    "departments",
                    "court,police,housing,market_regulation,enforcement,fire_brigade".into(),
                ),
                (
                    "summary",
                    "第1801班次直通车开进海天城，六个部门随车，现场受理咨询及问题，发放宣传资料。"
                        .into(),
                ),
            ],
        )
        .await?;
    created += 1;
    let mut run_doc2 = run_doc.clone();
    for (field, a, b) in [
        ("consultations", 50, 32),
        ("answered_on_site", 48, 31),
        ("leaflets", 400, 230),
    ] {
        bus1.tally(state, run_id, &mut run_doc, run_at + 3_600_000, field, a)
            .await?;
        bus2.tally(state, run_id, &mut run_doc2, run_at + 3_660_000, field, b)
            .await?;
    }

    // A joint reception at 文汇苑, 40 days ago.
    let jr_at = now - 40 * DAY_MS;
    let (jr_id, mut jr_doc, _) = office
        .create(
            state,
            RecordKind::Bus,
            &place("hz/baiyang/dabei/wenhuiyuan")?,
            jr_at,
            &[
                ("session_type", "joint_reception".into()),
                ("run_number", "1802".into()),
                ("date", day(jr_at)),
                ("estate", "文汇苑".into()),
                ("leader", "周敏".into()),
                (
                    "departments",
                    "residents_committee,owners_committee,property_company".into(),
                ),
                (
                    "summary",
                    "居委会、业委会、物业三方联合接访，集中听取居民对物业服务的意见。".into(),
                ),
            ],
        )
        .await?;
    created += 1;
    for (field, n) in [
        ("consultations", 23),
        ("answered_on_site", 20),
        ("leaflets", 150),
    ] {
        office
            .tally(state, jr_id, &mut jr_doc, jr_at + 3_600_000, field, n)
            .await?;
    }

    // The problem list: 707 cases, one still open and overdue.
    for i in 0..PROBLEM_LIST_CASES {
        let (category, departments, summary, details, resolution) = *dice.pick(CASE_TEMPLATES);
        let from_run = i < 12;
        let (estate, estate_name, buildings) = if from_run {
            ESTATES[0]
        } else {
            *dice.pick(ESTATES)
        };
        let building = 1 + dice.below(buildings);
        // Half of the cases are filed at their building, the rest at the estate with the
        // building written in.
        let at_building = dice.below(2) == 0;
        let case_place = if at_building {
            place(&format!("{estate}/b{building}"))?
        } else {
            place(estate)?
        };
        let created_at = if from_run {
            run_at + 1_800_000 + i as i64 * 60_000
        } else {
            now - (1 + dice.below(180) as i64) * DAY_MS - dice.below(36_000) as i64 * 1000
        };
        // The last case is still open: filed a month ago, its deadline ten days past.
        let open = i == PROBLEM_LIST_CASES - 1;
        let evaluated = !open && dice.below(3) > 0;
        let (created_at, deadline_at) = if open {
            (now - 30 * DAY_MS, now - 10 * DAY_MS)
        } else {
            (
                created_at,
                created_at + (7 + dice.below(24) as i64) * DAY_MS,
            )
        };
        let (source, session) = if from_run {
            ("bus_session", run_id.to_string())
        } else if estate_name == "文汇苑" && dice.below(8) == 0 {
            ("joint_reception", jr_id.to_string())
        } else {
            (
                *dice.pick(&["hotline", "steward_contact", "other", "hotline"]),
                String::new(),
            )
        };
        let mut fields: Vec<(&str, String)> = vec![
            ("category", category.into()),
            ("summary", format!("{estate_name}{building}幢：{summary}")),
            ("details", details.into()),
            ("building", format!("{building}幢")),
            ("unit", format!("{}单元", 1 + dice.below(3))),
            (
                "room",
                format!("{}0{}", 1 + dice.below(18), 1 + dice.below(4)),
            ),
            ("source", source.into()),
            ("session_id", session),
            ("departments", departments.into()),
        ];
        if i % 10 == 0 {
            fields.push(("resident_name", format!("{}女士", dice.pick(SURNAMES))));
            fields.push((
                "resident_phone",
                format!("138{:08}", dice.next() % 100_000_000),
            ));
        }
        if from_run {
            // Raised on the bus phone; the office takes it from there.
            fields.push(("status", "received".into()));
            let (id, mut doc, mut personal) = bus1
                .create(state, RecordKind::Case, &case_place, created_at, &fields)
                .await?;
            if i == 0 {
                // Two bus phones classified it differently while apart: a conflict to resolve.
                let mut other = doc.clone();
                let mut other_personal = personal.clone();
                bus1.set(
                    state,
                    id,
                    RecordKind::Case,
                    &mut doc,
                    &mut personal,
                    created_at + 60_000,
                    &[("category", "property_management".into())],
                )
                .await?;
                bus2.set(
                    state,
                    id,
                    RecordKind::Case,
                    &mut other,
                    &mut other_personal,
                    created_at + 90_000,
                    &[("category", "facilities".into())],
                )
                .await?;
                doc.apply_changes(other.changes())
                    .map_err(Error::internal)?;
            }
            let mut close: Vec<(&str, String)> = vec![
                ("deadline", day(deadline_at)),
                ("resolution", resolution.into()),
            ];
            if evaluated {
                close.push(("status", "evaluated".into()));
                close.push(("satisfaction", satisfaction(&mut dice).into()));
            } else {
                close.push(("status", "resolved".into()));
            }
            office
                .set(
                    state,
                    id,
                    RecordKind::Case,
                    &mut doc,
                    &mut personal,
                    created_at + 5 * DAY_MS,
                    &close,
                )
                .await?;
        } else {
            fields.push(("deadline", day(deadline_at)));
            if open {
                fields.push(("status", "in_progress".into()));
            } else {
                fields.push(("resolution", resolution.into()));
                if evaluated {
                    fields.push(("status", "evaluated".into()));
                    fields.push(("satisfaction", satisfaction(&mut dice).into()));
                } else {
                    fields.push(("status", "resolved".into()));
                }
            }
            office
                .create(state, RecordKind::Case, &case_place, created_at, &fields)
                .await?;
        }
        created += 1;
    }
    // Withdrawn cases: not part of the list's share.
    for (summary, at) in [
        ("海天城2幢：住户已自行解决，撤回诉求", now - 20 * DAY_MS),
        ("文汇苑3幢：重复登记，撤回", now - 50 * DAY_MS),
    ] {
        office
            .create(
                state,
                RecordKind::Case,
                &place("hz/baiyang")?,
                at,
                &[
                    ("category", "other".into()),
                    ("summary", summary.into()),
                    ("source", "hotline".into()),
                    ("status", "withdrawn".into()),
                ],
            )
            .await?;
        created += 1;
    }

    // Steward contacts: every building, by its steward where the demo has one.
    for (estate, estate_name, buildings) in ESTATES {
        for b in 1..=*buildings {
            let building = place(&format!("{estate}/b{b}"))?;
            let seeder = match (*estate, b) {
                ("hz/baiyang/haitian/haitiancheng", 3) => &steward1,
                ("hz/baiyang/dabei/wenhuiyuan", 1) => &steward2,
                _ => &office,
            };
            for k in 0..(2 + dice.below(3)) {
                let at = now - (1 + dice.below(170) as i64) * DAY_MS;
                let (topic, needs) = *dice.pick(&[
                    ("独居老人", "独居老人身体状况良好，需定期上门看望。"),
                    ("电梯", "反映电梯运行有异响，希望尽快检修。"),
                    ("垃圾分类", "宣传垃圾分类，住户表示愿意配合。"),
                    ("消防", "检查楼道消防器材，提醒不要在楼道充电。"),
                    ("邻里", "了解邻里关系，无矛盾纠纷。"),
                ]);
                let mut fields: Vec<(&str, String)> = vec![
                    (
                        "household",
                        format!(
                            "{b}幢{}单元{}0{}室",
                            1 + k % 3,
                            2 + dice.below(16),
                            1 + k % 4
                        ),
                    ),
                    ("date", day(at)),
                    (
                        "channel",
                        dice.pick(&["visit", "visit", "phone", "wechat"])
                            .to_string(),
                    ),
                    ("topics", topic.into()),
                    ("needs", needs.into()),
                ];
                if std::ptr::eq(seeder, &office) {
                    fields.push(("steward", format!("{estate_name}{b}幢楼长")));
                }
                seeder
                    .create(state, RecordKind::Contact, &building, at, &fields)
                    .await?;
                created += 1;
            }
        }
    }

    // Volunteer activities.
    for (k, (activity, activity_type, venue, hours, served, summary)) in [
        (
            "社区义诊",
            "free_clinic",
            "海天城",
            "3",
            46,
            "邀请社区卫生服务中心医生为居民量血压、测血糖。",
        ),
        (
            "义务理发进小区",
            "haircut",
            "文汇苑",
            "2.5",
            31,
            "志愿者为行动不便的老人上门理发。",
        ),
        (
            "中秋邻里节",
            "festival",
            "天元公寓",
            "4",
            120,
            "做月饼、猜灯谜，邻里共度中秋。",
        ),
        (
            "楼道环境大扫除",
            "cleanup",
            "海天城",
            "2",
            0,
            "志愿者清理楼道小广告和堆积杂物。",
        ),
        (
            "重阳节敬老活动",
            "festival",
            "文汇苑",
            "3",
            58,
            "为高龄老人送上慰问品并表演节目。",
        ),
        (
            "垃圾分类宣传",
            "other",
            "海天城",
            "1.5",
            75,
            "在投放点指导居民正确分类投放。",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let at = now - (10 + 28 * k as i64) * DAY_MS;
        let estate = ESTATES
            .iter()
            .find(|(_, name, _)| venue.starts_with(name))
            .map_or("hz/baiyang", |(p, _, _)| p);
        let (id, mut doc, _) = office
            .create(
                state,
                RecordKind::Volunteer,
                &place(estate)?,
                at,
                &[
                    ("activity", activity.into()),
                    ("activity_type", activity_type.into()),
                    ("date", day(at)),
                    ("venue", venue.into()),
                    ("volunteers", "周红,吴刚,郑丽,孙涛".into()),
                    ("hours", hours.into()),
                    ("summary", summary.into()),
                ],
            )
            .await?;
        if served > 0 {
            let change = doc
                .tally(&office.ctx(at + 3_600_000), "residents_served", served)
                .map_err(Error::internal)?;
            office
                .push(state, id, RecordKind::Volunteer, Part::Record, &change)
                .await?;
        }
        created += 1;
    }
    Ok(created)
}

fn satisfaction(dice: &mut Dice) -> &'static str {
    match dice.below(20) {
        0 => "dissatisfied",
        1..=4 => "basically_satisfied",
        _ => "satisfied",
    }
}
