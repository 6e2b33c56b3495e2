//! Issue 9, story 1, in a real headless Chromium: two `linli-field` phones work bus run 1801 and
//! disagree offline about a case's status; office staff sign in through the form, filter the
//! queue to the run, resolve the conflict, hand the case to the fire brigade with a deadline and
//! export the list to Excel; the phones pull the office's work with its author. Around it: who
//! may not sign in, another street's record, a forged post, untrusted text, and an open list
//! that updates itself when a phone syncs. Screenshots of the main pages land in
//! `target/screenshots/`.

use std::path::Path;
use std::thread;

use calamine::{Data, DataType, Reader, Xlsx};
use linli_tests::browser::Browser;
use serde_json::Value;

use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const XSS: &str = "<img src=x onerror=alert(1)>";
const SUMMARY: &str = "3幢楼道堆放杂物，堵塞消防通道";
const DEADLINE: &str = "2030-01-15";

/// A phone's login through the CLI.
fn field_login(home: &Path, server: &ServerProcess, user: &str) {
    field(
        home,
        &[
            "login",
            "--server",
            &server.url,
            "--user",
            user,
            "--password",
            DEMO_PASSWORD,
        ],
    );
}

/// Creates a record on a phone and returns its id.
fn field_new(home: &Path, kind: &str, place: &str, fields: &[&str]) -> String {
    let mut args = vec!["new", kind, "--place", place];
    args.extend_from_slice(fields);
    let made = field(home, &args);
    made["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {made}"))
        .to_string()
}

/// Signs `user` in through the login form of the server at `base`.
fn sign_in(b: &Browser, base: &str, user: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("#username", user);
    b.fill("#password", DEMO_PASSWORD);
    b.click("#login");
}

/// The HTTP status of a same-origin request the page makes with its cookies (`init`: fetch's
/// options as a JavaScript object literal).
fn fetch_status(b: &Browser, url: &str, init: &str) -> u16 {
    let js = format!(
        "return fetch({}, Object.assign({{credentials: 'same-origin', redirect: 'manual'}}, {init}))\
         .then(r => r.status)",
        Value::from(url)
    );
    let status = b.execute(&js);
    status
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or_else(|| panic!("fetch {url} gave {status}"))
}

