//! More of the back-office over HTTP, as issue 9 promised it: cookies marked `Secure` over TLS, a
//! bookmarked queue URL that restores its view, a bus session's page with its cases and tallies
//! (and a steward's contact linking the case it opened), the live event stream scoped to the
//! user's street and ended by sign-out, and phone text in statistics labels kept as text.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;

use calamine::{DataType, Reader, Xlsx};
use serde_json::Value;

use crate::common::web::{self, Web};
use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const TIANYUAN: &str = "hz/baiyang/haitian/tianyuan";
const XSS: &str = "<img src=x onerror=alert(1)>";

fn office(server: &ServerProcess) -> Web {
    web::sign_in(&server.url, "office1")
        .unwrap_or_else(|a| panic!("office1 signs in: {}", a.status))
}

/// Undoes HTML escaping of text and attribute values (named and numeric references).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The decoded `(name, value)` pairs of a URL's query.
fn query_pairs(url: &str) -> BTreeSet<(String, String)> {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The value of the option selected in `<select name="name">`, if any.
fn selected(page: &str, name: &str) -> Option<String> {
    let open = format!("<select name=\"{name}\"");
    let at = page
        .find(&open)
        .unwrap_or_else(|| panic!("no select {name}"));
    let select = &page[at..at + page[at..].find("</select>").unwrap()];
    select.split("<option").skip(1).find_map(|o| {
        let tag = &o[..o.find('>').unwrap()];
        let value = tag.split("value=\"").nth(1)?.split('"').next()?;
        tag.contains("selected").then(|| unescape(value))
    })
}

/// The value of `<input … name="name" … value="…">`.
fn input_value(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no input {name}"));
    let start = page[..at].rfind('<').unwrap();
    let tag = &page[start..at + page[at..].find('>').unwrap()];
    unescape(
        tag.split("value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap(),
    )
}

/// The ids of the records a queue page lists.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("data-id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

/// The text of the element that opens with `open` (e.g. `<div class="card" id="x">`) up to the
/// next `close`.
fn section<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let at = page
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in the page"));
    let end = page[at..].find(close).map_or(page.len(), |e| at + e);
    &page[at..end]
}

// ---------------------------------------------------------------------------------------------
// Cookies over TLS.

/// One HTTP/1.1 exchange over TLS, trusting only `ca_pem`: the status, the `Set-Cookie` values
/// and the body.
fn https(
    server: &ServerProcess,
    ca_pem: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> web::Answer {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = server.url.trim_start_matches("https://");
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        request.push_str(&format!("Cookie: {c}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tls.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A server that closes without a TLS close_notify still sent its whole answer first.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut cookies = Vec::new();
    let mut location = None;
    for line in lines {
        let (k, v) = line.split_once(':').unwrap();
        match k.trim().to_ascii_lowercase().as_str() {
            "set-cookie" => cookies.push(v.trim().to_string()),
            "location" => location = Some(v.trim().to_string()),
            _ => {}
        }
    }
    web::Answer {
        status,
        location,
        cookies,
        body: body.to_string(),
    }
}

fn set_cookie<'a>(cookies: &'a [String], name: &str) -> &'a str {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

#[test]
fn over_tls_the_session_and_login_cookies_are_secure() {
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::tls::ca("白杨街道 内网CA");
    crate::tls::server_cert(&ca, certs.path());
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        dir.path(),
        &[
            (
                "LINLI_TLS_CERT",
                certs.path().join("server.crt").to_str().unwrap(),
            ),
            (
                "LINLI_TLS_KEY",
                certs.path().join("server.key").to_str().unwrap(),
            ),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let form = https(&server, &ca.pem, "GET", "/login", None, None);
    assert_eq!(form.status, 200);
    let login = set_cookie(&form.cookies, "linli_login");
    assert!(login.contains("; Secure"), "{login}");
    assert!(login.contains("HttpOnly") && login.contains("SameSite=Strict"));
    let token = web::csrf_in(&form.body).expect("the form's token");
    let signed_in = https(
        &server,
        &ca.pem,
        "POST",
        "/login",
        Some(cookie_pair(login)),
        Some(&web::form(&[
            ("_csrf", &token),
            ("username", "office1"),
            ("password", DEMO_PASSWORD),
        ])),
    );
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let session = set_cookie(&signed_in.cookies, "linli_session");
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    // The login cookie is cleared with the same attributes, or browsers would keep it.
    assert!(set_cookie(&signed_in.cookies, "linli_login").contains("; Secure"));
    // The secure session works over https://.
    let queue = https(
        &server,
        &ca.pem,
        "GET",
        "/office/records",
        Some(cookie_pair(session)),
        None,
    );
    assert_eq!(queue.status, 200);
    assert!(queue.body.contains("诉求列表"));
}

// ---------------------------------------------------------------------------------------------
// A bookmarked queue.

fn case_fields<'a>(
    summary: &'a str,
    category: &'a str,
    status: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("category", category),
        ("summary", summary),
        ("source", "bus_session"),
        ("status", status),
    ]
}

#[test]
fn a_bookmarked_queue_url_restores_its_filters_and_its_next_page_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let bus1 = Phone::login(&server, "bus1");
    // One more than a page matches every filter…
    let matching: BTreeSet<String> = (0..51)
        .map(|i| {
            bus1.create(
                "case",
                B3,
                &case_fields(&format!("楼道堆物 第{i}处"), "fire_safety", "assigned"),
            )
        })
        .collect();
    // …and each of these misses exactly one.
    let misses = [
        bus1.create(
            "case",
            TIANYUAN,
            &case_fields("楼道堆物 别的小区", "fire_safety", "assigned"),
        ),
        bus1.create(
            "case",
            B3,
            &case_fields("楼道堆物 停车", "parking", "assigned"),
        ),
        bus1.create(
            "case",
            B3,
            &case_fields("楼道堆物 刚受理", "fire_safety", "received"),
        ),
        bus1.create(
            "case",
            B3,
            &case_fields("电梯故障", "fire_safety", "assigned"),
        ),
        bus1.create(
            "bus",
            HAITIANCHENG,
            &[
                ("session_type", "service_bus"),
                ("date", "2026-05-01"),
                ("summary", "楼道堆物 宣传"),
            ],
        ),
    ];
    assert_eq!(bus1.sync().accepted, 56, "every record reached the server");

    let office1 = office(&server);
    let bookmark = format!(
        "/office/records?q={}&kind=case&place={}&status=assigned&category=fire_safety&sort=created",
        "%E6%A5%BC%E9%81%93%E5%A0%86%E7%89%A9", // 楼道堆物
        HAITIANCHENG.replace('/', "%2F"),
    );
    let first = office1.get(&bookmark);
    assert_eq!(first.status, 200, "{}", first.body);
    // The form shows the view the URL names.
    let shows_the_filters = |page: &str| {
        assert_eq!(input_value(page, "q"), "楼道堆物");
        assert_eq!(selected(page, "kind").as_deref(), Some("case"));
        assert_eq!(selected(page, "place").as_deref(), Some(HAITIANCHENG));
        assert_eq!(selected(page, "status").as_deref(), Some("assigned"));
        assert_eq!(selected(page, "category").as_deref(), Some("fire_safety"));
        assert_eq!(selected(page, "sort").as_deref(), Some("created"));
        assert_eq!(selected(page, "source"), None, "an unset filter stays 全部");
    };
    shows_the_filters(&first.body);
    assert!(first.body.contains("共 51 条"), "the count is of matches");
    let page1 = listed_ids(&first.body);
    assert_eq!(page1.len(), 50, "a full page");

    // The next-page link carries every filter, and its page lists the rest.
    let next = unescape(
        section(&first.body, "id=\"next-page\"", ">")
            .split("href=\"")
            .nth(1)
            .expect("a next-page link")
            .split('"')
            .next()
            .unwrap(),
    );
    let kept = query_pairs(&next);
    for pair in query_pairs(&bookmark) {
        assert!(kept.contains(&pair), "{pair:?} lost in {next}");
    }
    assert!(kept.iter().any(|(k, _)| k == "after"), "{next}");
    let second = office1.get(&next);
    assert_eq!(second.status, 200, "{}", second.body);
    shows_the_filters(&second.body);
    let page2 = listed_ids(&second.body);
    assert_eq!(page2.len(), 1);
    assert!(!second.body.contains("id=\"next-page\""), "the last page");
    let listed: BTreeSet<String> = page1.into_iter().chain(page2).collect();
    assert_eq!(listed, matching, "exactly the matching records, each once");
    for miss in &misses {
        assert!(!listed.contains(miss));
    }
}

// ---------------------------------------------------------------------------------------------
// Links between records.

/// A service-bus run at 海天城 recorded on `phone`: its record id.
fn bus_run(phone: &Phone, run_number: &str, date: &str) -> String {
    phone.create(
        "bus",
        HAITIANCHENG,
        &[
            ("session_type", "service_bus"),
            ("run_number", run_number),
            ("date", date),
        ],
    )
}

#[test]
fn a_bus_session_page_lists_its_cases_and_tallies_and_a_contact_links_its_case() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let bus1 = Phone::login(&server, "bus1");
    let session = bus_run(&bus1, "1990", "2026-05-01");
    bus1.tally(&session, "consultations", 5);
    bus1.tally(&session, "answered_on_site", 3);
    bus1.tally(&session, "leaflets", 20);
    let with_session = |summary: &str| {
        let mut fields = case_fields(summary, "parking", "received");
        fields.push(("session_id", &session));
        bus1.create("case", B3, &fields)
    };
    let linked = [with_session("车位不够"), with_session("消防通道被占")];
    let unrelated = bus1.create(
        "case",
        B3,
        &case_fields("别的班次的诉求", "noise", "received"),
    );
    bus1.sync();
    let steward1 = Phone::login(&server, "steward1");
    let contact = steward1.create(
        "contact",
        B3,
        &[
            ("household", "3幢2单元301"),
            ("date", "2026-05-02"),
            ("channel", "visit"),
            ("needs", "反映车位不够"),
            ("case_id", &linked[0]),
        ],
    );
    steward1.sync();

    let office1 = office(&server);
    let page = office1.get(&format!("/office/records/{session}"));
    assert_eq!(page.status, 200, "{}", page.body);
    let cases = section(&page.body, "id=\"session-cases\"", "</div>");
    assert!(cases.contains("本班次诉求（2）"), "{cases}");
    for id in &linked {
        assert!(
            cases.contains(&format!("href=\"/office/records/{id}\"")),
            "{cases}"
        );
    }
    assert!(!cases.contains(&unrelated));
    // The tallies as the phone counted them.
    for (field, n) in [
        ("consultations", 5),
        ("answered_on_site", 3),
        ("leaflets", 20),
    ] {
        assert!(
            page.body
                .contains(&format!("<dd data-field=\"{field}\">{n}</dd>")),
            "{field} shows {n}"
        );
    }

    // The steward's contact leads to the case it opened; the case back to its session.
    let contact_page = office1.get(&format!("/office/records/{contact}"));
    assert_eq!(contact_page.status, 200);
    assert!(
        contact_page.body.contains(&format!(
            "<a href=\"/office/records/{}\" id=\"case-link\">",
            linked[0]
        )),
        "the contact links its case"
    );
    let case_page = office1.get(&format!("/office/records/{}", linked[0]));
    assert!(
        case_page.body.contains(&format!(
            "href=\"/office/records/{session}\" id=\"session-link\""
        )),
        "the case links its session"
    );
}

