//! One conformance suite for every [`AccountStore`]: the same tests, through one macro, against
//! SQLite and against a real PostgreSQL (a fresh database per test, see
//! [`PgTest`](super::conformance::PgTest)).

use std::collections::HashMap;

use linli_sync_core::{DeviceId, PlaceId, RecordId};

use super::SqliteStore;
use super::account_seam::AccountStore;
use super::accounts::{DeviceRow, Principal};
use super::conformance::{Fixture, PgTest};
use super::log::{RejectionRow, RejectionView};
use super::tokens::{NewRefreshToken, RefreshAttempt, RefreshOutcome};
use super::web_sessions::{NewWebSession, WebSessionRow};
use crate::model::{Place, PlaceLevel, Role, User};

fn p(s: &str) -> PlaceId {
    s.parse().unwrap()
}

fn user(name: &str, role: Role) -> User {
    User {
        id: format!("id-{name}"),
        username: name.into(),
        password_hash: format!("hash-{name}"),
        role,
        display_name: format!("名{name}"),
        disabled: false,
        session_epoch: 0,
    }
}

/// Creates the places, each under its parent (the root's level is a district, the rest
/// streets).
async fn places<S: AccountStore>(store: &S, ids: &[&str]) {
    for id in ids {
        let id = p(id);
        let level = if id.parent().is_none() {
            PlaceLevel::District
        } else {
            PlaceLevel::Street
        };
        store
            .upsert_place(&Place {
                parent: id.parent(),
                name: format!("地{}", id.as_str()),
                id,
                level,
            })
            .await
            .unwrap();
    }
}

/// Users `a` and `b`, each with one device (named `phone-a`, `phone-b`, registered at 1000).
async fn two_users<S: AccountStore>(store: &S) -> (User, DeviceId, User, DeviceId) {
    let (a, b) = (user("a", Role::Steward), user("b", Role::Bus));
    store.insert_user(&a, 1).await.unwrap();
    store.insert_user(&b, 1).await.unwrap();
    let (da, db) = (DeviceId::new(), DeviceId::new());
    assert!(
        store
            .register_device(da, &a.id, "phone-a", 1000)
            .await
            .unwrap()
    );
    assert!(
        store
            .register_device(db, &b.id, "phone-b", 1000)
            .await
            .unwrap()
    );
    (a, da, b, db)
}

fn ids(places: &[Place]) -> Vec<&str> {
    places.iter().map(|pl| pl.id.as_str()).collect()
}

/// "Within" is by whole path segments; places read back as written, renamed in place.
pub(crate) async fn places_are_within_by_whole_segments<S: AccountStore + Fixture>(store: S) {
    places(
        &store,
        &[
            "hz",
            "hz/bai_yang",
            "hz/bai_yang/a",
            "hz/baixyang",
            "hz/bai_yang0",
        ],
    )
    .await;
    let within = store.places_within(&[p("hz/bai_yang")]).await.unwrap();
    assert_eq!(ids(&within), ["hz/bai_yang", "hz/bai_yang/a"]);
    let two = store
        .places_within(&[p("hz/bai_yang0"), p("hz/baixyang")])
        .await
        .unwrap();
    assert_eq!(ids(&two), ["hz/bai_yang0", "hz/baixyang"]);
    assert!(store.places_within(&[]).await.unwrap().is_empty());
    // Byte order: `/` < `0` < `_` < `x`.
    assert_eq!(
        ids(&store.all_places().await.unwrap()),
        [
            "hz",
            "hz/bai_yang",
            "hz/bai_yang/a",
            "hz/bai_yang0",
            "hz/baixyang"
        ]
    );

    let a = store.place(&p("hz/bai_yang/a")).await.unwrap().unwrap();
    assert_eq!(a.parent, Some(p("hz/bai_yang")));
    assert_eq!(
        (a.name.as_str(), a.level),
        ("地hz/bai_yang/a", PlaceLevel::Street)
    );
    store
        .upsert_place(&Place {
            name: "白杨社区".into(),
            level: PlaceLevel::Community,
            ..a
        })
        .await
        .unwrap();
    let renamed = store.place(&p("hz/bai_yang/a")).await.unwrap().unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.level),
        ("白杨社区", PlaceLevel::Community)
    );
    assert_eq!(store.all_places().await.unwrap().len(), 5);
    assert!(store.place(&p("hz/nowhere")).await.unwrap().is_none());
    assert!(
        store
            .place(&p("hz"))
            .await
            .unwrap()
            .unwrap()
            .parent
            .is_none()
    );
    store.finish().await;
}

