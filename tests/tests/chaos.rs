//! Story: a bad day in the field. Phones running the real device SDK against a real server while
//! the server is SIGKILLed (idle, mid-push, mid-bootstrap), a proxy drops, delays, duplicates,
//! reorders and cuts requests and replies, phone clocks jump a year either way and phone
//! processes die between an edit's save and its outbox row. After healing: nothing acknowledged
//! is lost, nothing is in the log twice, every phone holds the server's values. The harness is
//! `linli_tests::chaos` (and `linli-chaos` for soaks); the second test proves it can fail.

use linli_tests::chaos::{self, Config, Faults, Plant};
use linli_tests::sqlite_only;

/// Why the harness runs on SQLite only for now.
const CHAOS_ON_SQLITE: &str = "the chaos harness reads the server's log and checks its file \
     from SQLite; its PostgreSQL half (two nodes, the database restarted) is still to come";

/// Set `LINLI_CHAOS_SEED` to replay another seed.
fn seed(default: u64) -> u64 {
    std::env::var("LINLI_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn under_every_fault_nothing_acknowledged_is_lost_and_every_phone_converges() {
    if let Some(why) = sqlite_only(CHAOS_ON_SQLITE) {
        eprintln!("{why}");
        return;
    }
    let cfg = Config::bounded(seed(20_251_111), 700);
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
    if let Some(why) = sqlite_only(CHAOS_ON_SQLITE) {
        eprintln!("{why}");
        return;
    }
    let mut cfg = Config::bounded(seed(7), 150);
    cfg.faults = Faults {
        kill: false,
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
