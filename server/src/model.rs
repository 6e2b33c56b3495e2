//! The server's own domain types: roles, place levels, users and places as stored.

use std::str::FromStr;

use linli_sync_core::PlaceId;
use serde::Serialize;

/// What a user does, which decides what they may see and edit (shared with phones: the field
/// rules live beside it in the core).
pub use linli_sync_core::rules::Role;

/// The level of a node in the place tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceLevel {
    /// 区 / 开发区.
    District,
    /// 街道.
    Street,
    /// 社区.
    Community,
    /// 小区.
    Estate,
    /// 楼栋 / 幢.
    Building,
    /// 单元.
    Unit,
    /// 户.
    Household,
}

impl PlaceLevel {
    /// Every level, from the root down.
    pub const ALL: [PlaceLevel; 7] = [
        Self::District,
        Self::Street,
        Self::Community,
        Self::Estate,
        Self::Building,
        Self::Unit,
        Self::Household,
    ];

    /// The stored code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::District => "district",
            Self::Street => "street",
            Self::Community => "community",
            Self::Estate => "estate",
            Self::Building => "building",
            Self::Unit => "unit",
            Self::Household => "household",
        }
    }
}

impl FromStr for PlaceLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown place level '{s}'"))
    }
}

/// A node of the place tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// Its path.
    pub id: PlaceId,
    /// The node above, `None` at the root.
    pub parent: Option<PlaceId>,
    /// Chinese name, e.g. 海天城小区.
    pub name: String,
    /// Its level.
    pub level: PlaceLevel,
}

/// A user account as stored.
#[derive(Debug, Clone)]
pub struct User {
    /// Opaque id (a UUID string), the token's `sub`.
    pub id: String,
    /// Login name, unique.
    pub username: String,
    /// The argon2 PHC string.
    pub password_hash: String,
    /// What the user does.
    pub role: Role,
    /// Name shown in the apps (Chinese).
    pub display_name: String,
    /// Disabled users cannot log in and their tokens stop working.
    pub disabled: bool,
    /// Bumped by a password reset or a disable: access tokens carry the epoch they were issued
    /// at, and one of an older epoch is refused.
    pub session_epoch: i64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub use linli_sync_core::hex::{decode as unhex, encode as hex};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse() {
        assert_eq!("office".parse::<Role>().unwrap(), Role::Office);
        assert!("boss".parse::<Role>().is_err());
        assert!(!Role::Steward.sees_personal_data());
    }
}
