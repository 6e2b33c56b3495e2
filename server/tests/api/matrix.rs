//! The authorization matrix: every endpoint × every role (and no token) × a record inside the
//! caller's grants and one outside them, with the expected answer of each cell, checked cell by
//! cell. A failure prints the whole table of what was expected and what came back.

use axum::http::StatusCode;
use linli_server::model::{Place, PlaceLevel, Role, User};
use linli_server::store::prelude::*;
use linli_sync_core::protocol::{self, RejectCode, SyncRequest, SyncResponse};
use linli_sync_core::{RecordDoc, RecordKind};
use serde_json::json;

use crate::common::{Phone, TestApp, new_case, push};

/// The place of the in-scope record: steward1's building, inside every demo role's grants.
const IN: &str = "hz/baiyang/haitian/haitiancheng/b3";
/// The place of the out-of-scope record: another district, granted to none of them.
const OUT: &str = "sz/nanshan";

const ROLES: [&str; 5] = ["steward", "bus", "office", "admin", "anonymous"];

fn user_of(role: &str) -> &'static str {
    match role {
        "steward" => "steward1",
        "bus" => "bus1",
        "office" => "office1",
        "admin" => "admin",
        _ => "",
    }
}

/// The expected answers: (endpoint, scope, [steward, bus, office, admin, anonymous]).
/// `listed`/`absent` say whether the record shows up in a list or a pull.
const EXPECTED: &[(&str, &str, [&str; 5])] = &[
    (
        "POST /v1/auth/login",
        "-",
        ["200", "200", "200", "200", "401"],
    ),
    (
        "POST /v1/auth/refresh",
        "-",
        ["200", "200", "200", "200", "401"],
    ),
    (
        "POST /v1/sync push new",
        "in",
        ["200", "200", "200", "200", "401"],
    ),
    (
        "POST /v1/sync push new",
        "out",
        [
            "422 out_of_scope",
            "422 out_of_scope",
            "422 out_of_scope",
            "422 out_of_scope",
            "401",
        ],
    ),
    (
        "POST /v1/sync push edit",
        "in",
        ["200", "200", "200", "200", "401"],
    ),
    // A record outside the pusher's grants is answered exactly as one that does not exist: an
    // edit of it waits for changes the server "does not have" (issue "hostile steward", class 4).
    (
        "POST /v1/sync push edit",
        "out",
        [
            "422 missing_dependencies",
            "422 missing_dependencies",
            "422 missing_dependencies",
            "422 missing_dependencies",
            "401",
        ],
    ),
    (
        "POST /v1/sync push relay",
        "in",
        ["200", "200", "200", "200", "401"],
    ),
    // Relaying someone else's change to a record outside the grants: refused for its actor, as
    // the same bytes pushed under a random record id would be — nothing about the record shows.
    (
        "POST /v1/sync push relay",
        "out",
        [
            "422 foreign_actor",
            "422 foreign_actor",
            "422 foreign_actor",
            "422 foreign_actor",
            "401",
        ],
    ),
    (
        "POST /v1/sync pull",
        "in",
        [
            "200 listed",
            "200 listed",
            "200 listed",
            "200 listed",
            "401",
        ],
    ),
    (
        "POST /v1/sync pull",
        "out",
        [
            "200 absent",
            "200 absent",
            "200 absent",
            "200 absent",
            "401",
        ],
    ),
    (
        "GET /v1/records",
        "in",
        [
            "200 listed",
            "200 listed",
            "200 listed",
            "200 listed",
            "401",
        ],
    ),
    (
        "GET /v1/records",
        "out",
        [
            "200 absent",
            "200 absent",
            "200 absent",
            "200 absent",
            "401",
        ],
    ),
    (
        "GET /v1/records/{id}",
        "in",
        ["200", "200", "200", "200", "401"],
    ),
    (
        "GET /v1/records/{id}",
        "out",
        ["404", "404", "404", "404", "401"],
    ),
    (
        "GET /v1/places",
        "in",
        [
            "200 listed",
            "200 listed",
            "200 listed",
            "200 listed",
            "401",
        ],
    ),
    (
        "GET /v1/places",
        "out",
        [
            "200 absent",
            "200 absent",
            "200 absent",
            "200 absent",
            "401",
        ],
    ),
    (
        "GET /v1/rejections",
        "in",
        ["403", "403", "200 listed", "200 listed", "401"],
    ),
    (
        "GET /v1/rejections",
        "out",
        ["403", "403", "200 absent", "200 absent", "401"],
    ),
    (
        "GET /v1/admin/users",
        "-",
        ["403", "403", "403", "200", "401"],
    ),
    (
        "POST /v1/admin/users",
        "-",
        ["403", "403", "403", "201", "401"],
    ),
    (
        "POST /v1/admin/grants",
        "-",
        ["403", "403", "403", "201", "401"],
    ),
    (
        "DELETE /v1/admin/grants",
        "-",
        ["403", "403", "403", "204", "401"],
    ),
    (
        "GET /v1/admin/devices",
        "-",
        ["403", "403", "403", "200", "401"],
    ),
    (
        "POST /v1/admin/devices/{id}/revoke",
        "-",
        ["403", "403", "403", "204", "401"],
    ),
    (
        "GET /v1/admin/keys",
        "-",
        ["403", "403", "403", "200", "401"],
    ),
    (
        "POST /v1/admin/places",
        "-",
        ["403", "403", "403", "201", "401"],
    ),
];

