//! Replays the fuzzers' kept corpus, every crasher they ever found, and Automerge's own published
//! fuzz crashers through the same entry points the fuzz targets run (`fuzz/`): each input must
//! end in an error or a clean accept, never a panic. Also runs the Automerge crashers through the
//! live sync endpoint: each gets a 4xx or a rejection, and the server keeps serving.
//!
//! `LINLI_WRITE_FUZZ_SEEDS=1 cargo test -p linli-server --test api fuzz_corpus` (re)writes the
//! seed inputs into `fuzz/corpus/`.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use linli_sync_core::ingest::{InflateBudget, fuzz, parse_change};
use linli_sync_core::protocol::{self, PushChange};
use linli_sync_core::{RecordDoc, RecordId, RecordKind};

use crate::common::TestApp;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != ".gitkeep"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn write_seeds_if_asked() {
    if std::env::var_os("LINLI_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    for (name, data, target) in fuzz::seed_inputs() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

#[test]
fn the_kept_corpus_and_every_crasher_replay_without_panicking() {
    write_seeds_if_asked();
    let mut replayed = 0;
    for (target, run) in [
        ("sync_decode", fuzz::sync_decode as fn(&[u8])),
        ("ingest", fuzz::ingest_change as fn(&[u8])),
    ] {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            corpus.len() >= 3,
            "the kept corpus of {target} is missing ({} files)",
            corpus.len()
        );
        // Crashers libFuzzer wrote (artifacts/) and the ones kept as regressions after a fix.
        let crashers = [
            files(&fuzz_dir().join("artifacts").join(target)),
            files(&fuzz_dir().join("regressions").join(target)),
        ]
        .concat();
        for (path, data) in corpus.iter().chain(&crashers) {
            let result = std::panic::catch_unwind(|| run(data));
            assert!(result.is_ok(), "{target} panicked on {}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}

fn automerge_crashers() -> Vec<(PathBuf, Vec<u8>)> {
    let crashers = files(&fuzz_dir().join("automerge-crashers"));
    assert!(
        crashers.len() >= 8,
        "Automerge's published fuzz crashers are missing from fuzz/automerge-crashers"
    );
    crashers
}

#[test]
fn automerge_published_fuzz_crashers_are_errors_not_panics() {
    for (path, data) in automerge_crashers() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let outcome = std::panic::catch_unwind(|| {
            let as_change = parse_change(&data, &mut InflateBudget::per_push());
            let as_doc = RecordDoc::load(RecordId::new(), &data);
            // As a pushed change under every kind and role, into an empty and a seeded case.
            for selector in 0..16u8 {
                let mut input = vec![selector];
                input.extend_from_slice(&data);
                fuzz::ingest_change(&input);
            }
            fuzz::sync_decode(&data);
            (as_change.is_err(), as_doc.is_err())
        });
        let (change_err, doc_err) = outcome.unwrap_or_else(|_| panic!("{name} panicked"));
        assert!(change_err, "{name} parsed as a change");
        assert!(
            doc_err || RecordDoc::load(RecordId::new(), &data).is_ok_and(|d| d.record().is_err()),
            "{name} loaded as a record"
        );
    }
}

#[tokio::test]
async fn automerge_crashers_pushed_to_the_server_are_refused_and_it_keeps_serving() {
    let app = TestApp::demo().await;
    let mut phone = app.login("bus1").await;
    let record = RecordId::new();
    let changes: Vec<PushChange> = automerge_crashers()
        .into_iter()
        .map(|(_, data)| PushChange {
            record: *record.as_bytes(),
            kind: RecordKind::Case,
            part: linli_sync_core::protocol::Part::Record,
            change: data,
        })
        .collect();
    // The crashers our own `ingest` fuzzer found in Automerge (first byte: kind and role), on
    // top of the fuzzer's seeded case, which is pushed first.
    let mut seed = fuzz::seeded().clone();
    let seed_push = PushChange {
        record: fuzz::SEED_RECORD,
        kind: RecordKind::Case,
        part: linli_sync_core::protocol::Part::Record,
        change: seed.0.changes()[0].raw_bytes().to_vec(),
    };
    let (status, reply) = app.sync(&mut phone, vec![seed_push], 0).await;
    assert_eq!((status, reply.accepted.len()), (StatusCode::OK, 1));
    let mut changes = changes;
    for (_, data) in files(&fuzz_dir().join("regressions").join("ingest")) {
        changes.push(PushChange {
            record: fuzz::SEED_RECORD,
            kind: RecordKind::Case,
            part: linli_sync_core::protocol::Part::Record,
            change: data[1..].to_vec(),
        });
    }
    let n = changes.len();
    let (status, reply) = app.sync(&mut phone, changes, 0).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.rejected.len(), n);
    assert!(reply.accepted.is_empty());
    // Automerge's crashers are refused as malformed; our own regressions were found on top of
    // the fuzzer's first seed, which no longer passes the authorship rules, so the server may
    // also refuse them as depending on changes it does not have (sync-core replays them on
    // that seed, where they reach Automerge).
    assert!(
        reply.rejected.iter().all(|r| matches!(
            r.code,
            linli_sync_core::protocol::RejectCode::MalformedChange
                | linli_sync_core::protocol::RejectCode::MissingDependencies
        )),
        "{:?}",
        reply.rejected
    );
    // Raw, as the whole body: a 400 with the decoder's reason.
    for (_, data) in automerge_crashers() {
        let (status, _, _) = app
            .sync_raw(&phone.token, protocol::CONTENT_TYPE, data)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _) = app.sync(&mut phone, vec![], 0).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}
