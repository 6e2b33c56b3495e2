//! Administration pages for `admin`: users (add, disable, enable, reset password), grants on the
//! place tree, devices (revoke), places, signing keys, and the rejected pushes. Everything the
//! admin CLI does, through the same operations in [`crate::admin`], for people who don't use a
//! shell.

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};

use super::session::{Fields, Posted, WebUser};
use super::view::{self, Nav, PlaceNames};
use super::{WebError, WebResult, render};
use crate::admin::{self, NewPlace, NewUser, UserView};
use crate::auth::KeyInfo;
use crate::error::Error;
use crate::model::{Place, Role};
use crate::state::AppState;
use crate::store::prelude::*;
use crate::store::{DeviceRow, RejectionView};

/// The routes of the administration pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/users") }))
        .route("/admin/users", get(users).post(add_user))
        .route("/admin/users/{name}/disable", post(disable))
        .route("/admin/users/{name}/enable", post(enable))
        .route("/admin/users/{name}/password", post(password))
        .route("/admin/users/{name}/grant", post(grant))
        .route("/admin/users/{name}/revoke", post(revoke))
        .route("/admin/devices", get(devices))
        .route("/admin/devices/{id}/revoke", post(revoke_device))
        .route("/admin/places", get(places).post(add_place))
        .route("/admin/keys", get(keys))
        .route("/admin/keys/rotate", post(rotate))
        .route("/admin/rejections", get(rejections))
}

fn require_admin(user: &WebUser) -> WebResult<()> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(WebError::page(
            StatusCode::FORBIDDEN,
            "系统管理页面仅供系统管理员使用。",
        ))
    }
}

fn flash(query: Option<String>) -> Option<String> {
    let q = Fields::parse(query.unwrap_or_default().as_bytes());
    Some(
        match q.get("done")? {
            "user" => "用户已添加。",
            "disable" => "账号已停用，其登录和会话立即失效。",
            "enable" => "账号已启用。",
            "password" => "密码已重置，原有登录立即失效。",
            "grant" => "已授权。",
            "revoke" => "授权已撤销，相关记录将在手机下次同步时移除。",
            "device" => "设备已吊销，该手机下次联网时将清除本地数据。",
            "place" => "地点已保存。",
            "keys" => "签名密钥已轮换。",
            _ => return None,
        }
        .to_string(),
    )
}

/// A refused admin operation: its message on an error page.
fn refused(e: Error) -> WebError {
    match e {
        Error::BadRequest(m)
        | Error::Conflict(m)
        | Error::NotFound(m)
        | Error::Unprocessable(m) => {
            WebError::page(StatusCode::BAD_REQUEST, format!("无法保存：{m}"))
        }
        other => other.into(),
    }
}

fn back(to: &str, done: &str) -> WebResult {
    Ok(Redirect::to(&format!("{to}?done={done}")).into_response())
}

/// A user row with its role's label and its grants' names.
pub struct UserRow {
    /// The user.
    pub user: UserView,
    /// Role label.
    pub role: &'static str,
    /// (path, name) of each grant.
    pub grants: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    nav: Nav,
    flash: Option<String>,
    users: Vec<UserRow>,
    places: Vec<(String, String)>,
    roles: Vec<(&'static str, &'static str)>,
}

async fn place_options(state: &AppState) -> WebResult<Vec<(String, String)>> {
    let names = PlaceNames::load(&state.store).await?;
    Ok(state
        .store
        .all_places()
        .await?
        .into_iter()
        .map(|p| {
            let id = p.id.to_string();
            let label = format!("{}（{}）", names.label(&id), id);
            (id, label)
        })
        .collect())
}

