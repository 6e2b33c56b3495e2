//! Administration: users, grants, devices, signing keys and places. The same operations serve
//! the admin HTTP API (`/v1/admin/…`, admins only) and the admin CLI (`linli-server user …`,
//! `grant`, `revoke`, `device …`, `keys …`, `place …`), which works on the data directory
//! directly, also while a server is running on it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use linli_sync_core::{DeviceId, PlaceId};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthUser, JwtKeys, KeyInfo, hash_password};
use crate::error::{Error, Result};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::model::{Place, PlaceLevel, Role, User, now_ms};
use crate::state::AppState;
use crate::store::prelude::*;
use crate::store::{DeviceRow, Store};

// ---------------------------------------------------------------------------------------------
// Operations

/// A user to create.
#[derive(Debug, Clone, Deserialize)]
pub struct NewUser {
    /// Login name: 2 to 32 of `a-z 0-9 _ . -`, starting with a letter or digit.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// `steward`, `bus`, `office` or `admin`.
    pub role: String,
    /// Name shown in the apps; the login name when empty.
    #[serde(default)]
    pub display_name: String,
}

/// A user as listed to admins (never the password hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role code.
    pub role: String,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// Granted places.
    pub places: Vec<String>,
}

fn check_username(name: &str) -> Result<()> {
    let ok = (2..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(
            "username: 2 to 32 of a-z, 0-9, '_', '.', '-', starting with a letter or digit".into(),
        ))
    }
}

fn check_password(password: &str) -> Result<()> {
    if (8..=256).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(Error::BadRequest("password: 8 to 256 characters".into()))
    }
}

async fn user_named(store: &Store, username: &str) -> Result<User> {
    store
        .user_by_username(username)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user '{username}'")))
}

fn parse_place(place: &str) -> Result<PlaceId> {
    place
        .trim()
        .parse()
        .map_err(|e: linli_sync_core::IdError| Error::BadRequest(e.to_string()))
}

/// Creates a user (409 if the name is taken).
pub async fn add_user(store: &Store, new: NewUser) -> Result<User> {
    let username = new.username.trim().to_string();
    check_username(&username)?;
    check_password(&new.password)?;
    let role: Role = new.role.trim().parse().map_err(Error::BadRequest)?;
    let display_name = match new.display_name.trim() {
        "" => username.clone(),
        d if d.chars().count() > 50 => {
            return Err(Error::BadRequest(
                "display_name: at most 50 characters".into(),
            ));
        }
        d => d.to_string(),
    };
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username,
        password_hash: hash_password(new.password).await?,
        role,
        display_name,
        disabled: false,
        session_epoch: 0,
    };
    store.insert_user(&user, now_ms()).await?;
    tracing::info!(username = %user.username, role = %user.role, "user added");
    Ok(user)
}

/// Disables (its tokens stop working at once, its refresh tokens are revoked) or enables a user.
pub async fn set_disabled(store: &Store, username: &str, disabled: bool) -> Result<()> {
    let user = user_named(store, username).await?;
    store.set_user_disabled(&user.id, disabled).await?;
    if disabled {
        store
            .revoke_refresh_tokens_of_user(&user.id, now_ms())
            .await?;
    }
    tracing::info!(username, disabled, "user disabled flag set");
    Ok(())
}

/// Sets a user's password and revokes their refresh tokens (every phone logs in again).
pub async fn set_password(store: &Store, username: &str, password: String) -> Result<()> {
    check_password(&password)?;
    let user = user_named(store, username).await?;
    let hash = hash_password(password).await?;
    store.set_password_hash(&user.id, &hash).await?;
    store
        .revoke_refresh_tokens_of_user(&user.id, now_ms())
        .await?;
    tracing::info!(username, "password set");
    Ok(())
}

/// Grants a place (which must exist); `false` if the grant was already there.
pub async fn grant(store: &Store, username: &str, place: &str) -> Result<bool> {
    let user = user_named(store, username).await?;
    let place = parse_place(place)?;
    if store.place(&place).await?.is_none() {
        return Err(Error::NotFound(format!("no place '{place}'")));
    }
    let new = store.grant(&user.id, &place).await?;
    tracing::info!(username, place = %place, new, "grant");
    Ok(new)
}