/// Users are found by name and by id; a taken name is a conflict; disabling and a new password
/// move the session epoch on, enabling does not.
pub(crate) async fn users_by_name_and_id_and_session_epochs<S: AccountStore + Fixture>(store: S) {
    let a = user("a", Role::Steward);
    let mut b = user("b", Role::Admin);
    b.disabled = true;
    store.insert_user(&b, 5).await.unwrap();
    store.insert_user(&a, 5).await.unwrap();

    let got = store.user_by_username("a").await.unwrap().unwrap();
    assert_eq!(
        (
            got.id.as_str(),
            got.password_hash.as_str(),
            got.role,
            got.display_name.as_str(),
            got.disabled,
            got.session_epoch
        ),
        ("id-a", "hash-a", Role::Steward, "名a", false, 0)
    );
    let got = store.user_by_id("id-b").await.unwrap().unwrap();
    assert_eq!(
        (got.username.as_str(), got.role, got.disabled),
        ("b", Role::Admin, true)
    );
    assert!(store.user_by_username("c").await.unwrap().is_none());
    assert!(store.user_by_id("id-c").await.unwrap().is_none());

    let mut dup = user("a", Role::Bus);
    dup.id = "another".into();
    let err = store.insert_user(&dup, 6).await.unwrap_err();
    assert_eq!(
        crate::error::Error::from(err).status(),
        axum::http::StatusCode::CONFLICT
    );
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["a", "b"]);

    let state = |u: User| (u.disabled, u.session_epoch, u.password_hash);
    store.set_user_disabled("id-a", true).await.unwrap();
    let a1 = store.user_by_id("id-a").await.unwrap().unwrap();
    assert_eq!(state(a1), (true, 1, "hash-a".to_string()));
    store.set_user_disabled("id-a", false).await.unwrap();
    let a2 = store.user_by_id("id-a").await.unwrap().unwrap();
    assert_eq!(state(a2), (false, 1, "hash-a".to_string()));
    store.set_password_hash("id-a", "new").await.unwrap();
    let a3 = store.user_by_username("a").await.unwrap().unwrap();
    assert_eq!(state(a3), (false, 2, "new".to_string()));
    // The other user is untouched.
    let b1 = store.user_by_id("id-b").await.unwrap().unwrap();
    assert_eq!(state(b1), (true, 0, "hash-b".to_string()));
    store.finish().await;
}

/// Grants carry the epoch they were made at; granting twice keeps it; every grant and revoke
/// moves the epoch on.
pub(crate) async fn grants_carry_epochs_and_revoke<S: AccountStore + Fixture>(store: S) {
    places(&store, &["hz", "hz/a", "hz/b"]).await;
    let (a, _, b, _) = two_users(&store).await;
    assert_eq!(store.grant_epoch().await.unwrap(), 0);

    assert!(store.grant(&a.id, &p("hz/b")).await.unwrap());
    let e1 = store.grant_epoch().await.unwrap();
    assert!(e1 > 0);
    assert!(!store.grant(&a.id, &p("hz/b")).await.unwrap());
    assert_eq!(store.grant_epoch().await.unwrap(), e1);
    assert!(store.grant(&a.id, &p("hz/a")).await.unwrap());
    let e2 = store.grant_epoch().await.unwrap();
    assert!(e2 > e1);
    assert_eq!(
        store.grants_with_epoch(&a.id).await.unwrap(),
        (e2, vec![(p("hz/a"), e2), (p("hz/b"), e1)])
    );
    assert_eq!(store.grants_with_epoch(&b.id).await.unwrap(), (e2, vec![]));
    assert_eq!(
        store.grants_of(&a.id).await.unwrap(),
        vec![p("hz/a"), p("hz/b")]
    );
    assert!(store.grants_of(&b.id).await.unwrap().is_empty());
    // What a request's caller is granted comes with the caller, by path.
    let places = |id: &str| {
        let store = &store;
        let id = id.to_string();
        async move {
            let who = store.principal(&id, DeviceId::new()).await.unwrap();
            who.expect("the user exists").places
        }
    };
    assert_eq!(places(&a.id).await, vec![p("hz/a"), p("hz/b")]);
    assert!(places(&b.id).await.is_empty());

    assert!(store.revoke_grant(&a.id, &p("hz/b")).await.unwrap());
    let e3 = store.grant_epoch().await.unwrap();
    assert!(e3 > e2, "a revoke moves the epoch on");
    assert!(!store.revoke_grant(&a.id, &p("hz/b")).await.unwrap());
    assert!(!store.revoke_grant(&b.id, &p("hz/a")).await.unwrap());
    assert_eq!(store.grant_epoch().await.unwrap(), e3);
    assert_eq!(store.grants_of(&a.id).await.unwrap(), vec![p("hz/a")]);

    // Granted again, the place comes with a new epoch.
    assert!(store.grant(&a.id, &p("hz/b")).await.unwrap());
    let e4 = store.grant_epoch().await.unwrap();
    assert!(e4 > e3);
    assert_eq!(
        store.grants_with_epoch(&a.id).await.unwrap(),
        (e4, vec![(p("hz/a"), e2), (p("hz/b"), e4)])
    );
    store.finish().await;
}

