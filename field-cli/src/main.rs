//! `linli-field`: a command-line phone over the Linli device SDK ([`linli_ffi::FieldClient`]).
//!
//! Every command a steward or bus team has on the phone, for demos, scripts and end-to-end tests.
//! With `--json` each command prints one machine-readable JSON value on stdout; errors exit
//! non-zero with a one-line message on stderr (and `{"error": code, "message": …}` on stdout
//! under `--json`).

mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use linli_ffi::{ApiError, ConnectionOptions, FieldClient, FieldValue, RecordKind};
use serde_json::{Value, json};

/// 邻里 Linli field phone: capture cases, bus sessions, steward contacts and volunteer logs
/// offline, and sync them with the server.
#[derive(Debug, Parser)]
#[command(name = "linli-field", version, after_help = EXIT_CODES)]
struct Cli {
    /// The phone's data directory (its store is DIR/linli-phone.db). 手机数据目录
    #[arg(long, value_name = "DIR", env = "LINLI_FIELD_HOME")]
    home: String,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,

    /// A PEM file of a CA certificate to trust beside the system's (for a server with a
    /// certificate from an intranet's own CA); repeatable. 额外信任的CA证书
    #[arg(long, global = true, value_name = "PEM", env = "LINLI_CA_CERT")]
    ca_cert: Vec<std::path::PathBuf>,