/// Revokes a grant (404 if there is none).
pub async fn revoke(store: &Store, username: &str, place: &str) -> Result<()> {
    let user = user_named(store, username).await?;
    let place = parse_place(place)?;
    if !store.revoke_grant(&user.id, &place).await? {
        return Err(Error::NotFound(format!(
            "{username} holds no grant on '{place}'"
        )));
    }
    tracing::info!(username, place = %place, "grant revoked");
    Ok(())
}

/// Revokes a device (404 if there is none).
pub async fn revoke_device(store: &Store, device: &str) -> Result<()> {
    let device: DeviceId = device
        .trim()
        .parse()
        .map_err(|e: linli_sync_core::IdError| Error::BadRequest(e.to_string()))?;
    if !store.revoke_device(device, now_ms()).await? {
        return Err(Error::NotFound(format!("no device {device}")));
    }
    tracing::info!(device = %device, "device revoked");
    Ok(())
}

/// Devices of one user (by login name) or of everyone.
pub async fn list_devices(store: &Store, username: Option<&str>) -> Result<Vec<DeviceRow>> {
    let user = match username.filter(|u| !u.is_empty()) {
        Some(u) => Some(user_named(store, u).await?),
        None => None,
    };
    Ok(store
        .list_devices(user.as_ref().map(|u| u.id.as_str()))
        .await?)
}

/// Every user with their grants.
pub async fn list_users(store: &Store) -> Result<Vec<UserView>> {
    let mut out = Vec::new();
    for u in store.list_users().await? {
        let places = store
            .grants_of(&u.id)
            .await?
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        out.push(UserView {
            username: u.username,
            display_name: u.display_name,
            role: u.role.as_str().into(),
            disabled: u.disabled,
            places,
        });
    }
    Ok(out)
}

/// A place to add to the tree.
#[derive(Debug, Clone, Deserialize)]
pub struct NewPlace {
    /// Its path, e.g. `hz/baiyang/haitian/haitiancheng/b7`.
    pub id: String,
    /// Chinese name.
    pub name: String,
    /// `district`, `street`, `community`, `estate`, `building`, `unit` or `household`.
    pub level: String,
}

/// Adds (or renames) a place; its parent must exist.
pub async fn add_place(store: &Store, new: NewPlace) -> Result<Place> {
    let id = parse_place(&new.id)?;
    let level: PlaceLevel = new.level.trim().parse().map_err(Error::BadRequest)?;
    let name = new.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::BadRequest("name: 1 to 100 characters".into()));
    }
    let parent = id.parent();
    if let Some(p) = &parent
        && store.place(p).await?.is_none()
    {
        return Err(Error::BadRequest(format!(
            "the parent place '{p}' does not exist"
        )));
    }
    let place = Place {
        id,
        parent,
        name,
        level,
    };
    store.upsert_place(&place).await?;
    Ok(place)
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The routes of this module (every one for admins only).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(http_users).post(http_add_user))
        .route("/v1/admin/users/{username}/disable", post(http_disable))
        .route("/v1/admin/users/{username}/enable", post(http_enable))
        .route("/v1/admin/users/{username}/password", put(http_password))
        .route(
            "/v1/admin/grants",
            post(http_grant).delete(http_revoke_grant),
        )
        .route("/v1/admin/devices", get(http_devices))
        .route("/v1/admin/devices/{id}/revoke", post(http_revoke_device))
        .route("/v1/admin/keys", get(http_keys))
        .route("/v1/admin/keys/rotate", post(http_rotate))
        .route("/v1/admin/places", post(http_add_place))
}

/// `{"users": [...]}`.
#[derive(Debug, Serialize)]
pub struct UserList {
    /// Every user.
    pub users: Vec<UserView>,
}

async fn http_users(State(state): State<AppState>, admin: AuthUser) -> Result<Json<UserList>> {
    admin.require_admin()?;
    Ok(Json(UserList {
        users: list_users(&state.store).await?,
    }))
}

async fn http_add_user(
    State(state): State<AppState>,
    admin: AuthUser,
    JsonBody(new): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<UserView>)> {
    admin.require_admin()?;
    let user = add_user(&state.store, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            username: user.username,
            display_name: user.display_name,
            role: user.role.as_str().into(),
            disabled: false,
            places: vec![],
        }),
    ))
}