/// Two processes granting the same places at once: each place is granted once, without error,
/// and the epochs are distinct.
pub(crate) async fn concurrent_grants_make_one_grant<S: AccountStore + Fixture>(a: S, b: S) {
    let names: Vec<String> = (0..8).map(|n| format!("hz/p{n}")).collect();
    let mut all: Vec<&str> = vec!["hz"];
    all.extend(names.iter().map(String::as_str));
    places(&a, &all).await;
    let (u, _, _, _) = two_users(&a).await;
    for name in &names {
        let place = p(name);
        let (ra, rb) = tokio::join!(a.grant(&u.id, &place), b.grant(&u.id, &place));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra != rb,
            "{name}: exactly one of two grants is new ({ra}, {rb})"
        );
    }
    let (_, grants) = b.grants_with_epoch(&u.id).await.unwrap();
    assert_eq!(grants.len(), names.len());
    let mut epochs: Vec<i64> = grants.iter().map(|(_, e)| *e).collect();
    epochs.sort();
    epochs.dedup();
    assert_eq!(epochs.len(), names.len());
    assert_eq!(a.grant_epoch().await.unwrap(), *epochs.last().unwrap());
    b.finish().await;
    a.finish().await;
}

/// A device belongs to one user; the principal says whether a token's device is good;
/// revoking a device revokes its refresh tokens.
pub(crate) async fn devices_register_revoke_and_answer_principal<S: AccountStore + Fixture>(
    store: S,
) {
    let (a, da, b, db) = two_users(&store).await;
    // A later login by the same user keeps the name when it gives none.
    assert!(store.register_device(da, &a.id, "", 2000).await.unwrap());
    // Another user cannot take the device, and changes nothing.
    assert!(!store.register_device(da, &b.id, "x", 3000).await.unwrap());
    assert_eq!(store.device_owner(da).await.unwrap(), Some(a.id.clone()));
    assert_eq!(store.device_owner(DeviceId::new()).await.unwrap(), None);
    let mine = store.list_devices(Some(&a.id)).await.unwrap();
    assert_eq!(mine.len(), 1);
    let row = &mine[0];
    assert_eq!(
        (
            row.id.as_str(),
            row.username.as_str(),
            row.name.as_str(),
            row.created_at,
            row.last_seen,
            row.revoked_at
        ),
        (da.to_string().as_str(), "a", "phone-a", 1000, 2000, None)
    );
    assert!(
        store
            .register_device(db, &b.id, "renamed", 5000)
            .await
            .unwrap()
    );
    let listed: Vec<String> = store
        .list_devices(None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, [db.to_string(), da.to_string()], "newest first");

    let (sa, sb) = (da.to_string(), db.to_string());
    let names = store
        .device_names(&[sa.as_str(), sb.as_str(), "nope"])
        .await
        .unwrap();
    let want: HashMap<String, String> = [
        (sa.clone(), "phone-a".to_string()),
        (sb.clone(), "renamed".to_string()),
    ]
    .into();
    assert_eq!(names, want);
    assert!(store.device_names(&[]).await.unwrap().is_empty());

    let who = |p: Option<Principal>| p.map(|p| (p.user.username, p.device_ok, p.device_revoked));
    assert_eq!(
        who(store.principal(&a.id, da).await.unwrap()),
        Some(("a".into(), true, false))
    );
    assert_eq!(
        who(store.principal(&b.id, da).await.unwrap()),
        Some(("b".into(), false, false)),
        "another user's device"
    );
    assert_eq!(
        who(store.principal(&a.id, DeviceId::new()).await.unwrap()),
        Some(("a".into(), false, false)),
        "an unknown device"
    );
    assert!(store.principal("nobody", da).await.unwrap().is_none());

    store
        .insert_refresh_token(&NewRefreshToken {
            hash: &[9; 32],
            family: "fam",
            user_id: &a.id,
            device_id: &sa,
            issued_at: 1000,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    assert!(!store.device_revoked(da).await.unwrap());
    assert!(store.revoke_device(da, 9000).await.unwrap());
    assert!(store.device_revoked(da).await.unwrap());
    assert!(!store.device_revoked(db).await.unwrap());
    assert!(!store.device_revoked(DeviceId::new()).await.unwrap());
    assert_eq!(
        who(store.principal(&a.id, da).await.unwrap()),
        Some(("a".into(), false, true))
    );
    // Revoking again keeps the first time.
    assert!(store.revoke_device(da, 9999).await.unwrap());
    let revoked = store.list_devices(Some(&a.id)).await.unwrap();
    assert_eq!(revoked[0].revoked_at, Some(9000));
    assert!(!store.revoke_device(DeviceId::new(), 9000).await.unwrap());
    // Its refresh token died with it.
    let outcome = store
        .rotate_refresh_token(&attempt(&[9; 32], &[10; 32], 10_000, Some(&sa)))
        .await
        .unwrap();
    assert_eq!(outcome, RefreshOutcome::Dead { device_id: sa });
    store.finish().await;
}

/// A device's last sighting is written only once it is a minute old.
pub(crate) async fn touching_a_device_writes_only_when_stale<S: AccountStore + Fixture>(store: S) {
    let (a, da, _, db) = two_users(&store).await;
    let last_seen = |rows: Vec<DeviceRow>| rows[0].last_seen;
    store.touch_device(da, 1000 + 30_000).await.unwrap();
    assert_eq!(
        last_seen(store.list_devices(Some(&a.id)).await.unwrap()),
        1000
    );
    store.touch_device(da, 1000 + 61_000).await.unwrap();
    assert_eq!(
        last_seen(store.list_devices(Some(&a.id)).await.unwrap()),
        62_000
    );
    store.touch_device(da, 62_000 + 59_000).await.unwrap();
    assert_eq!(
        last_seen(store.list_devices(Some(&a.id)).await.unwrap()),
        62_000
    );
    // Other devices are not touched, and an unknown one is no error.
    store.touch_device(DeviceId::new(), 500_000).await.unwrap();
    let all = store.list_devices(None).await.unwrap();
    let b_row = all.iter().find(|d| d.id == db.to_string()).unwrap();
    assert_eq!(b_row.last_seen, 1000);
    store.finish().await;
}

/// A server secret is made once and is the same through every handle, even when two make it
/// at once.
pub(crate) async fn server_secrets_are_made_once<S: AccountStore + Fixture>(a: S, b: S) {
    let s1 = a.server_secret("refresh").await.unwrap();
    assert_eq!(s1.len(), 32);
    assert_eq!(a.server_secret("refresh").await.unwrap(), s1);
    assert_eq!(b.server_secret("refresh").await.unwrap(), s1);
    let other = b.server_secret("other").await.unwrap();
    assert_eq!(other.len(), 32);
    assert_ne!(other, s1);
    for n in 0..5 {
        let name = format!("race{n}");
        let (x, y) = tokio::join!(a.server_secret(&name), b.server_secret(&name));
        assert_eq!(x.unwrap(), y.unwrap(), "{name}");
    }
    b.finish().await;
    a.finish().await;
}

const GRACE: i64 = 10_000;

fn attempt<'a>(
    hash: &'a [u8],
    next_hash: &'a [u8],
    now: i64,
    device_id: Option<&'a str>,
) -> RefreshAttempt<'a> {
    RefreshAttempt {
        hash,
        next_hash,
        now,
        next_expires_at: now + 3_600_000,
        grace_ms: GRACE,
        device_id,
    }
}