/// What each role is logged in with.
struct Caller {
    phone: Option<Phone>,
    refresh: String,
}

/// The world the matrix runs in: the demo district, plus a district none of the callers holds,
/// with one record in each.
struct World {
    app: TestApp,
    in_doc: RecordDoc,
    out_doc: RecordDoc,
    in_change: Vec<u8>,
    out_change: Vec<u8>,
}

async fn login_full(app: &TestApp, username: &str) -> (Phone, String) {
    let device = uuid::Uuid::new_v4().to_string();
    let (status, body) = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": username, "password": "linli-demo", "device_id": device})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let phone = Phone {
        username: username.to_string(),
        token: body["access_token"].as_str().unwrap().to_string(),
        actor: linli_sync_core::automerge::ActorId::random(),
        cursor: Default::default(),
    };
    (phone, body["refresh_token"].as_str().unwrap().to_string())
}

async fn world() -> World {
    let app = TestApp::demo().await;
    // Another district with an outsider working there.
    for (id, name, level) in [
        ("sz", "深圳南山", PlaceLevel::District),
        ("sz/nanshan", "南山街道", PlaceLevel::Street),
    ] {
        let id: linli_sync_core::PlaceId = id.parse().unwrap();
        app.state
            .store
            .upsert_place(&Place {
                parent: id.parent(),
                id,
                name: name.into(),
                level,
            })
            .await
            .unwrap();
    }
    let outsider = User {
        id: uuid::Uuid::new_v4().to_string(),
        username: "outsider".into(),
        password_hash: linli_server::auth::hash_password("linli-demo".into())
            .await
            .unwrap(),
        role: Role::Office,
        display_name: "外区".into(),
        disabled: false,
        session_epoch: 0,
    };
    app.state.store.insert_user(&outsider, 1).await.unwrap();
    app.state
        .store
        .grant(&outsider.id, &OUT.parse().unwrap())
        .await
        .unwrap();
    let (mut out_phone, _) = login_full(&app, "outsider").await;
    let (out_doc, out_c) = new_case(&out_phone, OUT, "parking");
    // A rejection at OUT: garbage bytes named as a change of its record.
    let mut garbage = push(&out_doc, RecordKind::Case, &out_c);
    garbage.change = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3];
    let (status, resp) = app
        .sync(
            &mut out_phone,
            vec![push(&out_doc, RecordKind::Case, &out_c), garbage],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);

    let (mut bus, _) = login_full(&app, "bus1").await;
    let (in_doc, in_c) = new_case(&bus, IN, "noise");
    // A rejection at IN: a bus team may not set a deadline.
    let deadline = bus.set(&mut in_doc.clone(), &[("deadline", "2024-05-01")]);
    let (status, resp) = app
        .sync(
            &mut bus,
            vec![
                push(&in_doc, RecordKind::Case, &in_c),
                push(&in_doc, RecordKind::Case, &deadline),
            ],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.rejected[0].code, RejectCode::Forbidden);
    World {
        app,
        in_change: in_c.raw_bytes().to_vec(),
        out_change: out_c.raw_bytes().to_vec(),
        in_doc,
        out_doc,
    }
}

fn listed(found: bool) -> &'static str {
    if found { "listed" } else { "absent" }
}