async fn http_disable(
    State(state): State<AppState>,
    admin: AuthUser,
    PathParams(username): PathParams<String>,
) -> Result<StatusCode> {
    admin.require_admin()?;
    if username == admin.username {
        return Err(Error::Conflict("an admin cannot disable themselves".into()));
    }
    set_disabled(&state.store, &username, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn http_enable(
    State(state): State<AppState>,
    admin: AuthUser,
    PathParams(username): PathParams<String>,
) -> Result<StatusCode> {
    admin.require_admin()?;
    set_disabled(&state.store, &username, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/admin/users/{username}/password` body.
#[derive(Debug, Deserialize)]
pub struct PasswordBody {
    /// The new password.
    pub password: String,
}

async fn http_password(
    State(state): State<AppState>,
    admin: AuthUser,
    PathParams(username): PathParams<String>,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<StatusCode> {
    admin.require_admin()?;
    set_password(&state.store, &username, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A grant, in a body (`POST`) or the query (`DELETE`).
#[derive(Debug, Deserialize)]
pub struct GrantBody {
    /// The user's login name.
    pub username: String,
    /// The place path.
    pub place: String,
}

async fn http_grant(
    State(state): State<AppState>,
    admin: AuthUser,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<StatusCode> {
    admin.require_admin()?;
    Ok(if grant(&state.store, &body.username, &body.place).await? {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

async fn http_revoke_grant(
    State(state): State<AppState>,
    admin: AuthUser,
    QueryParams(q): QueryParams<GrantBody>,
) -> Result<StatusCode> {
    admin.require_admin()?;
    revoke(&state.store, &q.username, &q.place).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/admin/devices`.
#[derive(Debug, Deserialize)]
pub struct DeviceQuery {
    /// Only this user's devices.
    pub username: Option<String>,
}

/// `{"devices": [...]}`.
#[derive(Debug, Serialize)]
pub struct DeviceList {
    /// Newest-seen first.
    pub devices: Vec<DeviceRow>,
}

async fn http_devices(
    State(state): State<AppState>,
    admin: AuthUser,
    QueryParams(q): QueryParams<DeviceQuery>,
) -> Result<Json<DeviceList>> {
    admin.require_admin()?;
    Ok(Json(DeviceList {
        devices: list_devices(&state.store, q.username.as_deref()).await?,
    }))
}

async fn http_revoke_device(
    State(state): State<AppState>,
    admin: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    admin.require_admin()?;
    revoke_device(&state.store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"keys": [...]}`.
#[derive(Debug, Serialize)]
pub struct KeyList {
    /// The signing key first.
    pub keys: Vec<KeyInfo>,
}

async fn http_keys(State(state): State<AppState>, admin: AuthUser) -> Result<Json<KeyList>> {
    admin.require_admin()?;
    Ok(Json(KeyList {
        keys: state.keys.list().await?,
    }))
}

/// `POST /v1/admin/keys/rotate` body.
#[derive(Debug, Default, Deserialize)]
pub struct RotateBody {
    /// How long the previous keys keep verifying (default: one access-token lifetime).
    pub overlap_secs: Option<u64>,
}

/// `POST /v1/admin/keys/rotate` reply.
#[derive(Debug, Serialize)]
pub struct Rotated {
    /// The new signing key's id.
    pub kid: String,
}

async fn http_rotate(
    State(state): State<AppState>,
    admin: AuthUser,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Json<Rotated>> {
    admin.require_admin()?;
    let overlap = body
        .overlap_secs
        .map_or(state.config.token_ttl, Duration::from_secs);
    let kid = state.keys.rotate(overlap).await?;
    tracing::info!(kid = %kid, "signing keys rotated");
    Ok(Json(Rotated { kid }))
}

async fn http_add_place(
    State(state): State<AppState>,
    admin: AuthUser,
    JsonBody(body): JsonBody<NewPlace>,
) -> Result<(StatusCode, Json<Place>)> {
    admin.require_admin()?;
    Ok((
        StatusCode::CREATED,
        Json(add_place(&state.store, body).await?),
    ))
}

// ---------------------------------------------------------------------------------------------
// CLI

/// The admin CLI's subcommands and their execution.
pub mod cli {
    // The flattened `data` fields have their help on `DataDir`.
    #![allow(missing_docs)]

    use std::io::{BufRead, Write};
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::{Args, Subcommand};

    use super::*;
    use crate::config::Config;

    /// Where the data lives.
    #[derive(Debug, Clone, Args)]
    pub struct DataDir {
        /// Directory holding the SQLite database and the token signing keys.
        #[arg(long, env = "LINLI_DATA_DIR", default_value = "./data")]
        pub data_dir: PathBuf,
        /// The PostgreSQL database the server uses instead of the SQLite file, if it does.
        #[arg(long, env = "LINLI_DATABASE_URL")]
        pub database_url: Option<String>,
    }

    /// `linli-server user …`
    #[derive(Debug, Subcommand)]
    pub enum UserCommand {
        /// Add a user; the password is read from standard input (one line).
        Add {
            /// Login name.
            username: String,
            /// steward, bus, office or admin.
            #[arg(long)]
            role: String,
            /// Name shown in the apps.
            #[arg(long, default_value = "")]
            display_name: String,
            #[command(flatten)]
            data: DataDir,
        },
        /// Disable a user: their tokens stop working at once.
        Disable {
            /// Login name.
            username: String,
            #[command(flatten)]
            data: DataDir,
        },
        /// Enable a disabled user.
        Enable {
            /// Login name.
            username: String,
            #[command(flatten)]
            data: DataDir,
        },
        /// Set a password, read from standard input (one line); the user's phones log in again.
        Passwd {
            /// Login name.
            username: String,
            #[command(flatten)]
            data: DataDir,
        },
        /// List users with their roles and grants.
        List {
            #[command(flatten)]
            data: DataDir,
        },
    }

    /// `linli-server grant|revoke USER PLACE`
    #[derive(Debug, Clone, Args)]
    pub struct GrantArgs {
        /// Login name.
        pub username: String,
        /// Place path, e.g. hz/baiyang/haitian.
        pub place: String,
        #[command(flatten)]
        pub data: DataDir,
    }

    /// `linli-server device …`
    #[derive(Debug, Subcommand)]
    pub enum DeviceCommand {
        /// List devices, newest-seen first.
        List {
            /// Only this user's devices.
            #[arg(long)]
            user: Option<String>,
            #[command(flatten)]
            data: DataDir,
        },
        /// Revoke a device: it can no longer sync, refresh or log in.
        Revoke {
            /// Device id.
            device_id: String,
            #[command(flatten)]
            data: DataDir,
        },
    }

    /// `linli-server keys …`
    #[derive(Debug, Subcommand)]
    pub enum KeysCommand {
        /// List the signing keys (never their secrets).
        List {
            #[command(flatten)]
            data: DataDir,
        },
        /// Add a new signing key; the previous ones keep verifying for the overlap.
        Rotate {
            /// Seconds the previous keys keep verifying (default: the access-token lifetime).
            #[arg(long, default_value_t = 900)]
            overlap_secs: u64,
            #[command(flatten)]
            data: DataDir,
        },
    }

    /// `linli-server place …`
    #[derive(Debug, Subcommand)]
    pub enum PlaceCommand {
        /// Add or rename a place; its parent must exist.
        Add {
            /// Path, e.g. hz/baiyang/haitian/haitiancheng/b7.
            id: String,
            /// Chinese name.
            name: String,
            /// district, street, community, estate, building, unit or household.
            #[arg(long)]
            level: String,
            #[command(flatten)]
            data: DataDir,
        },
        /// List every place.
        List {
            #[command(flatten)]
            data: DataDir,
        },
    }

    async fn open(data: &DataDir) -> Result<Store> {
        if let Some(url) = &data.database_url {
            return Store::open_postgres(url).await;
        }
        let config = Config::new(&data.data_dir);
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Internal(format!("{}: {e}", config.data_dir.display())))?;
        Store::open_sqlite(&config.database_path()).await
    }

    fn read_password() -> Result<String> {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::BadRequest(format!("reading the password: {e}")))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    async fn keys(data: &DataDir) -> Result<JwtKeys> {
        JwtKeys::open(
            open(data).await?,
            &Config::new(&data.data_dir).legacy_keys_path(),
        )
        .await
    }

    /// Runs one admin command, printing its result on `out`.
    pub async fn run(command: crate::config::Command, out: &mut impl Write) -> Result<()> {
        use crate::config::Command as C;
        let io = |e: std::io::Error| Error::internal(e);
        match command {
            C::Serve(_) => return Err(Error::Internal("serve is not an admin command".into())),
            C::MigratePersonalData(data) => {
                let store = open(&data).await?;
                crate::personal_migration::migrate_personal_data(&store, out).await?;
            }
            C::MigrateStore { from, to } => crate::migrate_store::run(&from, &to, out).await?,
            C::User(UserCommand::Add {
                username,
                role,
                display_name,
                data,
            }) => {
                let store = open(&data).await?;
                let user = add_user(
                    &store,
                    NewUser {
                        username,
                        password: read_password()?,
                        role,
                        display_name,
                    },
                )
                .await?;
                writeln!(out, "added {} ({})", user.username, user.role).map_err(io)?;
            }
            C::User(UserCommand::Disable { username, data }) => {
                set_disabled(&open(&data).await?, &username, true).await?;
                writeln!(out, "disabled {username}").map_err(io)?;
            }
            C::User(UserCommand::Enable { username, data }) => {
                set_disabled(&open(&data).await?, &username, false).await?;
                writeln!(out, "enabled {username}").map_err(io)?;
            }
            C::User(UserCommand::Passwd { username, data }) => {
                let store = open(&data).await?;
                set_password(&store, &username, read_password()?).await?;
                writeln!(out, "password set for {username}").map_err(io)?;
            }
            C::User(UserCommand::List { data }) => {
                for u in list_users(&open(&data).await?).await? {
                    writeln!(
                        out,
                        "{:<12} {:<8} {:<9} {:<20} {}",
                        u.username,
                        u.role,
                        if u.disabled { "disabled" } else { "enabled" },
                        u.places.join(","),
                        u.display_name
                    )
                    .map_err(io)?;
                }
            }
            C::Grant(a) => {
                let new = grant(&open(&a.data).await?, &a.username, &a.place).await?;
                let what = if new { "granted" } else { "already granted" };
                writeln!(out, "{what}: {} {}", a.username, a.place).map_err(io)?;
            }
            C::Revoke(a) => {
                revoke(&open(&a.data).await?, &a.username, &a.place).await?;
                writeln!(out, "revoked: {} {}", a.username, a.place).map_err(io)?;
            }
            C::Device(DeviceCommand::List { user, data }) => {
                for d in list_devices(&open(&data).await?, user.as_deref()).await? {
                    let state = match d.revoked_at {
                        Some(_) => "revoked",
                        None => "active",
                    };
                    writeln!(
                        out,
                        "{} {:<12} {:<8} last seen {} {}",
                        d.id, d.username, state, d.last_seen, d.name
                    )
                    .map_err(io)?;
                }
            }
            C::Device(DeviceCommand::Revoke { device_id, data }) => {
                revoke_device(&open(&data).await?, &device_id).await?;
                writeln!(out, "revoked device {device_id}").map_err(io)?;
            }
            C::Keys(KeysCommand::List { data }) => {
                for k in keys(&data).await?.list().await? {
                    writeln!(
                        out,
                        "{} {} created {}{}{}",
                        k.kid,
                        k.alg,
                        k.created_at,
                        k.retire_at
                            .map(|t| format!(" retires {t}"))
                            .unwrap_or_default(),
                        if k.signing { " (signing)" } else { "" }
                    )
                    .map_err(io)?;
                }
            }
            C::Keys(KeysCommand::Rotate { overlap_secs, data }) => {
                let kid = keys(&data)
                    .await?
                    .rotate(Duration::from_secs(overlap_secs))
                    .await?;
                writeln!(
                    out,
                    "new signing key {kid}; previous keys verify for {overlap_secs} s more"
                )
                .map_err(io)?;
            }
            C::Place(PlaceCommand::Add {
                id,
                name,
                level,
                data,
            }) => {
                let place = add_place(&open(&data).await?, NewPlace { id, name, level }).await?;
                writeln!(out, "place {} {}", place.id, place.name).map_err(io)?;
            }
            C::Place(PlaceCommand::List { data }) => {
                let store = open(&data).await?;
                for p in store.all_places().await? {
                    writeln!(out, "{:<45} {:<10} {}", p.id, p.level.as_str(), p.name)
                        .map_err(io)?;
                }
            }
        }
        Ok(())
    }
}