// ---------------------------------------------------------------------------------------------
// Live events.

/// One server-sent event: its name and data.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    data: String,
}

/// Reads a server-sent event stream on a thread: each event as it comes, then `None` at its end.
fn read_events(body: ureq::Body) -> std::sync::mpsc::Receiver<Option<Sse>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = BufReader::new(body.into_reader());
    std::thread::spawn(move || {
        let (mut event, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if line.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    let name = if event.is_empty() { "message" } else { &event };
                    let _ = tx.send(Some(Sse {
                        event: name.to_string(),
                        data: std::mem::take(&mut data),
                    }));
                    event.clear();
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        let _ = tx.send(None);
    });
    rx
}

/// The next event, waiting at most a minute (a guard against hanging, not a speed check).
fn next_event(rx: &std::sync::mpsc::Receiver<Option<Sse>>) -> Option<Sse> {
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the stream said something within a minute")
}

#[test]
fn the_live_stream_tells_of_changes_in_the_users_street_only_and_ends_at_sign_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    other_street(&server);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let url = format!("{}/office/events", server.url);

    // Without a session: no stream, but the way to sign in.
    let anonymous = agent.get(&url).call().unwrap();
    assert!(
        [303, 401].contains(&anonymous.status().as_u16()),
        "{}",
        anonymous.status()
    );
    assert!(
        anonymous
            .headers()
            .get("content-type")
            .is_none_or(|t| !t.to_str().unwrap().starts_with("text/event-stream"))
    );

    let office1 = office(&server);
    let stream = agent
        .get(&url)
        .header("Cookie", &office1.cookie)
        .call()
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The answer's head arrived, so the stream is subscribed: what is committed now is heard.
    let events = read_events(stream.into_body());

    // A change in another street first, then one in 白杨街道: the first event is the second.
    let xs1 = Phone::login(&server, "xs1");
    let outside = xs1.create(
        "case",
        "hz/xiasha",
        &case_fields("下沙停车难", "parking", "received"),
    );
    xs1.sync();
    let bus1 = Phone::login(&server, "bus1");
    let inside = bus1.create(
        "case",
        B3,
        &case_fields("楼道堆物", "fire_safety", "received"),
    );
    bus1.sync();
    let first = next_event(&events).expect("an event");
    assert_eq!(first.event, "record", "{first:?}");
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data["id"], inside.as_str());
    assert_eq!(data["kind"], "case");
    // A later change to the same record is heard too.
    bus1.set(&inside, &[("status", "answered_on_site")]);
    bus1.sync();
    let again = next_event(&events).expect("an event");
    assert_eq!(
        serde_json::from_str::<Value>(&again.data).unwrap()["id"],
        inside.as_str()
    );

    // Signing out ends the stream at once: a change committed after it is never told, only an
    // `ended` event, then the end of the body.
    assert_eq!(office1.post("/logout", &[]).status, 303);
    bus1.set(&inside, &[("status", "assigned")]);
    bus1.sync();
    let mut rest = Vec::new();
    while let Some(e) = next_event(&events) {
        rest.push(e);
    }
    let names: Vec<&str> = rest.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["ended"], "{rest:?}");
    assert!(
        [&first, &again].iter().all(|e| !e.data.contains(&outside)),
        "nothing of the other street"
    );
    // And no new stream opens for the ended session.
    let after = agent
        .get(&url)
        .header("Cookie", &office1.cookie)
        .call()
        .unwrap();
    assert!([303, 401].contains(&after.status().as_u16()));
}