    /// Development only: allow plain http:// to hosts other than this machine (passwords and
    /// residents' data would cross the network unencrypted).
    #[arg(long, global = true)]
    allow_insecure_http: bool,

    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 2 invalid input, 3 offline (server unreachable), \
4 unauthorized, 5 forbidden, 6 not found, 7 conflict, 8 on-device storage, 9 server error, \
10 TLS (the server's certificate was refused), 11 device revoked (this phone was erased).";

/// Record kinds. 记录类型
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// 诉求: a case raised by a resident.
    Case,
    /// 直通车班次 / 三方联合接访: a service-bus session or joint reception.
    Bus,
    /// 走访记录: a steward's contact with a household.
    Contact,
    /// 志愿服务: a volunteer activity.
    Volunteer,
}

impl From<Kind> for RecordKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Case => RecordKind::Case,
            Kind::Bus => RecordKind::Bus,
            Kind::Contact => RecordKind::Contact,
            Kind::Volunteer => RecordKind::Volunteer,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in to a server and remember the token (needs the server). 登录
    Login {
        /// Server URL, e.g. https://linli.example.gov.cn (plain http:// only to this machine).
        #[arg(long, value_name = "URL")]
        server: String,
        /// User name. 用户名
        #[arg(long, value_name = "U")]
        user: String,
        /// Password (or set LINLI_PASSWORD). 密码
        #[arg(long, value_name = "P", env = "LINLI_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Create a record and print its id (works offline). 新建记录
    New {
        /// What to create.
        kind: Kind,
        /// The place it belongs to, e.g. hz/baiyang/haitian/haitiancheng. 位置
        #[arg(long, value_name = "P")]
        place: String,
        /// First fields as field=value (lists comma-separated). See `kinds` for the fields.
        #[arg(value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Set fields of a record (works offline). 修改字段
    Set {
        /// Record id.
        id: String,
        /// field=value pairs; an empty value clears an optional field.
        #[arg(value_name = "FIELD=VALUE", required = true)]
        fields: Vec<String>,
    },
    /// Add N to a tally such as leaflets (works offline; concurrent tallies add up). 计数
    Tally {
        /// Record id.
        id: String,
        /// Tally field, e.g. leaflets, consultations, residents_served.
        field: String,
        /// How much to add (negative to correct a miscount).
        #[arg(allow_negative_numbers = true)]
        n: i64,
    },
    /// Add a note to a record (works offline). 备注
    Note {
        /// Record id.
        id: String,
        /// The note.
        text: String,
    },
    /// List the records on this phone. 记录列表
    List,
    /// Show a record: its fields, conflicting values with who set each, and its history. 详情
    Show {
        /// Record id.
        id: String,
    },
    /// Send unsent changes and receive others' (needs the server). 同步
    Sync,
    /// Show changes waiting to be sent and those the server refused. 待发送
    Outbox,
    /// Discard a refused change (and unsent changes that build on it). 放弃被拒修改
    Discard {
        /// Outbox entry number, from `outbox`.
        #[arg(value_name = "N")]
        n: i64,
    },
    /// Show this phone's device id and who is logged in. 当前用户
    Whoami,
    /// Forget the login token; records and unsent changes stay. 退出登录
    Logout,
    /// List the record kinds and their fields, labels and allowed codes. 字段说明
    Kinds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(out) => {
            if json {
                println!("{}", out.json);
            } else if !out.text.is_empty() {
                println!("{}", out.text.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                println!("{}", json!({ "error": e.code(), "message": e.to_string() }));
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &ApiError) -> u8 {
    match e {
        ApiError::InvalidInput { .. } => 2,
        ApiError::Offline { .. } => 3,
        ApiError::Unauthorized { .. } => 4,
        ApiError::Forbidden { .. } => 5,
        ApiError::NotFound { .. } => 6,
        ApiError::Conflict { .. } => 7,
        ApiError::Storage { .. } => 8,
        ApiError::Server { .. } => 9,
        ApiError::Tls { .. } => 10,
        ApiError::DeviceRevoked { .. } => 11,
    }
}

/// A command's result in both forms.
struct Output {
    json: Value,
    text: String,
}

impl Output {
    fn new(json: Value, text: impl Into<String>) -> Self {
        Self {
            json,
            text: text.into(),
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn parse_fields(items: &[String]) -> Result<Vec<FieldValue>, ApiError> {
    items.iter().map(|s| FieldValue::parse(s)).collect()
}

fn run(cli: Cli) -> Result<Output, ApiError> {
    let home = cli.home;
    let mut extra_ca_certs_pem = Vec::new();
    for path in &cli.ca_cert {
        extra_ca_certs_pem.push(std::fs::read_to_string(path).map_err(|e| {
            ApiError::InvalidInput {
                field: "ca_cert".into(),
                reason: format!("{}: {e}", path.display()),
            }
        })?);
    }
    let connection = ConnectionOptions {
        extra_ca_certs_pem,
        allow_insecure_http: cli.allow_insecure_http,
    };
    let open = || FieldClient::new(home.clone(), None, Some(connection.clone()), None);
    Ok(match cli.command {
        Command::Login {
            server,
            user,
            password,
        } => {
            let u = open()?.login(user, password, Some(server))?;
            let text = format!(
                "logged in as {} ({}, {}) 已登录",
                u.username, u.display_name, u.role
            );
            Output::new(to_json(&u), text)
        }
        Command::New {
            kind,
            place,
            fields,
        } => {
            let id = open()?.create(kind.into(), place, parse_fields(&fields)?)?;
            Output::new(json!({ "id": id }), id)
        }
        Command::Set { id, fields } => {
            open()?.set(id.clone(), parse_fields(&fields)?)?;
            Output::new(json!({ "ok": true, "id": id }), "saved 已保存")
        }
        Command::Tally { id, field, n } => {
            let phone = open()?;
            phone.tally(id.clone(), field.clone(), n)?;
            let total = serde_json::from_str::<Value>(&phone.get(id.clone())?.value_json)
                .ok()
                .and_then(|v| v.get(&field).cloned())
                .unwrap_or(Value::Null);
            Output::new(
                json!({ "ok": true, "id": id, "field": field, "total": total }),
                format!("{field} = {total}"),
            )
        }
        Command::Note { id, text } => {
            open()?.note(id.clone(), text)?;
            Output::new(json!({ "ok": true, "id": id }), "note added 已添加备注")
        }
        Command::List => {
            let list = open()?.list()?;
            Output::new(to_json(&list), render::list(&list))
        }
        Command::Show { id } => {
            let view = open()?.get(id)?;
            Output::new(render::view_json(&view), render::view(&view))
        }
        Command::Sync => {
            let report = open()?.sync()?;
            Output::new(to_json(&report), render::sync(&report))
        }
        Command::Outbox => {
            let items = open()?.outbox()?;
            Output::new(to_json(&items), render::outbox(&items))
        }
        Command::Discard { n } => {
            let removed = open()?.discard(n)?;
            Output::new(
                json!({ "removed": removed }),
                format!("discarded {removed} change(s) 已放弃"),
            )
        }
        Command::Whoami => {
            let me = open()?.whoami()?;
            Output::new(to_json(&me), render::whoami(&me))
        }
        Command::Logout => {
            open()?.logout()?;
            Output::new(json!({ "ok": true }), "logged out 已退出登录")
        }
        Command::Kinds => {
            let kinds = linli_ffi::record_kinds();
            Output::new(to_json(&kinds), render::kinds(&kinds))
        }
    })
}
