//! Story: two parts of the app (or two processes) open the same phone store at once and write
//! concurrently; nothing is lost, nothing is corrupted, tallies add up.

use std::sync::Arc;

use linli_ffi::FieldClient;

use crate::{fv, home, phone, value};

const ESTATE: &str = "hz/baiyang/haitian/haitiancheng";

#[test]
fn two_clients_on_one_directory_from_two_threads() {
    let (dir, first) = phone();
    let shared = first
        .create(
            linli_ffi::RecordKind::Bus,
            ESTATE.into(),
            fv(&[("run_number", "1801")]),
        )
        .unwrap();
    drop(first);

    let workers: Vec<_> = (0..2)
        .map(|w| {
            let home = home(&dir);
            let shared = shared.clone();
            std::thread::spawn(move || {
                let client = FieldClient::new(home, None, None, None).unwrap();
                let mut ids = Vec::new();
                for i in 0..50 {
                    let id = client
                        .create(
                            linli_ffi::RecordKind::Volunteer,
                            ESTATE.into(),
                            fv(&[("activity", &format!("worker {w} activity {i}"))]),
                        )
                        .unwrap();
                    ids.push(id);
                    client.tally(shared.clone(), "leaflets".into(), 1).unwrap();
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = workers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    let client = FieldClient::new(home(&dir), None, None, None).unwrap();
    let list = client.list().unwrap();
    assert_eq!(list.len(), 101);
    for id in &ids {
        assert!(list.iter().any(|r| &r.id == id), "{id} missing");
    }
    assert_eq!(value(&client, &shared)["leaflets"], 100);
    assert_eq!(client.outbox().unwrap().len(), 1 + 100 + 100);
    // Every change the shared actor made has its own sequence number: no clashes.
    let history = client.get(shared).unwrap().history;
    assert_eq!(history.len(), 101);
}

#[test]
fn one_client_shared_between_threads() {
    let (_dir, client) = phone();
    let client = Arc::new(client);
    let id = client
        .create(
            linli_ffi::RecordKind::Bus,
            ESTATE.into(),
            fv(&[("run_number", "1802")]),
        )
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let client = Arc::clone(&client);
            let id = id.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    client.tally(id.clone(), "consultations".into(), 2).unwrap();
                    client.list().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(value(&client, &id)["consultations"], 80);
}