#[test]
fn office_staff_work_run_1801_in_a_real_browser() {
    let started = std::time::Instant::now();
    // The statistics screenshot wants the demo records: that server seeds them meanwhile.
    let demo = thread::spawn(|| {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start_with_env(dir.path(), &[("LINLI_DEMO_RECORDS", "true")]);
        (dir, server)
    });

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let base = server.url.clone();
    // Another street with its own team, outside 白杨街道.
    other_street(&server);

    let homes: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (bus1, bus2, xs1) = (homes[0].path(), homes[1].path(), homes[2].path());
    field_login(bus1, &server, "bus1");
    field_login(bus2, &server, "bus2");
    field_login(xs1, &server, "xs1");

    // Run 1801 and a case raised on it, at building 3.
    let run = field_new(
        bus1,
        "bus",
        HAITIANCHENG,
        &[
            "session_type=service_bus",
            "run_number=1801",
            "estate=海天城小区",
        ],
    );
    let session_link = format!("session_id={run}");
    let summary = format!("summary={SUMMARY}");
    let case = field_new(
        bus1,
        "case",
        B3,
        &[
            "category=fire_safety",
            &summary,
            "source=bus_session",
            &session_link,
            "status=received",
        ],
    );
    // A case whose summary is markup, raised at the same building.
    let xss_summary = format!("summary={XSS}");
    let xss = field_new(
        bus1,
        "case",
        B3,
        &[
            "category=other",
            &xss_summary,
            "source=steward_contact",
            "status=received",
        ],
    );
    field(bus1, &["sync"]);
    field(bus2, &["sync"]);
    // Offline, each phone settles the case its own way; then both sync.
    field(bus1, &["set", &case, "status=assigned"]);
    field(bus2, &["set", &case, "status=answered_on_site"]);
    field(bus1, &["sync"]);
    field(bus2, &["sync"]);
    let theirs = field_new(
        xs1,
        "case",
        "hz/xiasha",
        &[
            "category=parking",
            "summary=下沙停车难",
            "source=bus_session",
            "status=received",
        ],
    );
    field(xs1, &["sync"]);
    let phones_done = started.elapsed();

    let b = Browser::start();

    // A steward is sent to the phone app, with no session.
    sign_in(&b, &base, "steward1");
    let refused = b.text("#use-phone");
    assert!(refused.contains("请使用手机应用"), "{refused}");
    assert!(b.cookie("linli_session").is_none());

    // Office staff sign in through the form and land on the queue.
    sign_in(&b, &base, "office1");
    b.wait_for_text("h1", "诉求列表");
    assert!(b.current_url().contains("/office/records"));
    b.wait_for_text("#rows", SUMMARY);

    // Filter to the run by its number, as staff know it.
    b.fill("#session", "1801");
    b.click("#apply");
    b.wait_for_text("#count", "共 1 条");
    let rows = b.text("#rows");
    assert!(rows.contains(SUMMARY) && rows.contains("冲突"), "{rows}");
    assert!(
        !rows.contains(XSS),
        "the other case is filtered out: {rows}"
    );
    assert!(b.current_url().contains("session=1801"));
    b.screenshot("queue");

    // The case: both values of the status, each with who set it.
    b.click(&format!("#rows tr[data-id='{case}'] a.title"));
    b.wait_for("#conflicts");
    let values = b.execute(
        "return Array.from(document.querySelectorAll(\
         '.conflict-box[data-field=status] tr.conflict-value')).map(tr => \
         [tr.cells[0].textContent.trim(), tr.querySelector('.who').textContent.trim()])",
    );
    let values: Vec<(String, String)> = serde_json::from_value(values).unwrap();
    assert_eq!(values.len(), 2, "{values:?}");
    let by = |status: &str| {
        values
            .iter()
            .position(|(v, _)| v.starts_with(status))
            .unwrap_or_else(|| panic!("no value {status} in {values:?}"))
    };
    let (assigned, on_site) = (by("转办"), by("现场解答"));
    assert_eq!(values[assigned].1, "李强（直通车）（bus1）");
    assert_eq!(values[on_site].1, "张伟（直通车）（bus2）");
    b.screenshot("detail-conflict");

    // Keep bus2's 现场解答: the conflict is gone.
    b.click(&format!(
        ".conflict-box[data-field=status] tr.conflict-value:nth-child({}) button.resolve",
        on_site + 1
    ));
    b.wait_for_text("#flash", "冲突已解决");
    assert_eq!(
        b.execute("return document.getElementById('conflicts') === null"),
        true
    );
    assert_eq!(b.text("#status-badge"), "现场解答");

    // Hand it to the fire brigade with a deadline. (Typing into a date input depends on the
    // browser's locale format; the value is set as a date picker would.)
    b.click("#assign-form input[name=departments][value=fire_brigade]");
    b.execute(&format!(
        "document.getElementById('deadline').value = '{DEADLINE}'"
    ));
    assert_eq!(
        b.execute("return document.getElementById('deadline').value"),
        DEADLINE
    );
    b.click("#assign");
    b.wait_for_text("#flash", "已转办");
    assert_eq!(b.text("#status-badge"), "转办");
    assert_eq!(b.text("dd[data-field=departments]"), "消防大队");
    assert_eq!(b.text("dd[data-field=deadline]"), DEADLINE);
    let history = b.text("#history");
    assert!(history.contains("office1"), "{history}");

    // Back to the run's list and export it to Excel.
    b.goto(&format!("{base}/office/records?session=1801"));
    b.wait_for_text("#rows", "消防大队");
    b.click("#export-xlsx");
    let xlsx = b.wait_for_download("xlsx");
    let mut book: Xlsx<_> = calamine::open_workbook(&xlsx).expect("an .xlsx workbook");
    let sheet = book
        .worksheet_range_at(0)
        .expect("a sheet")
        .expect("a readable sheet");
    let mut rows = sheet.rows();
    let header: Vec<String> = rows
        .next()
        .expect("a header row")
        .iter()
        .map(|c| c.to_string())
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let data: Vec<&[Data]> = rows.collect();
    assert_eq!(data.len(), 1, "one case on run 1801");
    let row = data[0];
    assert_eq!(row[col("编号")], Data::String(case.clone()));
    assert_eq!(row[col("类型")], Data::String("诉求".into()));
    assert_eq!(row[col("摘要")], Data::String(SUMMARY.into()));
    assert_eq!(row[col("状态")], Data::String("转办".into()));
    assert_eq!(row[col("责任部门")], Data::String("消防大队".into()));
    assert_eq!(row[col("所属班次")], Data::String(run.clone()));
    assert_eq!(
        row[col("办结时限")].as_date().map(|d| d.to_string()),
        Some(DEADLINE.to_string()),
        "a date cell: {:?}",
        row[col("办结时限")]
    );

    // The phone pulls the office's work, with its author.
    field(bus1, &["sync"]);
    let shown = field(bus1, &["show", &case]);
    assert_eq!(shown["value"]["status"], "assigned", "{shown}");
    assert_eq!(
        shown["value"]["departments"],
        serde_json::json!(["fire_brigade"])
    );
    assert_eq!(shown["value"]["deadline"], DEADLINE);
    assert_eq!(
        shown["conflicts"].as_array().map(Vec::len),
        Some(0),
        "{shown}"
    );
    let office_changes = shown["history"]
        .as_array()
        .expect("a history")
        .iter()
        .filter(|h| h["user"] == "office1")
        .count();
    assert_eq!(office_changes, 2, "resolving and assigning: {shown}");

    // Another street's record is as if it did not exist.
    let outside = format!("{base}/office/records/{theirs}");
    assert_eq!(fetch_status(&b, &outside, "{}"), 404);
    b.goto(&outside);
    assert!(!b.source().contains("下沙停车难"));

    // A form post without the session's CSRF token changes nothing.
    let note = format!("{base}/office/records/{case}/note");
    let forged = fetch_status(
        &b,
        &note,
        "{method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, \
         body: 'text=%E4%BC%AA%E9%80%A0'}",
    );
    assert_eq!(forged, 403);
    b.goto(&format!("{base}/office/records/{case}"));
    assert!(!b.text("#notes").contains("伪造"));

    // Markup from a phone is text: no element made of it, nothing run.
    b.goto(&format!("{base}/office/records/{xss}"));
    let title = b.execute("return document.getElementById('record-title').textContent");
    assert!(title.as_str().is_some_and(|t| t.contains(XSS)), "{title}");
    assert_eq!(
        b.execute(
            "return document.querySelectorAll('#record-title img').length \
             + document.querySelectorAll('img[src=x]').length"
        ),
        0
    );

    // An open list updates itself when a phone syncs: no reload (the marker survives).
    b.goto(&format!("{base}/office/records"));
    b.wait_for_text("#rows", SUMMARY);
    b.execute("window.__stayed = true");
    let live = "5幢电梯停运，老人出行困难";
    let live_summary = format!("summary={live}");
    let fresh = field_new(
        bus2,
        "case",
        B3,
        &[
            "category=facilities",
            &live_summary,
            "source=steward_contact",
            "status=received",
        ],
    );
    field(bus2, &["sync"]);
    b.wait_for_text("#rows", live);
    b.wait_for(&format!("#rows tr.fresh[data-id='{fresh}']"));
    assert_eq!(b.execute("return window.__stayed === true"), true);

    // The administrator's user list.
    b.click("#logout");
    b.wait_for("#login");
    sign_in(&b, &base, "admin");
    b.wait_for_text("h1", "诉求列表");
    b.goto(&format!("{base}/admin/users"));
    b.wait_for_text("body", "office1");
    b.screenshot("admin-users");

    // Statistics over the demo records.
    let (_demo_dir, demo) = demo.join().expect("the demo server starts");
    sign_in(&b, &demo.url, "office1");
    b.wait_for_text("h1", "诉求列表");
    // The queue over a street's worth of cases, for the README.
    b.goto(&format!(
        "{}/office/records?kind=case&sort=deadline",
        demo.url
    ));
    b.wait_for_text("#count", "共");
    b.screenshot("queue-demo");
    b.goto(&format!("{}/office/stats", demo.url));
    b.wait_for(".chart canvas");
    let charts = b.execute("return document.querySelectorAll('.chart').length");
    assert!(charts.as_u64().is_some_and(|n| n >= 2), "{charts} charts");
    // Every chart drawn on its canvas, its opening animation over.
    let all_drawn = "return Array.from(document.querySelectorAll('.chart')).every(c => \
                     c.dataset.drawn === '1' && c.querySelector('canvas'))";
    let deadline = std::time::Instant::now() + linli_tests::browser::WAIT;
    while b.execute(all_drawn) != true {
        assert!(
            std::time::Instant::now() < deadline,
            "charts not drawn within {:?}",
            linli_tests::browser::WAIT
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    b.screenshot("stats");

    b.close();
    eprintln!(
        "browser office story: phones {phones_done:?}, whole test {:?}",
        started.elapsed()
    );
}