async fn issue<S: AccountStore>(
    store: &S,
    hash: &[u8],
    family: &str,
    user: &str,
    device: &str,
    expires_at: i64,
) {
    store
        .insert_refresh_token(&NewRefreshToken {
            hash,
            family,
            user_id: user,
            device_id: device,
            issued_at: 0,
            expires_at,
        })
        .await
        .unwrap();
}

/// Rotation spends a token once: a retry by the same device within the grace window gets the
/// unused successor again; any other reuse revokes the family; an expired token is dead.
pub(crate) async fn refresh_tokens_rotate_and_reuse_revokes<S: AccountStore + Fixture>(store: S) {
    let (a, da, b, db) = two_users(&store).await;
    let (sa, sb) = (da.to_string(), db.to_string());
    let now = 1_000_000;
    let rotated = RefreshOutcome::Rotated {
        user_id: a.id.clone(),
        device_id: sa.clone(),
    };
    let dead = RefreshOutcome::Dead {
        device_id: sa.clone(),
    };

    // Family 1: rotate, retry, then a reuse from elsewhere.
    issue(&store, &[1; 32], "f1", &a.id, &sa, now + 60_000).await;
    let rotate = |h: &'static [u8], n: &'static [u8], t, dev| {
        let store = &store;
        async move {
            store
                .rotate_refresh_token(&attempt(h, n, t, dev))
                .await
                .unwrap()
        }
    };
    assert_eq!(rotate(&[1; 32], &[2; 32], now, Some(&sa)).await, rotated);
    assert_eq!(
        rotate(&[1; 32], &[2; 32], now + 1000, Some(&sa)).await,
        RefreshOutcome::Retried {
            user_id: a.id.clone(),
            device_id: sa.clone()
        }
    );
    // The successor is stored in the family with the user and device, and is good.
    assert_eq!(
        rotate(&[2; 32], &[3; 32], now + 2000, Some(&sa)).await,
        rotated
    );
    // Presenting the first token now is a reuse (its successor is spent): the family dies.
    assert_eq!(
        rotate(&[1; 32], &[2; 32], now + 3000, Some(&sa)).await,
        RefreshOutcome::Reused
    );
    assert_eq!(
        rotate(&[3; 32], &[4; 32], now + 4000, Some(&sa)).await,
        dead
    );
    // Spent and revoked, presented again: still a reuse.
    assert_eq!(
        rotate(&[2; 32], &[3; 32], now + 5000, Some(&sa)).await,
        RefreshOutcome::Reused
    );

    // Family 2: a spent token from another device, even within the grace window, is a reuse.
    issue(&store, &[11; 32], "f2", &a.id, &sa, now + 60_000).await;
    assert_eq!(rotate(&[11; 32], &[12; 32], now, Some(&sa)).await, rotated);
    assert_eq!(
        rotate(&[11; 32], &[12; 32], now + 1, Some(&sb)).await,
        RefreshOutcome::Reused
    );
    assert_eq!(rotate(&[12; 32], &[13; 32], now + 2, Some(&sa)).await, dead);

    // Family 3: the same device after the grace window is a reuse too.
    issue(&store, &[21; 32], "f3", &a.id, &sa, now + 60_000).await;
    assert_eq!(rotate(&[21; 32], &[22; 32], now, Some(&sa)).await, rotated);
    assert_eq!(
        rotate(&[21; 32], &[22; 32], now + GRACE + 1, Some(&sa)).await,
        RefreshOutcome::Reused
    );
    assert_eq!(
        rotate(&[22; 32], &[23; 32], now + GRACE + 2, Some(&sa)).await,
        dead
    );

    // Expiry: a token is dead from its expiry on; a retry without a device is no retry.
    issue(&store, &[31; 32], "f4", &a.id, &sa, now + 10).await;
    assert_eq!(
        rotate(&[31; 32], &[32; 32], now + 10, Some(&sa)).await,
        dead
    );
    assert_eq!(rotate(&[31; 32], &[32; 32], now + 9, None).await, rotated);
    assert_eq!(
        rotate(&[31; 32], &[32; 32], now + 9, None).await,
        RefreshOutcome::Reused
    );
    assert_eq!(
        rotate(&[99; 32], &[98; 32], now, Some(&sa)).await,
        RefreshOutcome::Unknown
    );

    // A user's live tokens are revoked together; the other user's stay.
    issue(&store, &[41; 32], "f5", &b.id, &sb, now + 60_000).await;
    issue(&store, &[42; 32], "f6", &b.id, &sb, now + 60_000).await;
    issue(&store, &[51; 32], "f7", &a.id, &sa, now + 60_000).await;
    assert_eq!(
        store
            .revoke_refresh_tokens_of_user(&b.id, now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .revoke_refresh_tokens_of_user(&b.id, now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        rotate(&[41; 32], &[43; 32], now + 1, Some(&sb)).await,
        RefreshOutcome::Dead {
            device_id: sb.clone()
        }
    );
    assert_eq!(
        rotate(&[51; 32], &[52; 32], now + 1, Some(&sa)).await,
        rotated
    );
    store.finish().await;
}

/// Two processes presenting one token at once: one rotates it, the other (the same device,
/// within the grace window) gets the same successor as a retry. Never two rotations.
pub(crate) async fn concurrent_presentations_rotate_once<S: AccountStore + Fixture>(a: S, b: S) {
    let (u, d, _, _) = two_users(&a).await;
    let dev = d.to_string();
    let now = 1_000_000;
    for n in 0..10u8 {
        let (hash, next) = ([n; 32], [n + 100; 32]);
        issue(&a, &hash, &format!("f{n}"), &u.id, &dev, now + 60_000).await;
        let presented = attempt(&hash, &next, now, Some(&dev));
        let (ra, rb) = tokio::join!(
            a.rotate_refresh_token(&presented),
            b.rotate_refresh_token(&presented),
        );
        let mut outcomes = [ra.unwrap(), rb.unwrap()];
        outcomes.sort_by_key(|o| matches!(o, RefreshOutcome::Retried { .. }));
        assert_eq!(
            outcomes,
            [
                RefreshOutcome::Rotated {
                    user_id: u.id.clone(),
                    device_id: dev.clone()
                },
                RefreshOutcome::Retried {
                    user_id: u.id.clone(),
                    device_id: dev.clone()
                }
            ],
            "round {n}"
        );
        // The successor is stored once and is good.
        assert!(matches!(
            b.rotate_refresh_token(&attempt(&next, &[n + 200; 32], now + 1, Some(&dev)))
                .await
                .unwrap(),
            RefreshOutcome::Rotated { .. }
        ));
    }
    b.finish().await;
    a.finish().await;
}

fn rejection<'a>(
    hash: &'a [u8; 32],
    user_id: &'a str,
    device: DeviceId,
    at: i64,
    place: Option<&'a str>,
) -> RejectionRow<'a> {
    RejectionRow {
        hash,
        record: RecordId::new(),
        user_id,
        device,
        code: "forbidden",
        message: "outside the grants",
        at,
        place,
        more: 0,
    }
}

