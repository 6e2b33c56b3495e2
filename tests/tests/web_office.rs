//! The back-office in a browser's shoes, over plain HTTP: who may sign in, what office staff see
//! of other streets, forged and cross-site form posts, sign-out, idle expiry, untrusted text, and
//! office edits reaching phones. (The full click-through in headless Chromium is in
//! `browser_office.rs`.)

use crate::common::web::{self, Web};
use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const XSS: &str = "<img src=x onerror=alert(1)>";

fn server() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(dir.path(), &[("LINLI_WEB_IDLE_SECS", "3")]);
    (dir, server)
}

fn office(server: &ServerProcess) -> Web {
    web::sign_in(&server.url, "office1")
        .unwrap_or_else(|a| panic!("office1 signs in: {}", a.status))
}

#[test]
fn stewards_and_bus_teams_are_sent_to_the_phone_app() {
    let (_dir, server) = server();
    for user in ["steward1", "bus1"] {
        let refused = web::sign_in(&server.url, user).err().expect("no session");
        assert_eq!(refused.status, 403, "{user}");
        assert!(refused.body.contains("请使用手机应用"), "{}", refused.body);
        assert!(
            refused
                .cookies
                .iter()
                .all(|c| !c.starts_with("linli_session="))
        );
    }
    // A wrong password is a plain refusal on the form.
    let page = web::sign_in(&server.url, "nobody")
        .err()
        .expect("no session");
    assert_eq!(page.status, 401);
    assert!(page.body.contains("用户名或密码错误"));
}

#[test]
fn the_session_cookie_is_http_only_and_same_site_strict() {
    let (_dir, server) = server();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut login = agent.get(&format!("{}/login", server.url)).call().unwrap();
    let pre = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let token = web::csrf_in(&login.body_mut().read_to_string().unwrap()).unwrap();
    let r = agent
        .post(&format!("{}/login", server.url))
        .header("Cookie", pre.split(';').next().unwrap())
        .content_type("application/x-www-form-urlencoded")
        .send(web::form(&[
            ("_csrf", &token),
            ("username", "office1"),
            ("password", DEMO_PASSWORD),
        ]))
        .unwrap();
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("linli_session="))
        .expect("a session cookie")
        .to_string();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    // Over plain HTTP (loopback, no TLS) neither cookie is `Secure`, or browsers would drop them;
    // over TLS both are (web_office_more::over_tls_the_session_and_login_cookies_are_secure).
    assert!(!session.contains("Secure"), "{session}");
    assert!(!pre.contains("Secure"), "{pre}");
    // A login form posted without its own token (login CSRF) opens no session.
    let forged = agent
        .post(&format!("{}/login", server.url))
        .content_type("application/x-www-form-urlencoded")
        .send(web::form(&[
            ("username", "office1"),
            ("password", DEMO_PASSWORD),
        ]))
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[test]
fn office_staff_see_their_street_only_and_forged_posts_change_nothing() {
    let (_dir, server) = server();
    // Another street with its own team, outside 白杨街道.
    other_street(&server);
    let xiasha = Phone::login(&server, "xs1");
    let theirs = xiasha.create(
        "case",
        "hz/xiasha",
        &[
            ("category", "parking"),
            ("summary", "下沙停车难"),
            ("source", "bus_session"),
            ("status", "received"),
        ],
    );
    xiasha.sync();
    let bus1 = Phone::login(&server, "bus1");
    let ours = bus1.create(
        "case",
        B3,
        &[
            ("category", "fire_safety"),
            ("summary", XSS),
            ("source", "bus_session"),
            ("status", "received"),
        ],
    );
    bus1.sync();

    let office1 = office(&server);
    let outside = office1.get(&format!("/office/records/{theirs}"));
    assert_eq!(
        outside.status, 404,
        "another street's record is as if missing"
    );
    assert!(!outside.body.contains("下沙停车难"));
    let queue = office1.get("/office/records");
    assert!(queue.body.contains(&ours) && !queue.body.contains(&theirs));
    let csv = office1.get("/office/records/export.csv");
    assert_eq!(csv.status, 200);
    assert!(!csv.body.contains("下沙停车难"));
    let admin = web::sign_in(&server.url, "admin").unwrap_or_else(|a| panic!("{}", a.status));
    assert_eq!(admin.get(&format!("/office/records/{theirs}")).status, 200);
    // Office staff reach no administration page.
    assert_eq!(office1.get("/admin/users").status, 403);

    // Untrusted text renders as text, in the queue, the record and the export.
    let detail = office1.get(&format!("/office/records/{ours}"));
    for page in [&queue.body, &detail.body] {
        assert!(
            !page.contains(XSS),
            "raw markup from a phone reached a page"
        );
        assert!(page.contains("&#60;img src=x onerror=alert(1)&#62;"));
    }
    assert!(
        csv.body.contains(XSS),
        "the export keeps the summary as text"
    );

    // A post without the session's CSRF token, or from another site, changes nothing.
    let note = format!("/office/records/{ours}/note");
    let forged = office1.post_raw(&note, &[("text", "伪造的备注")]);
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("安全令牌"));
    let wrong = office1.post_raw(&note, &[("_csrf", &"0".repeat(64)), ("text", "伪造的备注")]);
    assert_eq!(wrong.status, 403);
    assert!(
        !office1
            .get(&format!("/office/records/{ours}"))
            .body
            .contains("伪造的备注")
    );
    bus1.sync();
    assert!(
        bus1.value(&ours)
            .get("notes")
            .and_then(|n| n.as_array())
            .is_none_or(|n| n.is_empty())
    );

    // The real form works, and the phone pulls the note with its author.
    let ok = office1.post(&note, &[("text", "已联系消防大队")]);
    assert_eq!(ok.status, 303, "{}", ok.body);
    bus1.sync();
    let notes = bus1.value(&ours)["notes"].clone();
    assert_eq!(notes[0]["text"], "已联系消防大队");
    assert_eq!(notes[0]["author"], "office1");
    // An edit outside the grants is as if the record did not exist.
    assert_eq!(
        office1
            .post(&format!("/office/records/{theirs}/note"), &[("text", "x")])
            .status,
        404
    );
}

