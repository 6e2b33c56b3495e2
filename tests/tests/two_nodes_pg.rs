//! Issue 10, several nodes: two `linli-server` processes on one PostgreSQL database (whatever
//! backend the other stories run on). A phone on node A and a phone on node B edit one case
//! offline; after each syncs with its own node they hold the same merged case; and a phone
//! listening on node B hears of a change committed through node A within a second (node A
//! announces its commit through PostgreSQL's NOTIFY; node B relays it to its live streams).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linli_ffi::LiveListener;

use crate::common::*;

struct Heard(Mutex<Sender<Vec<String>>>);

impl LiveListener for Heard {
    fn on_changes(&self, record_ids: Vec<String>) {
        let _ = self.0.lock().unwrap().send(record_ids);
    }
}

fn next_ids(rx: &Receiver<Vec<String>>, within: Duration) -> Option<Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(ids) if ids.is_empty() => continue,
            Ok(ids) => return Some(ids),
            Err(_) => return None,
        }
    }
}

#[test]
fn phones_on_two_nodes_converge_and_a_listener_on_b_hears_of_a_within_a_second() {
    let url = fresh_postgres_database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    use_database(dir_a.path(), &url);
    use_database(dir_b.path(), &url);
    let node_a = ServerProcess::start(dir_a.path());
    let node_b = ServerProcess::start(dir_b.path());
    let on_a = Phone::login(&node_a, "bus1");
    let on_b = Phone::login(&node_b, "bus2");
    on_b.sync();
    let (tx, rx) = channel();
    let stop = AtomicBool::new(false);

    let case = std::thread::scope(|s| {
        let listening = s.spawn(|| {
            let heard = Arc::new(Heard(Mutex::new(tx.clone())));
            while !stop.load(Ordering::SeqCst) {
                on_b.client.listen(heard.clone()).expect("listen");
            }
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).expect("hello"),
            Vec::<String>::new()
        );

        // A case recorded on A's phone, pushed to node A: B's phone, listening on node B, is
        // told within a second.
        let case = on_a.create(
            "case",
            HAITIANCHENG,
            &[("summary", "5幢电梯异响"), ("source", "bus_session")],
        );
        assert_eq!(on_a.sync().accepted, 1);
        let pushed = Instant::now();
        let ids = next_ids(&rx, Duration::from_secs(1)).expect("heard within a second");
        eprintln!(
            "node B's listener heard of node A's commit after {:?}",
            pushed.elapsed()
        );
        assert_eq!(ids, vec![case.clone()]);
        assert_eq!(on_b.sync().pulled, 1);

        // Offline, both edit the case; then each syncs with its own node.
        on_a.set(&case, &[("category", "facilities")]);
        on_a.note(&case, "已报物业维修");
        on_b.set(&case, &[("status", "assigned")]);
        on_b.note(&case, "电梯公司明日到场");
        assert_eq!(on_a.sync().accepted, 2);
        assert_eq!(on_b.sync().accepted, 2);
        on_a.sync();
        stop.store(true, Ordering::SeqCst);
        on_b.client.stop_listening();
        listening.join().expect("the listening thread ends");
        case
    });
    let (va, vb) = (on_a.value(&case), on_b.value(&case));
    assert_eq!(va, vb, "the phones converge");
    assert_eq!(va["category"], "facilities");
    assert_eq!(va["status"], "assigned");
    assert_eq!(va["notes"].as_array().map(Vec::len), Some(2));
}
