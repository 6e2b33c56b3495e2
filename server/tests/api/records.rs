//! The records API: list filters and paging, detail with conflicts and history, masking, scopes.

use axum::http::StatusCode;
use linli_sync_core::{RecordDoc, RecordKind};
use serde_json::{Value, json};

use crate::common::{TestApp, new_case, push, push_personal};

#[tokio::test]
async fn lists_filter_page_and_refuse_unknown_codes() {
    let app = TestApp::demo().await;
    let mut bus1 = app.login("bus1").await;
    let mut pushes = vec![];
    for (place, category) in [
        ("hz/baiyang/haitian/haitiancheng/b1", "parking"),
        ("hz/baiyang/haitian/haitiancheng/b2", "parking"),
        ("hz/baiyang/haitian/tianyuan/b1", "noise"),
    ] {
        let (doc, c) = new_case(&bus1, place, category);
        pushes.push(push(&doc, RecordKind::Case, &c));
    }
    let (doc, c) = bus1.create(
        RecordKind::Bus,
        "hz/baiyang/haitian/haitiancheng",
        &[("run_number", "1801"), ("date", "2018-07-12")],
    );
    pushes.push(push(&doc, RecordKind::Bus, &c));
    let (status, resp) = app.sync(&mut bus1, pushes, 0).await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);

    let office = app.login("office1").await;
    let get = |uri: String| {
        let app = &app;
        let token = office.token.clone();
        async move { app.json("GET", &uri, Some(&token), None).await }
    };
    let ids = |v: &Value| v["records"].as_array().unwrap().len();

    let (status, all) = get("/v1/records".into()).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(ids(&all), 4);
    let (_, cases) = get("/v1/records?kind=case".into()).await;
    assert_eq!(ids(&cases), 3);
    let (_, parking) = get("/v1/records?kind=case&category=parking&status=received".into()).await;
    assert_eq!(ids(&parking), 2);
    let (_, estate) = get("/v1/records?place=hz/baiyang/haitian/haitiancheng".into()).await;
    assert_eq!(ids(&estate), 3);
    let (_, future) = get("/v1/records?updated_since=2999-01-01T00:00:00Z".into()).await;
    assert_eq!(ids(&future), 0);
    let (_, since) = get("/v1/records?updated_since=0".into()).await;
    assert_eq!(ids(&since), 4);

    // Paging: 3 + 1, no overlap.
    let (_, page1) = get("/v1/records?limit=3".into()).await;
    assert_eq!(ids(&page1), 3);
    let next = page1["next"].as_str().unwrap().to_string();
    let (_, page2) = get(format!("/v1/records?limit=3&after={next}")).await;
    assert_eq!(ids(&page2), 1);
    assert!(page2["next"].is_null());
    let first: Vec<&Value> = page1["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert!(!first.contains(&&page2["records"][0]["id"]));

    // Unknown codes are a 400 that lists what is allowed.
    let (status, body) = get("/v1/records?kind=complaint".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("complaint") && msg.contains("case, bus, contact, volunteer"),
        "{msg}"
    );
    let (status, body) = get("/v1/records?status=lost".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("in_progress"));
    let (status, _) = get("/v1/records?category=aliens".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get("/v1/records?limit=many".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A steward sees only their building.
    let steward2 = app.login("steward2").await;
    let (_, none) = app
        .json("GET", "/v1/records", Some(&steward2.token), None)
        .await;
    assert_eq!(ids(&none), 0);
}

#[tokio::test]
async fn detail_shows_conflicts_with_who_set_each_value_and_masks_phones() {
    let app = TestApp::demo().await;
    let mut bus1 = app.login("bus1").await;
    let mut bus2 = app.login("bus2").await;
    // bus2's phone is set up (bootstrapped) before the push: the push reaches it as changes.
    app.sync(&mut bus2, vec![], 0).await;

    // bus1 records a case in building 3; bus2 pulls it.
    let (mut doc1, _, c0, p0) = bus1.create_full(
        RecordKind::Case,
        "hz/baiyang/haitian/haitiancheng/b3",
        &[
            ("summary", "楼道堆放杂物"),
            ("category", "facilities"),
            ("source", "bus_session"),
            ("resident_phone", "13812345678"),
        ],
    );
    app.sync(
        &mut bus1,
        vec![
            push(&doc1, RecordKind::Case, &c0),
            push_personal(&doc1, RecordKind::Case, &p0.unwrap()),
        ],
        0,
    )
    .await;
    let (_, pulled) = app.sync(&mut bus2, vec![], 0).await;
    let mut doc2 = RecordDoc::empty(doc1.id());
    doc2.apply_change(&pulled.changes[0].change).unwrap();

    // Offline, both set the status differently; then both sync.
    let e1 = bus1.set(&mut doc1, &[("status", "assigned")]);
    let e2 = bus2.set(&mut doc2, &[("status", "in_progress")]);
    let (s1, _) = app
        .sync(&mut bus1, vec![push(&doc1, RecordKind::Case, &e1)], 0)
        .await;
    let (s2, _) = app
        .sync(&mut bus2, vec![push(&doc2, RecordKind::Case, &e2)], 0)
        .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));

    let office = app.login("office1").await;
    let uri = format!("/v1/records/{}", doc1.id());
    let (status, detail) = app.json("GET", &uri, Some(&office.token), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["value"]["resident_phone"], "13812345678");
    let conflict = detail["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "status")
        .unwrap_or_else(|| panic!("no status conflict in {detail}"));
    let mut who: Vec<(&str, &str)> = conflict["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["user"].as_str().unwrap(), v["value"].as_str().unwrap()))
        .collect();
    who.sort();
    assert_eq!(who, vec![("bus1", "assigned"), ("bus2", "in_progress")]);
    assert!(conflict["values"][0]["received_at"].as_i64().is_some());

    let history = detail["history"].as_array().unwrap();
    assert_eq!(
        history.len(),
        4,
        "three changes to the record, one to its personal part"
    );
    assert!(history.iter().all(|h| h["received_at"].as_i64().is_some()));
    assert!(
        history[0]["touched"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "summary")
    );
    assert_eq!(history[0]["user"], "bus1");
    // The log keeps touched fields by number and messages only in the changes; the history
    // reads them back as they were written.
    assert_eq!(history[0]["message"], format!("create case {}", doc1.id()));
    let set: Vec<_> = history
        .iter()
        .filter(|h| h["message"] == "set status")
        .map(|h| h["touched"].clone())
        .collect();
    assert_eq!(
        set,
        vec![json!(["status"]), json!(["status"])],
        "{history:?}"
    );
    // Each change's actor, read from the change: the two phones' edits are two actors.
    let actors: Vec<&str> = history
        .iter()
        .filter(|h| h["message"] == "set status")
        .map(|h| h["actor"].as_str().unwrap())
        .collect();
    assert!(
        history
            .iter()
            .all(|h| h["actor"].as_str().unwrap().len() == 32)
    );
    assert_ne!(actors[0], actors[1], "bus1's and bus2's: {history:?}");

    // A steward of building 3 sees it with the phone masked; one elsewhere gets a 404.
    let steward1 = app.login("steward1").await;
    let (status, masked) = app.json("GET", &uri, Some(&steward1.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(masked["value"]["resident_phone"], "138****5678");
    let (_, list) = app
        .json("GET", "/v1/records", Some(&steward1.token), None)
        .await;
    assert_eq!(list["records"][0]["value"]["resident_phone"], "138****5678");

    let steward2 = app.login("steward2").await;
    let (status, body) = app.json("GET", &uri, Some(&steward2.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let (status, _) = app
        .json("GET", "/v1/records/not-a-uuid", Some(&office.token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an id that is not a UUID");
}