#[test]
fn signing_out_or_idling_ends_the_session() {
    let (_dir, server) = server();
    let office1 = office(&server);
    let out = office1.post("/logout", &[]);
    assert_eq!(out.status, 303);
    assert!(out.cookies.iter().any(|c| c.starts_with("linli_session=;")));
    let after = office1.get("/office/records");
    assert_eq!(after.status, 303);
    assert!(after.location.unwrap().starts_with("/login"));

    // Idle for longer than the server allows (3 s here): signed out.
    let idle = office(&server);
    assert_eq!(idle.get("/office/stats").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(idle.get("/office/stats").status, 303);
}

/// The text of the figure labelled `label` on the statistics page.
fn figure(page: &str, label: &str) -> String {
    let key = format!("data-figure=\"{label}\">");
    let at = page
        .find(&key)
        .unwrap_or_else(|| panic!("no figure {label}"))
        + key.len();
    page[at..].split('<').next().unwrap().to_string()
}

/// The ids of the records a queue page lists.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("data-id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

#[test]
fn statistics_are_computed_from_the_records_at_request_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(dir.path(), &[("LINLI_DEMO_RECORDS", "true")]);
    let office1 = office(&server);
    let stats = office1.get("/office/stats");
    assert_eq!(stats.status, 200);
    // Run 1801 as its phones tallied it: 82 received, 79 answered on site.
    let row = stats
        .body
        .split("<tr>")
        .find(|r| r.contains(">1801<"))
        .expect("run 1801 is listed");
    assert!(
        row.contains("<td>82</td>") && row.contains("<td>79</td>"),
        "{row}"
    );
    // The problem list: 706 of 707 resolved.
    assert_eq!(figure(&stats.body, "诉求总数"), "707");
    assert_eq!(figure(&stats.body, "已办结"), "706");

    // Resolve the one open, overdue case from the office: the figure follows the records.
    let overdue = office1.get("/office/records?kind=case&overdue=1");
    let ids = listed_ids(&overdue.body);
    assert_eq!(ids.len(), 1, "one overdue case");
    let done = office1.post(
        &format!("/office/records/{}/resolution", ids[0]),
        &[("resolution", "已整改完毕"), ("satisfaction", "satisfied")],
    );
    assert_eq!(done.status, 303, "{}", done.body);
    let stats = office1.get("/office/stats");
    assert_eq!(figure(&stats.body, "已办结"), "707");
    assert!(
        office1
            .get("/office/records?kind=case&overdue=1")
            .body
            .contains("没有符合条件的记录")
    );

    // A period narrows every figure; links lead to the records behind them.
    let later = office1.get("/office/stats?from=2999-01-01");
    assert_eq!(figure(&later.body, "诉求总数"), "0");
    assert!(stats.body.contains("href=\"/office/records?kind=case"));
}