async fn users(State(state): State<AppState>, user: WebUser, RawQuery(q): RawQuery) -> WebResult {
    require_admin(&user)?;
    let names = PlaceNames::load(&state.store).await?;
    let users = admin::list_users(&state.store)
        .await?
        .into_iter()
        .map(|u| UserRow {
            role: u
                .role
                .parse::<Role>()
                .map(view::role_label)
                .unwrap_or("未知"),
            grants: u
                .places
                .iter()
                .map(|p| (p.clone(), names.label(p)))
                .collect(),
            user: u,
        })
        .collect();
    render(&UsersPage {
        nav: Nav::new(&user, "admin"),
        flash: flash(q),
        users,
        places: place_options(&state).await?,
        roles: [Role::Steward, Role::Bus, Role::Office, Role::Admin]
            .into_iter()
            .map(|r| (r.as_str(), view::role_label(r)))
            .collect(),
    })
}

async fn add_user(State(state): State<AppState>, Posted { user, form }: Posted) -> WebResult {
    require_admin(&user)?;
    let new = NewUser {
        username: form.get("username").unwrap_or("").to_string(),
        password: form.get("password").unwrap_or("").to_string(),
        role: form.get("role").unwrap_or("").to_string(),
        display_name: form.get("display_name").unwrap_or("").to_string(),
    };
    let created = admin::add_user(&state.store, new).await.map_err(refused)?;
    if let Some(place) = form.get("place") {
        admin::grant(&state.store, &created.username, place)
            .await
            .map_err(refused)?;
    }
    back("/admin/users", "user")
}

async fn disable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { user, .. }: Posted,
) -> WebResult {
    require_admin(&user)?;
    if name == user.auth.username {
        return Err(WebError::page(
            StatusCode::BAD_REQUEST,
            "不能停用自己的账号。",
        ));
    }
    admin::set_disabled(&state.store, &name, true)
        .await
        .map_err(refused)?;
    back("/admin/users", "disable")
}

async fn enable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { user, .. }: Posted,
) -> WebResult {
    require_admin(&user)?;
    admin::set_disabled(&state.store, &name, false)
        .await
        .map_err(refused)?;
    back("/admin/users", "enable")
}

async fn password(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    require_admin(&user)?;
    let password = form.get("password").unwrap_or("").to_string();
    admin::set_password(&state.store, &name, password)
        .await
        .map_err(refused)?;
    back("/admin/users", "password")
}

async fn grant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    require_admin(&user)?;
    admin::grant(&state.store, &name, form.get("place").unwrap_or(""))
        .await
        .map_err(refused)?;
    back("/admin/users", "grant")
}

async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    require_admin(&user)?;
    admin::revoke(&state.store, &name, form.get("place").unwrap_or(""))
        .await
        .map_err(refused)?;
    back("/admin/users", "revoke")
}

/// A device row for the page.
pub struct DeviceLine {
    /// The device.
    pub device: DeviceRow,
    /// First login.
    pub created: String,
    /// Last seen.
    pub last_seen: String,
    /// Revoked when.
    pub revoked: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_devices.html")]
struct DevicesPage {
    nav: Nav,
    flash: Option<String>,
    devices: Vec<DeviceLine>,
}

async fn devices(State(state): State<AppState>, user: WebUser, RawQuery(q): RawQuery) -> WebResult {
    require_admin(&user)?;
    let devices = admin::list_devices(&state.store, None)
        .await?
        .into_iter()
        .map(|d| DeviceLine {
            created: view::time(d.created_at),
            last_seen: view::time(d.last_seen),
            revoked: d.revoked_at.map(view::time),
            device: d,
        })
        .collect();
    render(&DevicesPage {
        nav: Nav::new(&user, "admin"),
        flash: flash(q),
        devices,
    })
}

async fn revoke_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted,
) -> WebResult {
    require_admin(&user)?;
    if id == user.auth.device_id.to_string() {
        return Err(WebError::page(
            StatusCode::BAD_REQUEST,
            "这是您当前使用的浏览器，请用“退出”结束会话。",
        ));
    }
    admin::revoke_device(&state.store, &id)
        .await
        .map_err(refused)?;
    back("/admin/devices", "device")
}

