//! Whole-system stories: the real server binary, phones running the real device SDK.

mod browser_office;
mod browser_smoke;
mod chaos;
mod common;
mod field_cli;
mod field_rules;
mod forged_actor;
mod grant_growth;
mod hostile_auth;
mod hostile_input;
mod hostile_steward;
mod idempotent_push;
mod live;
mod no_skip;
mod ops;
mod personal_data;
mod personal_migration;
mod restart;
mod revocation;
mod story_bus_run;
mod tls;
mod token_expiry;
mod two_nodes_keys;
mod two_nodes_pg;
mod web_office;
mod web_office_more;
