//! Story: a bad day in the field. Phones running the real device SDK against a real server while
//! the server is SIGKILLed (idle, mid-push, mid-bootstrap), a proxy drops, delays, duplicates,
//! reorders and cuts requests and replies, phone clocks jump a year either way and phone
//! processes die between an edit's save and its outbox row. After healing: nothing acknowledged
//! is lost, nothing is in the log twice, every phone holds the server's values. The harness is
//! `linli_tests::chaos` (and `linli-chaos` for soaks); the second test proves it can fail.
//!
//! When the stories run on PostgreSQL (`LINLI_STORIES_POSTGRES`), so does the harness: two
//! server nodes on a private PostgreSQL cluster made for the run (so that crashing the database
//! leaves the shared one, and the other stories on it, alone), phones spreading their requests
//! over both nodes, node kills, and the database crashed and recovered between and during
//! requests.

use linli_tests::chaos::{self, Config, Faults, Plant, StoreKind};
use linli_tests::stories_postgres;

/// The store of this pass of the stories.
fn store() -> StoreKind {
    if stories_postgres().is_some() {
        StoreKind::Postgres
    } else {
        StoreKind::Sqlite
    }
}

/// Set `LINLI_CHAOS_SEED` to replay another seed.
fn seed(default: u64) -> u64 {
    std::env::var("LINLI_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn under_every_fault_nothing_acknowledged_is_lost_and_every_phone_converges() {
    let mut cfg = Config::bounded(seed(20_251_111), 700);
    cfg.store = store();
    let out = chaos::run(&cfg);
    eprintln!("{}", out.figures);
    assert!(out.ok(), "{}", out.failure_report(150));
    let f = &out.figures;
    // Every fault kind was really injected.
    assert!(
        f.kills_idle > 0 && f.kills_mid_request > 0 && f.kills_mid_bootstrap > 0,
        "{f}"
    );
    assert!(
        f.restarts > 0 && f.clock_jumps > 0 && f.phone_crashes > 0,
        "{f}"
    );
    assert!(f.offline_spells > 0, "{f}");
    if cfg.store == StoreKind::Postgres {
        assert_eq!(f.nodes, 2, "{f}");
        assert!(
            f.db_crashes_idle + f.db_crashes_mid_request > 0 && f.db_recoveries > 0,
            "the database was never crashed: {f}"
        );
    }
    for kind in [
        "drop",
        "delay",
        "duplicate",
        "reorder",
        "cut_request",
        "cut_reply",
    ] {
        let n = f
            .faults
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n);
        assert!(n > 0, "no {kind} fault was injected: {f}");
    }
    assert!(f.changes_checked > 0 && f.edits_saved > 100, "{f}");
    assert_eq!((f.losses, f.duplicates, f.divergent_records), (0, 0, 0));
}

#[test]
fn the_harness_catches_a_server_that_acknowledges_without_committing() {
    let mut cfg = Config::bounded(seed(7), 150);
    cfg.store = store();
    cfg.faults = Faults {
        kill: false,
        database: false,
        proxy: false,
        clock: false,
        phone_crash: false,
        offline: false,
    };
    cfg.phones = 3;
    cfg.max_phones = 3;
    cfg.plant = Some((Plant::AckWithoutCommit, 0.3));
    let out = chaos::run(&cfg);
    eprintln!("{}", out.figures);
    assert!(
        !out.ok(),
        "the planted fault went unnoticed: {}",
        out.figures
    );
    assert!(out.figures.losses > 0, "{}", out.failure_report(40));
    assert!(
        out.problems.iter().any(|p| p.starts_with("LOSS")),
        "{:?}",
        out.problems
    );
}
