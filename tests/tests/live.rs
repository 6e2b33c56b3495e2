//! Issue 10, live updates: a phone that listens (`GET /v1/live` through the SDK) hears at once that
//! another phone changed a case in its places, and syncs when told; it is not told of its own
//! changes; the stream ends when the access token expires, and listening again refreshes the
//! login and goes on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linli_ffi::LiveListener;

use crate::common::*;

struct Heard {
    tx: Mutex<Sender<Vec<String>>>,
    /// Empty lists heard: each stream's first is its hello, sent once it is subscribed.
    opened: Arc<AtomicUsize>,
}

impl LiveListener for Heard {
    fn on_changes(&self, record_ids: Vec<String>) {
        if record_ids.is_empty() {
            self.opened.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.tx.lock().unwrap().send(record_ids);
    }
}

/// Ends the app's listening loop when dropped: a failed step then fails the story, where the
/// scope would otherwise wait forever for a loop that listens again after every stream.
struct StopListening<'a> {
    stop: &'a AtomicBool,
    phone: &'a Phone,
}

impl Drop for StopListening<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.phone.client.stop_listening();
    }
}

/// The next non-empty list of changed records (the empty ones say "sync once": a stream opened).
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
fn a_listening_phone_hears_of_others_changes_and_syncs_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(dir.path(), &[("LINLI_ACCESS_TOKEN_TTL", "6")]);
    let a = Phone::login(&server, "bus1");
    let b = Phone::login(&server, "bus2");
    b.sync();
    let (tx, rx) = channel();
    let wait = Duration::from_secs(5);
    let stop = AtomicBool::new(false);
    let opened = Arc::new(AtomicUsize::new(0));

    std::thread::scope(|s| {
        let listening = s.spawn(|| {
            let heard = Arc::new(Heard {
                tx: Mutex::new(tx.clone()),
                opened: opened.clone(),
            });
            // The app's loop: listen again whenever the stream ends (the token expired).
            while !stop.load(Ordering::SeqCst) {
                b.client.listen(heard.clone()).expect("listen");
            }
        });
        let stopping = StopListening {
            stop: &stop,
            phone: &b,
        };

        // Step 1: the stream opens and says "sync once now".
        assert_eq!(rx.recv_timeout(wait).expect("hello"), Vec::<String>::new());

        // Step 2: bus1 records a case elsewhere; bus2's phone is told which record changed.
        let case = a.create(
            "case",
            HAITIANCHENG,
            &[("summary", "8幢地下室积水"), ("category", "facilities")],
        );
        let pushed = Instant::now();
        assert_eq!(a.sync().accepted, 1);
        let ids = next_ids(&rx, wait).expect("bus2 hears of the case");
        eprintln!("heard {:?} after the push", pushed.elapsed());
        assert_eq!(ids, vec![case.clone()]);
        assert_eq!(b.sync().pulled, 1, "synced when told");
        assert!(b.client.get(case.clone()).is_ok());

        // Step 3: bus2's own change is not announced back to it.
        b.note(&case, "已联系物业抽水");
        assert_eq!(b.sync().accepted, 1);
        assert_eq!(
            next_ids(&rx, Duration::from_millis(1500)),
            None,
            "a phone is not told of its own change"
        );

        // Step 4: the token expires (6 s): the stream ends, the app listens again with a
        // refreshed login, and hears bus1's next change. bus1 waits for the new stream's hello:
        // a change committed before the stream subscribed is not announced on it (its hello
        // says "sync once" instead).
        let deadline = Instant::now() + Duration::from_secs(20);
        while opened.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the stream never ended");
            std::thread::sleep(Duration::from_millis(100));
        }
        a.set(&case, &[("status", "assigned")]);
        assert_eq!(a.sync().accepted, 1);
        assert_eq!(
            next_ids(&rx, wait).expect("heard again"),
            vec![case.clone()]
        );
        drop(stopping);
        listening.join().expect("the listening thread ends");
    });
    assert_eq!(b.sync().pulled, 1);
}