/// Rejections are listed within the caller's places (by whole segments), newest first, in
/// pages by row id.
pub(crate) async fn rejections_are_listed_within_scopes_by_page<S: AccountStore + Fixture>(
    store: S,
) {
    let (a, da, _, _) = two_users(&store).await;
    let hash = [7u8; 32];
    let stranger = DeviceId::new();
    let now = crate::model::now_ms();
    let mut rows = vec![
        rejection(&hash, &a.id, da, now, Some("hz/a")),
        rejection(&hash, &a.id, da, now + 1, Some("hz/b")),
        rejection(&hash, &a.id, da, now + 2, Some("hz/a/x")),
        rejection(&hash, &a.id, da, now + 3, None),
        rejection(&hash, &a.id, da, now + 4, Some("hz/a0")),
        rejection(&hash, &a.id, stranger, now + 5, Some("hz/a")),
    ];
    rows[5].more = 12;
    rows[5].code = "too_large";
    store.record_rejections(&rows, 86_400_000).await.unwrap();
    store.record_rejections(&[], 86_400_000).await.unwrap();
    assert_eq!(store.rejection_count().await.unwrap(), 6);

    let ats = |v: &[RejectionView]| v.iter().map(|r| r.at - now).collect::<Vec<_>>();
    let first = store.list_rejections(&[p("hz/a")], None, 2).await.unwrap();
    assert_eq!(ats(&first), [5, 2]);
    assert!(first[0].id > first[1].id);
    let newest = &first[0];
    assert_eq!(
        (
            newest.user.as_str(),
            newest.device.as_str(),
            newest.device_name.as_str(),
            newest.code.as_str(),
            newest.message.as_str(),
            newest.place.as_deref(),
            newest.more,
            newest.record.as_str()
        ),
        (
            "a",
            stranger.to_string().as_str(),
            "",
            "too_large",
            "outside the grants",
            Some("hz/a"),
            12,
            rows[5].record.to_string().as_str()
        )
    );
    assert_eq!(newest.hash, "07".repeat(32));
    assert_eq!(first[1].device_name, "phone-a");
    let second = store
        .list_rejections(&[p("hz/a")], Some(first[1].id), 2)
        .await
        .unwrap();
    assert_eq!(ats(&second), [0]);
    assert!(
        store
            .list_rejections(&[p("hz/a")], Some(second[0].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    let all = store.list_rejections(&[p("hz")], None, 100).await.unwrap();
    assert_eq!(
        ats(&all),
        [5, 4, 2, 1, 0],
        "a row without a place is in no scope"
    );
    let two = store
        .list_rejections(&[p("hz/b"), p("hz/a0")], None, 100)
        .await
        .unwrap();
    assert_eq!(ats(&two), [4, 1]);
    assert!(
        store
            .list_rejections(&[], None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    store.finish().await;
}

/// Rejections older than the retention are forgotten by a later call; younger ones are kept.
pub(crate) async fn old_rejections_are_forgotten<S: AccountStore + Fixture>(store: S) {
    let (a, da, _, _) = two_users(&store).await;
    let hash = [0u8; 32];
    const DAY: i64 = 86_400_000;
    let now = crate::model::now_ms();
    let old = [
        rejection(&hash, &a.id, da, now - 10 * DAY, Some("hz")),
        rejection(&hash, &a.id, da, now - 10 * DAY, Some("hz")),
    ];
    store.record_rejections(&old, 7 * DAY).await.unwrap();
    let recent = [rejection(&hash, &a.id, da, now - 2 * DAY, Some("hz"))];
    store.record_rejections(&recent, 30 * DAY).await.unwrap();
    assert_eq!(store.rejection_count().await.unwrap(), 3, "none is due yet");
    let fresh = [rejection(&hash, &a.id, da, now, Some("hz"))];
    store.record_rejections(&fresh, 7 * DAY).await.unwrap();
    let left: Vec<i64> = store
        .list_rejections(&[p("hz")], None, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| (now - r.at) / DAY)
        .collect();
    assert_eq!(left, [0, 2]);
    store.finish().await;
}

/// A browser session lives until it is ended or goes idle; touching it keeps it alive.
pub(crate) async fn web_sessions_live_until_ended_or_idle<S: AccountStore + Fixture>(store: S) {
    let (a, da, b, db) = two_users(&store).await;
    let (sa, sb) = (da.to_string(), db.to_string());
    let (h1, h2) = ([1u8; 32], [2u8; 32]);
    store
        .insert_web_session(&NewWebSession {
            hash: &h1,
            user_id: &a.id,
            device_id: &sa,
            actor: "aa11",
            csrf: "csrf-1",
            session_epoch: 3,
            now: 1000,
        })
        .await
        .unwrap();
    store
        .insert_web_session(&NewWebSession {
            hash: &h2,
            user_id: &b.id,
            device_id: &sb,
            actor: "bb22",
            csrf: "csrf-2",
            session_epoch: 0,
            now: 1000,
        })
        .await
        .unwrap();
    let live = |r: Option<WebSessionRow>| {
        r.map(|r| {
            (
                r.user_id,
                r.device_id,
                r.actor,
                r.csrf,
                r.session_epoch,
                r.last_seen,
            )
        })
    };
    assert_eq!(
        live(store.web_session(&h1, 1000).await.unwrap()),
        Some((
            a.id.clone(),
            sa.clone(),
            "aa11".into(),
            "csrf-1".into(),
            3,
            1000
        ))
    );
    assert!(
        store.web_session(&h1, 1001).await.unwrap().is_none(),
        "idle"
    );
    store.touch_web_session(&h1, 5000).await.unwrap();
    assert_eq!(
        store
            .web_session(&h1, 4000)
            .await
            .unwrap()
            .unwrap()
            .last_seen,
        5000
    );
    assert!(store.web_session(&[3; 32], 0).await.unwrap().is_none());

    assert_eq!(
        store.end_web_session(&h1, 6000).await.unwrap(),
        Some(sa.clone())
    );
    assert_eq!(store.end_web_session(&h1, 7000).await.unwrap(), None);
    assert!(store.web_session(&h1, 0).await.unwrap().is_none());
    // An ended session is not revived by a touch.
    store.touch_web_session(&h1, 8000).await.unwrap();
    assert!(store.web_session(&h1, 0).await.unwrap().is_none());
    // The other session is untouched.
    assert_eq!(
        store.web_session(&h2, 1000).await.unwrap().unwrap().user_id,
        b.id
    );
    assert_eq!(store.end_web_session(&[3; 32], 6000).await.unwrap(), None);
    store.finish().await;
}

/// Runs every account conformance test against one backend: `$open` makes a fresh store,
/// `$again` opens a second handle (another process) on the same database.
macro_rules! account_store_conformance {
    ($backend:ident, $open:expr, $again:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn places_are_within_by_whole_segments() {
                super::places_are_within_by_whole_segments($open.await).await;
            }

            #[tokio::test]
            async fn users_by_name_and_id_and_session_epochs() {
                super::users_by_name_and_id_and_session_epochs($open.await).await;
            }

            #[tokio::test]
            async fn grants_carry_epochs_and_revoke() {
                super::grants_carry_epochs_and_revoke($open.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_grants_make_one_grant() {
                let a = $open.await;
                let b = $again(&a).await;
                super::concurrent_grants_make_one_grant(a, b).await;
            }

            #[tokio::test]
            async fn devices_register_revoke_and_answer_principal() {
                super::devices_register_revoke_and_answer_principal($open.await).await;
            }

            #[tokio::test]
            async fn touching_a_device_writes_only_when_stale() {
                super::touching_a_device_writes_only_when_stale($open.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server_secrets_are_made_once() {
                let a = $open.await;
                let b = $again(&a).await;
                super::server_secrets_are_made_once(a, b).await;
            }

            #[tokio::test]
            async fn refresh_tokens_rotate_and_reuse_revokes() {
                super::refresh_tokens_rotate_and_reuse_revokes($open.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_presentations_rotate_once() {
                let a = $open.await;
                let b = $again(&a).await;
                super::concurrent_presentations_rotate_once(a, b).await;
            }

            #[tokio::test]
            async fn rejections_are_listed_within_scopes_by_page() {
                super::rejections_are_listed_within_scopes_by_page($open.await).await;
            }

            #[tokio::test]
            async fn old_rejections_are_forgotten() {
                super::old_rejections_are_forgotten($open.await).await;
            }

            #[tokio::test]
            async fn web_sessions_live_until_ended_or_idle() {
                super::web_sessions_live_until_ended_or_idle($open.await).await;
            }
        }
    };
}

/// A SQLite store in a temporary directory, removed by [`Fixture::finish`].
async fn sqlite_store() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open_sqlite(&dir.join("linli.db"))
        .await
        .unwrap()
}

/// A second SQLite handle on the same file: its own pool and committer, as a second process.
async fn sqlite_again(store: &SqliteStore) -> SqliteStore {
    let path: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    SqliteStore::open_sqlite(std::path::Path::new(&path))
        .await
        .unwrap()
}

account_store_conformance!(sqlite, sqlite_store(), sqlite_again);
account_store_conformance!(postgres, PgTest::create(), PgTest::another_node);
