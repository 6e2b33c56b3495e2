//! Back-office benchmark (issue 9): starts the real `linli-server` binary (use `--release`),
//! fills it with cases through the sync path (simulated phones pushing real case documents),
//! then measures the web app under concurrent load: the queue (filtered, searched, paged),
//! record pages, statistics and exports, with the server's memory. Prints Markdown for
//! `BENCHMARKS.md`.
//!
//! ```sh
//! cargo run --release -p linli-tests --bin linli-office-bench
//! # keep the seeded data and measure it again without seeding:
//! cargo run --release -p linli-tests --bin linli-office-bench -- --data-dir /tmp/office-100k
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::{Cursor, Part, PushChange, SyncRequest, SyncResponse};
use linli_sync_core::{EditContext, PlaceId, RecordDoc, RecordId, RecordKind};
use linli_tests::office_http::{agent, enc, sign_in};
use linli_tests::{ServerProcess, login_token, post_sync};

/// Many phones share three user names, and the load signs in several times: the per-user
/// limits would measure themselves, not the pages.
const NO_RATE_LIMITS: &[(&str, &str)] =
    &[("LINLI_RATE_LIMIT", "0"), ("LINLI_LOGIN_RATE_LIMIT", "0")];

/// Written into the data directory once seeding finished, so a re-run can skip it.
const SEEDED_MARKER: &str = "office-bench-seeded.json";

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Parser)]
#[command(about = "Measures the Linli back-office against the real server binary")]
struct Args {
    /// Cases to seed through the sync path.
    #[arg(long, default_value_t = 100_000)]
    cases: usize,
    /// Phones seeding at once (each its own device and connection).
    #[arg(long, default_value_t = 12)]
    phones: usize,
    /// Cases per push while seeding.
    #[arg(long, default_value_t = 100)]
    per_push: usize,
    /// Data directory to keep (seeded once, reused by later runs); a temporary one if unset.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Concurrent browser workers in the load phase.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Seconds of mixed load.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Signed-in office sessions the workers share.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Requests of each kind in the one-at-a-time round (service time without queueing).
    #[arg(long, default_value_t = 20)]
    sequential: usize,
    /// Skip the exports.
    #[arg(long)]
    no_export: bool,
}

// ---------------------------------------------------------------------------------------------
// Seeding through the sync path.

/// A small deterministic generator (no dependency needed for dice).
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// (category, departments, summary, details): Chinese text for search to find.
const PROBLEMS: &[(&str, &str, &str, &str)] = &[
    (
        "fire_safety",
        "fire_brigade,property_company",
        "消防通道被私家车占用",
        "楼下消防通道每晚停满私家车，消防车无法通行。",
    ),
    (
        "fire_safety",
        "fire_brigade,residents_committee",
        "楼道堆放杂物存在消防隐患",
        "楼道内堆放纸箱和旧家具，阻碍疏散。",
    ),
    (
        "fire_safety",
        "fire_brigade,property_company",
        "电动车在楼道内充电",
        "有住户将电动车推入楼道飞线充电，邻居担心起火。",
    ),
    (
        "rental_housing",
        "police,housing",
        "出租房群租人员复杂",
        "一套住房隔成多个小间出租，进出人员多。",
    ),
    (
        "dogs",
        "enforcement,residents_committee",
        "小区内遛狗不牵绳",
        "傍晚有居民遛大型犬不牵绳，老人小孩受到惊吓。",
    ),
    (
        "waste_sorting",
        "residents_committee,property_company",
        "垃圾分类投放点异味大",
        "垃圾分类投放点清运不及时，夏天异味很大。",
    ),
    (
        "food_safety",
        "market_regulation",
        "小区门口流动摊贩食品卫生差",
        "门口流动摊贩售卖熟食，无证经营，卫生堪忧。",
    ),
    (
        "legal_services",
        "court",
        "房屋买卖合同纠纷咨询",
        "居民购房后开发商迟迟不办产权证，想咨询法律途径。",
    ),
    (
        "owner_disputes",
        "owners_committee,residents_committee",
        "楼上漏水殃及楼下",
        "楼上卫生间漏水，楼下天花板发霉，双方协商不成。",
    ),
    (
        "property_management",
        "property_company,owners_committee",
        "电梯经常故障停运",
        "电梯一个月内停运三次，老人上下楼困难。",
    ),
    (
        "facilities",
        "property_company",
        "路灯不亮夜间出行不便",
        "小区主干道多盏路灯损坏，夜间漆黑。",
    ),
    (
        "parking",
        "property_company,enforcement",
        "停车位紧张乱停车严重",
        "车位不足，车辆占用绿化带和人行道停放。",
    ),
    (
        "noise",
        "enforcement,residents_committee",
        "广场舞噪音扰民",
        "晚上广场舞音响声音太大，影响老人和孩子休息。",
    ),
    (
        "other",
        "residents_committee",
        "希望增设老年活动室",
        "社区老年人多，希望增设活动室和助餐点。",
    ),
];