// ---------------------------------------------------------------------------------------------
// Phone text in statistics.

#[test]
fn phone_text_in_statistics_labels_stays_text_in_tables_charts_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let bus1 = Phone::login(&server, "bus1");
    let session = bus_run(&bus1, XSS, "2026-03-01");
    bus1.tally(&session, "consultations", 4);
    bus1.sync();

    let office1 = office(&server);
    let stats = office1.get("/office/stats");
    assert_eq!(stats.status, 200);
    assert!(
        !stats.body.contains("<img src=x"),
        "raw markup from a phone reached the statistics page"
    );
    let sessions = section(&stats.body, "id=\"sessions\"", "</section>");
    // The table cell holds the run number, escaped.
    let row = sessions
        .split("<tr>")
        .find(|r| r.contains(&session))
        .expect("the run's row");
    assert!(unescape(row).contains(XSS), "{row}");
    // The chart's JSON, once the browser unescapes the attribute, names the run as text.
    let chart = sessions
        .split("data-chart=\"")
        .nth(1)
        .expect("a chart")
        .split('"')
        .next()
        .unwrap();
    assert!(!chart.contains('<'), "{chart}");
    let spec: Value = serde_json::from_str(&unescape(chart)).expect("chart JSON");
    assert_eq!(spec["labels"][0], format!("{XSS} (2026-03-01)"));
    assert_eq!(spec["series"][0]["data"][0], 4);

    // Exports hold the text as it was typed.
    let csv = office1.get("/office/records/export.csv?kind=bus");
    assert_eq!(csv.status, 200);
    assert!(csv.body.contains(XSS), "{}", csv.body);
    let (status, xlsx) = office1.get_bytes("/office/records/export.xlsx?kind=bus");
    assert_eq!(status, 200);
    let mut book = Xlsx::new(std::io::Cursor::new(xlsx)).expect("an .xlsx workbook");
    let sheet = book
        .worksheet_range_at(0)
        .expect("a sheet")
        .expect("a readable sheet");
    assert!(
        sheet
            .used_cells()
            .any(|(_, _, c)| c.get_string() == Some(XSS)),
        "a cell holds the run number literally"
    );
}