#[derive(Template)]
#[template(path = "admin_places.html")]
struct PlacesPage {
    nav: Nav,
    flash: Option<String>,
    places: Vec<(Place, &'static str, usize)>,
    levels: Vec<(&'static str, &'static str)>,
}

fn level_label(level: crate::model::PlaceLevel) -> &'static str {
    use crate::model::PlaceLevel::*;
    match level {
        District => "区",
        Street => "街道",
        Community => "社区",
        Estate => "小区",
        Building => "楼栋",
        Unit => "单元",
        Household => "户",
    }
}

async fn places(State(state): State<AppState>, user: WebUser, RawQuery(q): RawQuery) -> WebResult {
    require_admin(&user)?;
    let places = state
        .store
        .all_places()
        .await?
        .into_iter()
        .map(|p| {
            let depth = p.id.depth();
            (p.clone(), level_label(p.level), depth.saturating_sub(1))
        })
        .collect();
    render(&PlacesPage {
        nav: Nav::new(&user, "admin"),
        flash: flash(q),
        places,
        levels: crate::model::PlaceLevel::ALL
            .into_iter()
            .map(|l| (l.as_str(), level_label(l)))
            .collect(),
    })
}

async fn add_place(State(state): State<AppState>, Posted { user, form }: Posted) -> WebResult {
    require_admin(&user)?;
    admin::add_place(
        &state.store,
        NewPlace {
            id: form.get("id").unwrap_or("").to_string(),
            name: form.get("name").unwrap_or("").to_string(),
            level: form.get("level").unwrap_or("").to_string(),
        },
    )
    .await
    .map_err(refused)?;
    back("/admin/places", "place")
}

#[derive(Template)]
#[template(path = "admin_keys.html")]
struct KeysPage {
    nav: Nav,
    flash: Option<String>,
    keys: Vec<(KeyInfo, String, String)>,
}

async fn keys(State(state): State<AppState>, user: WebUser, RawQuery(q): RawQuery) -> WebResult {
    require_admin(&user)?;
    let keys = state
        .keys
        .list()
        .await?
        .into_iter()
        .map(|k| {
            let until = match (k.signing, k.retire_at) {
                (true, _) => "正在签发".to_string(),
                (false, Some(t)) => format!("仅验证，{} 后停用", view::time(t)),
                (false, None) => "仅验证".to_string(),
            };
            let created = view::time(k.created_at);
            (k, created, until)
        })
        .collect();
    render(&KeysPage {
        nav: Nav::new(&user, "admin"),
        flash: flash(q),
        keys,
    })
}

async fn rotate(State(state): State<AppState>, Posted { user, .. }: Posted) -> WebResult {
    require_admin(&user)?;
    let kid = state.keys.rotate(state.config.token_ttl).await?;
    tracing::info!(kid = %kid, by = %user.auth.username, "signing keys rotated from the web");
    back("/admin/keys", "keys")
}

/// A rejection row for the page.
pub struct RejectionLine {
    /// The rejection.
    pub r: RejectionView,
    /// When.
    pub at: String,
    /// Place names.
    pub place: String,
}

#[derive(Template)]
#[template(path = "admin_rejections.html")]
struct RejectionsPage {
    nav: Nav,
    rows: Vec<RejectionLine>,
    next: Option<i64>,
}

async fn rejections(
    State(state): State<AppState>,
    user: WebUser,
    RawQuery(q): RawQuery,
) -> WebResult {
    require_admin(&user)?;
    let q = Fields::parse(q.unwrap_or_default().as_bytes());
    let before = q.get("before").and_then(|b| b.parse().ok());
    let names = PlaceNames::load(&state.store).await?;
    let mut rows = state
        .store
        .list_rejections(&user.auth.places, before, 101)
        .await?;
    let next = if rows.len() > 100 {
        rows.truncate(100);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    let rows = rows
        .into_iter()
        .map(|r| RejectionLine {
            at: view::time(r.at),
            place: r
                .place
                .as_deref()
                .map(|p| names.label(p))
                .unwrap_or_default(),
            r,
        })
        .collect();
    render(&RejectionsPage {
        nav: Nav::new(&user, "admin"),
        rows,
        next,
    })
}