/// Estate paths, their short names and how many buildings they have.
const ESTATES: &[(&str, &str, usize)] = &[
    ("hz/baiyang/haitian/haitiancheng", "海天城", 6),
    ("hz/baiyang/haitian/tianyuan", "天元公寓", 3),
    ("hz/baiyang/dabei/wenhuiyuan", "文汇苑", 4),
];

const BUS_STATUSES: &[&str] = &[
    "received",
    "answered_on_site",
    "assigned",
    "in_progress",
    "resolved",
    "resolved",
    "withdrawn",
];
const OFFICE_STATUSES: &[&str] = &[
    "received",
    "assigned",
    "in_progress",
    "resolved",
    "evaluated",
    "evaluated",
    "withdrawn",
];
const SATISFACTION: &[&str] = &[
    "satisfied",
    "satisfied",
    "basically_satisfied",
    "dissatisfied",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A phone at the protocol level.
struct Phone {
    url: String,
    user: String,
    token: String,
    actor: ActorId,
    cursor: Cursor,
    agent: ureq::Agent,
    dice: Dice,
    /// Its bus run (bus phones): cases raised on the bus link to it.
    run: Option<String>,
    /// Pushes so far.
    pushes: usize,
}

impl Phone {
    fn login(url: &str, user: &str, seed: u64) -> Self {
        Self {
            url: url.to_string(),
            user: user.to_string(),
            token: login_token(url, user, &RecordId::new().to_string()),
            actor: ActorId::random(),
            cursor: Cursor::start(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            dice: Dice::new(seed),
            run: None,
            pushes: 0,
        }
    }

    fn is_bus(&self) -> bool {
        self.user.starts_with("bus")
    }

    fn push_of(
        doc: &RecordDoc,
        kind: RecordKind,
        change: &linli_sync_core::automerge::Change,
    ) -> PushChange {
        PushChange {
            record: *doc.id().as_bytes(),
            kind,
            part: Part::Record,
            change: change.raw_bytes().to_vec(),
        }
    }

    /// A bus run at `at`, to link cases to.
    fn new_run(&mut self, n: usize, at: i64) -> PushChange {
        let (estate, name, _) = self.dice.pick(&ESTATES[..2]);
        let day = day_of(at);
        let fields: Vec<(String, String)> = [
            ("session_type", "service_bus".to_string()),
            ("run_number", format!("{}", 1800 + n)),
            ("date", day),
            ("estate", name.to_string()),
            ("summary", format!("第{}班直通车走进{name}", 1800 + n)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let ctx = EditContext {
            actor: self.actor.clone(),
            user: self.user.clone(),
            now_ms: at,
        };
        let place: PlaceId = estate.parse().expect("demo place");
        let (doc, change) =
            RecordDoc::create(RecordId::new(), RecordKind::Bus, &place, &ctx, &fields)
                .expect("valid bus run");
        self.run = Some(doc.id().to_string());
        Self::push_of(&doc, RecordKind::Bus, &change)
    }

    /// Case `n`, created some time in the last year: bus phones file in 海天社区 without a
    /// deadline (the office sets those); office phones anywhere in the street, with deadlines
    /// and evaluations.
    fn new_case(&mut self, n: usize, now: i64) -> PushChange {
        let d = &mut self.dice;
        let (category, departments, summary, details) = d.pick(PROBLEMS);
        let bus = self.user.starts_with("bus");
        let (estate, name, buildings) = if bus {
            d.pick(&ESTATES[..2])
        } else {
            d.pick(ESTATES)
        };
        let building = 1 + d.below(buildings);
        let place = if d.below(2) == 0 {
            format!("{estate}/b{building}")
        } else {
            estate.to_string()
        };
        let created_at =
            now - 60_000 - d.below(365) as i64 * DAY_MS - d.below(36_000) as i64 * 1000;
        let status = if bus {
            d.pick(BUS_STATUSES)
        } else {
            d.pick(OFFICE_STATUSES)
        };
        let mut fields: Vec<(&str, String)> = vec![
            ("category", category.into()),
            (
                "summary",
                format!("{name}{building}幢：{summary}（第{n}号）"),
            ),
            ("details", details.into()),
            ("building", format!("{building}幢")),
            ("unit", format!("{}单元", 1 + d.below(3))),
            ("room", format!("{}0{}", 1 + d.below(18), 1 + d.below(4))),
            ("status", status.into()),
            ("departments", departments.into()),
        ];
        let linked = bus && d.below(5) == 0;
        match (&self.run, linked) {
            (Some(run), true) => {
                fields.push(("source", "bus_session".into()));
                fields.push(("session_id", run.clone()));
            }
            _ => fields.push((
                "source",
                (d.pick(&["hotline", "steward_contact", "other", "hotline"])).into(),
            )),
        }
        if !bus {
            fields.push((
                "deadline",
                day_of(created_at + (7 + d.below(24) as i64) * DAY_MS),
            ));
            if status == "evaluated" {
                fields.push(("satisfaction", (d.pick(SATISFACTION)).into()));
            }
        }
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let ctx = EditContext {
            actor: self.actor.clone(),
            user: self.user.clone(),
            now_ms: created_at,
        };
        let place: PlaceId = place.parse().expect("demo place");
        let (doc, change) =
            RecordDoc::create(RecordId::new(), RecordKind::Case, &place, &ctx, &fields)
                .expect("valid case");
        Self::push_of(&doc, RecordKind::Case, &change)
    }

    fn sync(&mut self, changes: Vec<PushChange>) {
        let body = SyncRequest {
            cursor: self.cursor.clone(),
            changes,
            max_pull: 1,
        }
        .encode();
        let (status, bytes) = post_sync(&self.agent, &self.url, &self.token, &body);
        assert!(
            status == 200,
            "sync answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let reply = SyncResponse::decode(&bytes).expect("reply decodes");
        assert!(
            reply.rejected.is_empty(),
            "rejected: {:?}",
            reply.rejected.first()
        );
        self.cursor = reply.cursor;
        self.pushes += 1;
    }
}

/// `YYYY-MM-DD` of a time in ms, in China time (as the server derives a case's day).
fn day_of(ms: i64) -> String {
    let days = (ms / 1000 + 8 * 3600).div_euclid(86_400);
    civil(days)
}

/// Days since 1970-01-01 to `YYYY-MM-DD` (Howard Hinnant's algorithm).
fn civil(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Seeds `n` cases with `phones` phones pushing at once; returns the time it took.
fn seed(url: &str, n: usize, phones: usize, per_push: usize) -> Duration {
    let users = ["office1", "bus1", "bus2"];
    let now = now_ms();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let runs = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for p in 0..phones {
            let (next, done, runs) = (&next, &done, &runs);
            s.spawn(move || {
                let mut phone = Phone::login(url, users[p % users.len()], 7 + p as u64);
                loop {
                    let first = next.fetch_add(per_push, Ordering::SeqCst);
                    if first >= n {
                        break;
                    }
                    let last = (first + per_push).min(n);
                    let mut batch = Vec::with_capacity(per_push + 1);
                    // A bus phone starts a new run every ten pushes.
                    if phone.is_bus() && phone.pushes.is_multiple_of(10) {
                        let r = runs.fetch_add(1, Ordering::SeqCst);
                        let at = now - phone.dice.below(365) as i64 * DAY_MS;
                        batch.push(phone.new_run(r, at));
                    }
                    for i in first..last {
                        batch.push(phone.new_case(i, now));
                    }
                    phone.sync(batch);
                    let total = done.fetch_add(last - first, Ordering::SeqCst) + (last - first);
                    if total % 10_000 < per_push {
                        eprintln!(
                            "  seeded {total} cases in {:.0} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// The browser side.

/// One page fetch: its body and time, or its status and time when it is not a 200 with a page.
fn try_page(
    agent: &ureq::Agent,
    base: &str,
    cookie: &str,
    path: &str,
) -> Result<(String, Duration), (u16, Duration)> {
    let started = Instant::now();
    let mut resp = agent
        .get(format!("{base}{path}"))
        .header("Cookie", cookie)
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {path} body: {e}"));
    let elapsed = started.elapsed();
    if status != 200 || body.is_empty() {
        eprintln!("GET {path} answered {status} after {elapsed:?}");
        return Err((status, elapsed));
    }
    Ok((body, elapsed))
}

/// As [`try_page`], for pages the benchmark cannot go on without.
fn get_page(agent: &ureq::Agent, base: &str, cookie: &str, path: &str) -> (String, Duration) {
    try_page(agent, base, cookie, path)
        .unwrap_or_else(|(status, _)| panic!("GET {path} answered {status}"))
}

/// Record ids linked from a queue page.
fn ids_in(page: &str) -> Vec<String> {
    page.split("href=\"/office/records/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|id| id.len() == 36 && !id.contains('?'))
        .map(String::from)
        .collect()
}

/// The next-page link of a queue page, as a path.
fn next_link(page: &str) -> Option<String> {
    let at = page.find("id=\"next-page\" href=\"")? + "id=\"next-page\" href=\"".len();
    Some(page[at..].split('"').next()?.replace("&amp;", "&"))
}

/// The request kinds of the mixed load, in report order.
const KINDS: &[&str] = &[
    "queue, filtered",
    "queue, searched (3+ characters)",
    "queue, searched (2 characters)",
    "queue, next pages (after cursor, pages 2–6)",
    "record page (detail)",
    "statistics, whole street",
    "statistics, community + 3 months",
    "queue, overdue",
];

const PLACES: &[&str] = &[
    "hz/baiyang",
    "hz/baiyang/haitian",
    "hz/baiyang/dabei",
    "hz/baiyang/haitian/haitiancheng",
    "hz/baiyang/haitian/tianyuan",
    "hz/baiyang/dabei/wenhuiyuan",
    "hz/baiyang/haitian/haitiancheng/b3",
];
const CATEGORIES: &[&str] = &[
    "fire_safety",
    "rental_housing",
    "dogs",
    "waste_sorting",
    "parking",
    "noise",
    "property_management",
];
const STATUSES: &[&str] = &[
    "received",
    "assigned",
    "in_progress",
    "resolved",
    "evaluated",
];
/// Search words of three characters or more (the trigram index) ...
const LONG_TERMS: &[&str] = &[
    "电动车",
    "消防通道",
    "垃圾分类",
    "广场舞",
    "遛狗不牵绳",
    "天花板",
    "老年活动室",
    "电梯 故障",
];
/// ... and of two (a LIKE scan of the text table).
const SHORT_TERMS: &[&str] = &["漏水", "噪音", "停车", "物业", "路灯", "群租"];

/// A filtered queue path.
fn filtered(d: &mut Dice) -> String {
    let mut q = vec!["kind=case".to_string()];
    match d.below(4) {
        0 => q.push(format!("category={}", d.pick(CATEGORIES))),
        1 => q.push(format!("status={}", d.pick(STATUSES))),
        2 => q.push(format!("place={}", enc(d.pick(PLACES)))),
        _ => {
            q.push(format!("place={}", enc(d.pick(PLACES))));
            q.push(format!("category={}", d.pick(CATEGORIES)));
            q.push(format!("status={}", d.pick(STATUSES)));
        }
    }
    match d.below(4) {
        0 => q.push("sort=created".into()),
        1 => q.push("sort=deadline".into()),
        _ => {}
    }
    format!("/office/records?{}", q.join("&"))
}

/// Open cases past their deadline (the office phones' cases carry deadlines), in one of the
/// orders, in the street or one of its places.
fn overdue(d: &mut Dice) -> String {
    let mut q = vec!["kind=case".to_string(), "overdue=1".to_string()];
    if d.below(2) == 0 {
        q.push(format!("place={}", enc(d.pick(PLACES))));
    }
    match d.below(3) {
        0 => q.push("sort=created".into()),
        1 => q.push("sort=deadline".into()),
        _ => {}
    }
    format!("/office/records?{}", q.join("&"))
}

fn searched(d: &mut Dice, terms: &[&str]) -> String {
    let mut q = vec!["kind=case".to_string(), format!("q={}", enc(d.pick(terms)))];
    if d.below(2) == 0 {
        q.push(format!("place={}", enc(d.pick(PLACES))));
    }
    format!("/office/records?{}", q.join("&"))
}

fn stats_period(d: &mut Dice, today: i64) -> String {
    let community = d.pick(&["hz/baiyang/haitian", "hz/baiyang/dabei"]);
    let end = today - d.below(270) as i64 * DAY_MS;
    let start = end - 91 * DAY_MS;
    format!(
        "/office/stats?place={}&from={}&to={}",
        enc(community),
        day_of(start),
        day_of(end)
    )
}

/// Latencies per kind, and how many of them were not a 200 with a page (their latency is
/// counted too: a timeout is part of what the user waited).
type Samples = Mutex<BTreeMap<&'static str, (Vec<Duration>, usize)>>;

fn record(samples: &Samples, kind: &'static str, r: &Result<(String, Duration), (u16, Duration)>) {
    let mut s = samples.lock().expect("samples");
    let e = s.entry(kind).or_default();
    match r {
        Ok((_, d)) => e.0.push(*d),
        Err((_, d)) => {
            e.0.push(*d);
            e.1 += 1;
        }
    }
}

/// One request of `kind` (several for the paged kind), recorded in `samples`.
fn one_request(
    kind: &'static str,
    base: &str,
    cookie: &str,
    agent: &ureq::Agent,
    d: &mut Dice,
    ids: &[String],
    samples: &Samples,
) {
    let today = now_ms();
    let path = match kind {
        "queue, filtered" => filtered(d),
        "queue, searched (3+ characters)" => searched(d, LONG_TERMS),
        "queue, searched (2 characters)" => searched(d, SHORT_TERMS),
        "queue, overdue" => overdue(d),
        "queue, next pages (after cursor, pages 2–6)" => {
            // The first page is a filtered or searched one (not recorded here); then follow the
            // next-page links.
            let first = if d.below(3) == 0 {
                searched(d, LONG_TERMS)
            } else {
                filtered(d)
            };
            let Ok((mut page, _)) = try_page(agent, base, cookie, &first) else {
                return;
            };
            for _ in 0..5 {
                let Some(next) = next_link(&page) else { break };
                let r = try_page(agent, base, cookie, &next);
                record(samples, kind, &r);
                let Ok((body, _)) = r else { break };
                page = body;
            }
            return;
        }
        "record page (detail)" => format!("/office/records/{}", ids[d.below(ids.len())]),
        "statistics, whole street" => "/office/stats?place=hz/baiyang".to_string(),
        "statistics, community + 3 months" => stats_period(d, today),
        _ => unreachable!("unknown kind"),
    };
    let r = try_page(agent, base, cookie, &path);
    record(samples, kind, &r);
}

/// Weights of the kinds in the mixed load (the paged kind makes up to five requests).
const WEIGHTS: &[usize] = &[4, 3, 2, 1, 4, 1, 1, 1];

fn pick_kind(d: &mut Dice) -> &'static str {
    let total: usize = WEIGHTS.iter().sum();
    let mut r = d.below(total);
    for (k, w) in KINDS.iter().zip(WEIGHTS) {
        if r < *w {
            return k;
        }
        r -= w;
    }
    KINDS[0]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.0}")
    }
}

fn print_table(samples: BTreeMap<&'static str, (Vec<Duration>, usize)>, elapsed: Option<Duration>) {
    println!(
        "| request | count | not 200 | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|"
    );
    let (mut all, mut failed) = (0, 0);
    for kind in KINDS {
        let Some((lat, errors)) = samples.get(kind) else {
            continue;
        };
        let mut lat = lat.clone();
        lat.sort();
        all += lat.len();
        failed += errors;
        println!(
            "| {kind} | {} | {errors} | {} | {} | {} | {} |",
            lat.len(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.95)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().expect("non-empty"))
        );
    }
    if let Some(e) = elapsed {
        println!(
            "\n{all} requests in {:.1} s: {:.0} requests/s; {}.\n",
            e.as_secs_f64(),
            all as f64 / e.as_secs_f64(),
            if failed == 0 {
                "every one a 200 with a page".to_string()
            } else {
                format!("{failed} not a 200 with a page")
            }
        );
    } else {
        println!();
    }
}

// ---------------------------------------------------------------------------------------------
// Memory.

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(k: u64) -> String {
    format!("{:.1}", k as f64 / 1024.0)
}

/// Samples the server's resident memory every 100 ms while `f` runs: (result, peak VmRSS KiB).
fn with_rss_polling<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(status_kib(pid, "VmRSS:").unwrap_or(0));
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if let Some(k) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(k, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Stops the sampler even if `f` panics, so the scope can end.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop(&stop);
        f()
    });
    (out, peak.load(Ordering::SeqCst))
}

/// Resets the process's peak resident memory (VmHWM) to its current size.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Downloads an export: (bytes, lines, time to the last byte).
fn download(base: &str, cookie: &str, path: &str) -> (u64, u64, Duration) {
    let started = Instant::now();
    let resp = agent()
        .get(format!("{base}{path}"))
        .header("Cookie", cookie)
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut lines) = (0u64, 0u64);
    loop {
        let n = reader.read(&mut buf).expect("export body");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
    (bytes, lines, started.elapsed())
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("data dir");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    println!("## Back-office (issue 9)\n");
    println!(
        "Command: `cargo run --release -p linli-tests --bin linli-office-bench -- --cases {} --workers {} --duration {}` on {cores} cores (the load tool runs on the same cores as the server); real `linli-server serve --demo` (release), SQLite store on local disk, rate limits off (`LINLI_RATE_LIMIT=0`, `LINLI_LOGIN_RATE_LIMIT=0`).\n",
        args.cases, args.workers, args.duration
    );

    // 1. Seed through the sync path (or reuse a seeded directory).
    let marker = dir.join(SEEDED_MARKER);
    let seeded: Option<usize> = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let mut server = ServerProcess::start_with_env(&dir, NO_RATE_LIMITS);
    println!("### Data\n");
    match seeded {
        Some(n) => {
            println!(
                "{n} cases seeded by an earlier run into `{}` (seeding skipped).\n",
                dir.display()
            );
        }
        None => {
            eprintln!("seeding {} cases with {} phones", args.cases, args.phones);
            let took = seed(&server.url, args.cases, args.phones, args.per_push);
            let peak = server.pid().and_then(|p| status_kib(p, "VmHWM:"));
            std::fs::write(&marker, args.cases.to_string()).expect("marker");
            println!("| figure | value |\n|---|---|");
            println!(
                "| cases seeded through `POST /v1/sync` | {} ({} phones at once, {} cases per push, users office1/bus1/bus2) |",
                args.cases, args.phones, args.per_push
            );
            println!("| seeding time | {:.1} s |", took.as_secs_f64());
            println!(
                "| cases per second | {:.0} |",
                args.cases as f64 / took.as_secs_f64()
            );
            println!(
                "| server peak memory while seeding (VmHWM) | {} MiB |",
                peak.map(mib).unwrap_or_else(|| "n/a".into())
            );
        }
    }
    let db_bytes: u64 = ["linli.db", "linli.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    if seeded.is_none() {
        println!(
            "| database on disk | {:.0} MiB |\n",
            db_bytes as f64 / 1048576.0
        );
    }
    // Measure a server as it starts over this data, not one still holding the seeding's memory.
    server.restart();
    let pid = server.pid().expect("server pid");
    let base = server.url.clone();
    let start_rss = status_kib(pid, "VmRSS:").unwrap_or(0);

    let cookies: Vec<String> = (0..args.sessions.max(1)).map(|_| sign_in(&base)).collect();
    let after_login_rss = status_kib(pid, "VmRSS:").unwrap_or(0);

    // Record ids for the detail pages, from a few queue views.
    let a = agent();
    let mut ids: Vec<String> = vec![];
    for path in [
        "/office/records?kind=case".to_string(),
        "/office/records?kind=case&sort=created".to_string(),
        "/office/records?kind=case&sort=deadline".to_string(),
        format!("/office/records?kind=case&q={}", enc("消防通道")),
        format!(
            "/office/records?kind=case&place={}",
            enc("hz/baiyang/dabei")
        ),
    ] {
        let (mut page, _) = get_page(&a, &base, &cookies[0], &path);
        for _ in 0..4 {
            ids.extend(ids_in(&page));
            let Some(next) = next_link(&page) else { break };
            page = get_page(&a, &base, &cookies[0], &next).0;
        }
    }
    ids.sort();
    ids.dedup();
    assert!(ids.len() > 100, "found {} record ids", ids.len());
    eprintln!("{} record ids for detail pages", ids.len());

    // 2a. One request at a time: service time without queueing.
    let samples: Samples = Mutex::new(BTreeMap::new());
    let mut d = Dice::new(42);
    for kind in KINDS {
        for _ in 0..args.sequential {
            one_request(kind, &base, &cookies[0], &a, &mut d, &ids, &samples);
        }
    }
    println!(
        "### One request at a time ({} of each kind)\n",
        args.sequential
    );
    print_table(samples.into_inner().expect("samples"), None);

    // 2b. Mixed load from concurrent workers.
    eprintln!(
        "mixed load: {} workers for {} s",
        args.workers, args.duration
    );
    let samples: Samples = Mutex::new(BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let (_, load_peak) = with_rss_polling(pid, || {
        std::thread::scope(|s| {
            for w in 0..args.workers {
                let (samples, ids, cookies, base) = (&samples, &ids, &cookies, &base);
                s.spawn(move || {
                    let agent = agent();
                    let cookie = &cookies[w % cookies.len()];
                    let mut d = Dice::new(1000 + w as u64);
                    while Instant::now() < deadline {
                        let kind = pick_kind(&mut d);
                        one_request(kind, base, cookie, &agent, &mut d, ids, samples);
                    }
                });
            }
        })
    });
    let elapsed = started.elapsed();
    println!(
        "### Mixed load: {} workers for {} s ({} signed-in sessions)\n",
        args.workers,
        args.duration,
        cookies.len()
    );
    print_table(samples.into_inner().expect("samples"), Some(elapsed));

    let hwm_before_exports = status_kib(pid, "VmHWM:").unwrap_or(0);

    // 3. Exports, with the server's memory.
    let mut export_rows = vec![];
    if !args.no_export {
        let today = now_ms();
        let ranges: Vec<(String, String)> = vec![
            (
                "about 1% (4 days)".into(),
                format!(
                    "&from={}&to={}",
                    day_of(today - 100 * DAY_MS),
                    day_of(today - 97 * DAY_MS)
                ),
            ),
            (
                "about 10% (37 days)".into(),
                format!(
                    "&from={}&to={}",
                    day_of(today - 200 * DAY_MS),
                    day_of(today - 164 * DAY_MS)
                ),
            ),
            ("all".into(), String::new()),
        ];
        for (label, range) in &ranges {
            for ext in ["csv", "xlsx"] {
                let path = format!("/office/records/export.{ext}?kind=case{range}");
                eprintln!("export {path}");
                let before = status_kib(pid, "VmRSS:").unwrap_or(0);
                let reset = reset_peak(pid);
                let ((bytes, lines, took), polled) =
                    with_rss_polling(pid, || download(&base, &cookies[0], &path));
                let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
                let after = status_kib(pid, "VmRSS:").unwrap_or(0);
                let peak = if reset { hwm.max(polled) } else { polled };
                let rows = if ext == "csv" {
                    Some(lines.saturating_sub(1))
                } else {
                    None
                };
                export_rows.push((label.clone(), ext, rows, bytes, took, before, peak, after));
            }
        }
        println!("### Exports (kind=case, whole street, one at a time)\n");
        println!(
            "| rows | format | rows exported | bytes | time to last byte | server RSS before | peak during | after |\n|---|---|---|---|---|---|---|---|"
        );
        let mut last_rows = None;
        for (label, ext, rows, bytes, took, before, peak, after) in export_rows {
            if rows.is_some() {
                last_rows = rows;
            }
            println!(
                "| {label} | {ext} | {} | {:.1} MiB | {:.2} s | {} MiB | {} MiB | {} MiB |",
                rows.or(last_rows).map_or("—".into(), |r| r.to_string()),
                bytes as f64 / 1048576.0,
                took.as_secs_f64(),
                mib(before),
                mib(peak),
                mib(after)
            );
        }
        println!(
            "\nPeak during: the larger of VmRSS polled every 100 ms and VmHWM, reset (`/proc/PID/clear_refs`) before each export.\n"
        );
    }

    println!("### Server memory\n");
    println!("| when | VmRSS |\n|---|---|");
    println!(
        "| started over the seeded database | {} MiB |",
        mib(start_rss)
    );
    println!(
        "| after {} sign-ins | {} MiB |",
        cookies.len(),
        mib(after_login_rss)
    );
    println!(
        "| peak during the mixed load (polled every 100 ms) | {} MiB |",
        mib(load_peak)
    );
    println!(
        "| peak from start to the end of the mixed load (VmHWM) | {} MiB |",
        mib(hwm_before_exports)
    );
    println!(
        "| at the end, after the exports | {} MiB |",
        mib(status_kib(pid, "VmRSS:").unwrap_or(0))
    );
    println!(
        "\nDatabase: {:.0} MiB on disk (`linli.db` and its WAL) in `{}`.",
        db_bytes as f64 / 1048576.0,
        display(&dir, args.data_dir.is_some())
    );
}

fn display(dir: &Path, kept: bool) -> String {
    if kept {
        dir.display().to_string()
    } else {
        "a temporary directory".into()
    }
}
