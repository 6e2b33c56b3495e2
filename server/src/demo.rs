//! The demo district (`--demo`): the place tree from the source articles and one user per role.
//! Seeding is idempotent: existing users keep their password and are only re-granted.

use linli_sync_core::PlaceId;

use crate::auth::hash_password;
use crate::error::{Error, Result};
use crate::model::{Place, PlaceLevel, Role, User, now_ms};
use crate::store::Store;
use crate::store::prelude::*;

/// The password of every demo user.
pub const DEMO_PASSWORD: &str = "linli-demo";

/// A demo user: (username, role, display name, granted place).
pub const DEMO_USERS: &[(&str, Role, &str, &str)] = &[
    ("admin", Role::Admin, "系统管理员", "hz"),
    ("office1", Role::Office, "王敏（白杨街道办）", "hz/baiyang"),
    ("bus1", Role::Bus, "李强（直通车）", "hz/baiyang/haitian"),
    ("bus2", Role::Bus, "张伟（直通车）", "hz/baiyang/haitian"),
    (
        "steward1",
        Role::Steward,
        "陈建国（海天城3幢楼长）",
        "hz/baiyang/haitian/haitiancheng/b3",
    ),
    (
        "steward2",
        Role::Steward,
        "刘芳（文汇苑1幢楼长）",
        "hz/baiyang/dabei/wenhuiyuan/b1",
    ),
];

/// The demo place tree, parents first: (path, name, level).
pub fn demo_places() -> Vec<(String, String, PlaceLevel)> {
    let mut out: Vec<(String, String, PlaceLevel)> = vec![
        (
            "hz".into(),
            "杭州经济技术开发区".into(),
            PlaceLevel::District,
        ),
        ("hz/baiyang".into(), "白杨街道".into(), PlaceLevel::Street),
        (
            "hz/baiyang/haitian".into(),
            "海天社区".into(),
            PlaceLevel::Community,
        ),
        (
            "hz/baiyang/dabei".into(),
            "大北社区".into(),
            PlaceLevel::Community,
        ),
    ];
    let estates = [
        ("hz/baiyang/haitian/haitiancheng", "海天城小区", 6),
        ("hz/baiyang/haitian/tianyuan", "天元公寓", 3),
        ("hz/baiyang/dabei/wenhuiyuan", "文汇苑小区", 4),
    ];
    for (path, name, buildings) in estates {
        out.push((path.into(), name.into(), PlaceLevel::Estate));
        for b in 1..=buildings {
            out.push((
                format!("{path}/b{b}"),
                format!("{b}幢"),
                PlaceLevel::Building,
            ));
        }
    }
    out
}

/// Creates the demo places and users if they are missing.
pub async fn seed(store: &Store) -> Result<()> {
    for (path, name, level) in demo_places() {
        let id: PlaceId = path.parse().map_err(Error::internal)?;
        store
            .upsert_place(&Place {
                parent: id.parent(),
                id,
                name,
                level,
            })
            .await?;
    }
    for (username, role, display_name, grant) in DEMO_USERS {
        let user = match store.user_by_username(username).await? {
            Some(u) => u,
            None => {
                let user = User {
                    id: uuid::Uuid::new_v4().to_string(),
                    username: (*username).into(),
                    password_hash: hash_password(DEMO_PASSWORD.into()).await?,
                    role: *role,
                    display_name: (*display_name).into(),
                    disabled: false,
                    session_epoch: 0,
                };
                store.insert_user(&user, now_ms()).await?;
                user
            }
        };
        store
            .grant(&user.id, &grant.parse().map_err(Error::internal)?)
            .await?;
    }
    Ok(())
}

/// The lines printed at start-up in demo mode.
pub fn describe() -> String {
    let mut s = format!("demo users (password: {DEMO_PASSWORD}):\n");
    for (username, role, display_name, grant) in DEMO_USERS {
        s.push_str(&format!(
            "  {username:<9} {:<8} {grant:<40} {display_name}\n",
            role.as_str()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_well_formed() {
        let places = demo_places();
        for (path, _, _) in &places {
            let id: PlaceId = path.parse().unwrap();
            if let Some(parent) = id.parent() {
                assert!(
                    places.iter().any(|(p, _, _)| p == parent.as_str()),
                    "{path}"
                );
            }
        }
        for (_, _, _, grant) in DEMO_USERS {
            assert!(places.iter().any(|(p, _, _)| p == grant), "{grant}");
        }
    }
}