#[test]
fn an_admin_manages_users_grants_devices_and_places_from_the_browser() {
    let (_dir, server) = server();
    let admin = web::sign_in(&server.url, "admin").unwrap_or_else(|a| panic!("{}", a.status));
    // A place, then a steward on it, added through the forms.
    let place = admin.post(
        "/admin/places",
        &[
            ("id", "hz/baiyang/haitian/haitiancheng/b7"),
            ("name", "7幢"),
            ("level", "building"),
        ],
    );
    assert_eq!(place.status, 303, "{}", place.body);
    assert!(admin.get("/admin/places").body.contains("7幢"));
    let added = admin.post(
        "/admin/users",
        &[
            ("username", "steward7"),
            ("display_name", "赵楼长"),
            ("password", "a-long-password"),
            ("role", "steward"),
            ("place", "hz/baiyang/haitian/haitiancheng/b7"),
        ],
    );
    assert_eq!(added.status, 303, "{}", added.body);
    let users = admin.get("/admin/users");
    assert!(users.body.contains("steward7") && users.body.contains("赵楼长"));
    // Bad input is explained, and nothing is created.
    let bad = admin.post(
        "/admin/users",
        &[
            ("username", "X y"),
            ("password", "short"),
            ("role", "steward"),
        ],
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("无法保存"));

    // The new steward's phone works; a password reset ends its session, and a device revoked
    // from the browser can no longer sync.
    let phone = Phone::login(&server, "bus1");
    phone.sync();
    let devices = admin.get("/admin/devices");
    let device = phone.client.whoami().unwrap().device_id;
    assert!(devices.body.contains(&device), "the phone is listed");
    let revoked = admin.post(&format!("/admin/devices/{device}/revoke"), &[]);
    assert_eq!(revoked.status, 303);
    assert!(admin.get("/admin/devices").body.contains("已吊销"));
    assert!(phone.client.sync().is_err(), "a revoked phone is refused");

    let office1 = office(&server);
    let reset = admin.post(
        "/admin/users/office1/password",
        &[("password", "another-password-1")],
    );
    assert_eq!(reset.status, 303);
    assert_eq!(
        office1.get("/office/records").status,
        303,
        "the old session ended"
    );
    let disabled = admin.post("/admin/users/steward7/disable", &[]);
    assert_eq!(disabled.status, 303);
    assert!(admin.get("/admin/users").body.contains("已停用"));
    // Rejected pushes and keys are listed; rotating keys keeps the admin signed in.
    assert_eq!(admin.get("/admin/rejections").status, 200);
    assert_eq!(admin.post("/admin/keys/rotate", &[]).status, 303);
    assert_eq!(admin.get("/admin/keys").status, 200);
}