async fn sync_cell(
    app: &TestApp,
    caller: &Caller,
    req: SyncRequest,
) -> (StatusCode, Option<SyncResponse>) {
    let token = caller.phone.as_ref().map_or("", |p| p.token.as_str());
    let (status, ct, body) = app
        .sync_raw(token, protocol::CONTENT_TYPE, req.encode())
        .await;
    let reply = (ct.as_deref() == Some(protocol::CONTENT_TYPE))
        .then(|| SyncResponse::decode(&body).unwrap());
    (status, reply)
}

fn push_outcome(status: StatusCode, reply: Option<SyncResponse>) -> String {
    match reply {
        Some(r) if !r.rejected.is_empty() => {
            format!("{} {}", status.as_u16(), r.rejected[0].code.as_str())
        }
        _ => status.as_u16().to_string(),
    }
}

async fn cell(w: &World, caller: &Caller, role: &str, endpoint: &str, scope: &str) -> String {
    let app = &w.app;
    let token = caller.phone.as_ref().map(|p| p.token.as_str());
    let (doc, place) = if scope == "out" {
        (&w.out_doc, OUT)
    } else {
        (&w.in_doc, IN)
    };
    let st = |s: StatusCode| s.as_u16().to_string();
    match endpoint {
        "POST /v1/auth/login" => {
            // The anonymous caller has no valid credentials.
            let (user, password) = match role {
                "anonymous" => ("bus1", "wrong-password"),
                _ => (user_of(role), "linli-demo"),
            };
            let (s, _) = app
                .json(
                    "POST",
                    "/v1/auth/login",
                    None,
                    Some(json!({"username": user, "password": password,
                                "device_id": uuid::Uuid::new_v4().to_string()})),
                )
                .await;
            st(s)
        }
        "POST /v1/auth/refresh" => {
            let (s, _) = app
                .json(
                    "POST",
                    "/v1/auth/refresh",
                    None,
                    Some(json!({"refresh_token": caller.refresh})),
                )
                .await;
            st(s)
        }
        "POST /v1/sync push new" => {
            let maker = caller.phone.as_ref().map_or_else(
                || Phone {
                    username: "x".into(),
                    token: String::new(),
                    actor: linli_sync_core::automerge::ActorId::random(),
                    cursor: Default::default(),
                },
                |p| Phone {
                    username: p.username.clone(),
                    token: p.token.clone(),
                    actor: p.actor.clone(),
                    cursor: Default::default(),
                },
            );
            let (d, c) = new_case(&maker, place, "other");
            let (s, r) = sync_cell(
                app,
                caller,
                SyncRequest {
                    changes: vec![push(&d, RecordKind::Case, &c)],
                    ..Default::default()
                },
            )
            .await;
            push_outcome(s, r)
        }
        "POST /v1/sync push edit" => {
            let mut d = doc.clone();
            let ctx = caller.phone.as_ref().map_or_else(
                || linli_sync_core::EditContext {
                    actor: linli_sync_core::automerge::ActorId::random(),
                    user: "x".into(),
                    now_ms: 1,
                },
                Phone::ctx,
            );
            let c = d.add_note(&ctx, "已上门查看").unwrap();
            let (s, r) = sync_cell(
                app,
                caller,
                SyncRequest {
                    changes: vec![push(&d, RecordKind::Case, &c)],
                    ..Default::default()
                },
            )
            .await;
            push_outcome(s, r)
        }
        "POST /v1/sync push relay" => {
            // A change the server already holds, sent again by someone else.
            let bytes = if scope == "out" {
                &w.out_change
            } else {
                &w.in_change
            };
            let (s, r) = sync_cell(
                app,
                caller,
                SyncRequest {
                    changes: vec![protocol::PushChange {
                        record: *doc.id().as_bytes(),
                        kind: RecordKind::Case,
                        part: linli_sync_core::protocol::Part::Record,
                        change: bytes.clone(),
                    }],
                    ..Default::default()
                },
            )
            .await;
            push_outcome(s, r)
        }
        "POST /v1/sync pull" => {
            let (s, r) = sync_cell(app, caller, SyncRequest::default()).await;
            match r {
                Some(r) => format!(
                    "{} {}",
                    st(s),
                    listed(
                        r.changes.iter().any(|c| c.record == *doc.id().as_bytes())
                            || r.snapshots.iter().any(|s| s.record == *doc.id().as_bytes())
                    )
                ),
                None => st(s),
            }
        }
        "GET /v1/records" => {
            let (s, v) = app.json("GET", "/v1/records?limit=500", token, None).await;
            if s != StatusCode::OK {
                return st(s);
            }
            let found = v["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == doc.id().to_string());
            format!("200 {}", listed(found))
        }
        "GET /v1/records/{id}" => {
            let (s, _) = app
                .json("GET", &format!("/v1/records/{}", doc.id()), token, None)
                .await;
            st(s)
        }
        "GET /v1/places" => {
            let (s, v) = app.json("GET", "/v1/places", token, None).await;
            if s != StatusCode::OK {
                return st(s);
            }
            let found = v["places"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == place);
            format!("200 {}", listed(found))
        }
        "GET /v1/rejections" => {
            let (s, v) = app
                .json("GET", "/v1/rejections?limit=500", token, None)
                .await;
            if s != StatusCode::OK {
                return st(s);
            }
            let found = v["rejections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["record"] == doc.id().to_string());
            format!("200 {}", listed(found))
        }
        "GET /v1/admin/users" => st(app.json("GET", "/v1/admin/users", token, None).await.0),
        "POST /v1/admin/users" => {
            let body = json!({"username": format!("new-{role}"), "password": "a-long-password",
                              "role": "steward", "display_name": "新楼长"});
            st(app
                .json("POST", "/v1/admin/users", token, Some(body))
                .await
                .0)
        }
        "POST /v1/admin/grants" => {
            let body = json!({"username": "steward2", "place": "hz/baiyang/haitian/tianyuan/b1"});
            st(app
                .json("POST", "/v1/admin/grants", token, Some(body))
                .await
                .0)
        }
        "DELETE /v1/admin/grants" => {
            let uri = "/v1/admin/grants?username=steward2&place=hz/baiyang/haitian/tianyuan/b1";
            st(app.json("DELETE", uri, token, None).await.0)
        }
        "GET /v1/admin/devices" => st(app.json("GET", "/v1/admin/devices", token, None).await.0),
        "POST /v1/admin/devices/{id}/revoke" => {
            // A device of the outsider's, so the callers' own devices keep working.
            let (_, devices) = w
                .app
                .json(
                    "GET",
                    "/v1/admin/devices?username=outsider",
                    Some(&admin_token(w).await),
                    None,
                )
                .await;
            let id = devices["devices"][0]["id"].as_str().unwrap().to_string();
            st(app
                .json(
                    "POST",
                    &format!("/v1/admin/devices/{id}/revoke"),
                    token,
                    Some(json!({})),
                )
                .await
                .0)
        }
        "GET /v1/admin/keys" => st(app.json("GET", "/v1/admin/keys", token, None).await.0),
        "POST /v1/admin/places" => {
            let body = json!({"id": format!("hz/baiyang/haitian/haitiancheng/b{}", 10 + role.len()),
                              "name": "新楼", "level": "building"});
            st(app
                .json("POST", "/v1/admin/places", token, Some(body))
                .await
                .0)
        }
        other => panic!("no such endpoint in the matrix: {other}"),
    }
}

async fn admin_token(w: &World) -> String {
    // A fresh login each time: the matrix's admin session stays as it is.
    let (p, _) = login_full(&w.app, "admin").await;
    p.token
}

#[tokio::test]
async fn every_endpoint_by_every_role_in_and_out_of_scope() {
    let w = world().await;
    let mut callers = Vec::new();
    for role in ROLES {
        callers.push(if role == "anonymous" {
            Caller {
                phone: None,
                refresh: "lr1_not-a-token".into(),
            }
        } else {
            let (phone, refresh) = login_full(&w.app, user_of(role)).await;
            Caller {
                phone: Some(phone),
                refresh,
            }
        });
    }
    let mut table = String::new();
    let mut failures = 0;
    for (endpoint, scope, expected) in EXPECTED {
        for (i, role) in ROLES.iter().enumerate() {
            let got = cell(&w, &callers[i], role, endpoint, scope).await;
            let mark = if got == expected[i] {
                "ok"
            } else {
                failures += 1;
                "MISMATCH"
            };
            table.push_str(&format!(
                "{endpoint:<36} {scope:<4} {role:<9} expected {:<18} got {got:<18} {mark}\n",
                expected[i]
            ));
        }
    }
    assert_eq!(failures, 0, "authorization matrix:\n{table}");
    let cells = EXPECTED.len() * ROLES.len();
    assert_eq!(table.lines().count(), cells);
}
