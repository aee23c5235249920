//! The queue's `delegation_pending` gauge, read through a debugging recorder installed as
//! the global one (this binary has this one test): every way a completion arrives or
//! leaves moves it by exactly one, and a durable ledger's earlier and foreign rows count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use process_registry::metrics::PENDING;
use process_registry::{ClaimFilter, CompletionQueue, Event, LedgerConfig, WatchOverflow};

fn event(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

/// The gauge's value. A debugging snapshot hands out a gauge's changes since the last
/// one (it resets it to zero), so the reader adds them up.
struct Pending {
    snapshotter: Snapshotter,
    value: f64,
}

impl Pending {
    fn now(&mut self) -> f64 {
        let found = self
            .snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, _, _, _)| key.key().name() == PENDING);
        match found {
            Some((_, _, _, DebugValue::Gauge(change))) => self.value += change.into_inner(),
            other => panic!("{PENDING}: {other:?}"),
        }
        self.value
    }
}

/// The next completion, claimed.
fn next(queue: &CompletionQueue) -> process_registry::Claim {
    queue.claim(&ClaimFilter::any()).unwrap().unwrap()
}

#[test]
fn the_pending_gauge_follows_every_arrival_and_departure() {
    let recorder = DebuggingRecorder::new();
    let mut gauge = Pending {
        snapshotter: recorder.snapshotter(),
        value: 0.0,
    };
    recorder.install().unwrap();

    // A memory queue: every change is counted as it happens.
    let queue = CompletionQueue::new();
    for n in 0..6 {
        queue.put(event(&format!("{n}")));
    }
    assert_eq!(gauge.now(), 6.0);
    queue.try_take().unwrap();
    assert_eq!(gauge.now(), 5.0, "a plain take delivers");
    let claim = next(&queue);
    assert_eq!(gauge.now(), 5.0, "a claimed completion still waits");
    claim.ack().unwrap();
    assert_eq!(gauge.now(), 4.0, "acked");
    next(&queue).defer().unwrap();
    next(&queue).release("the chat API is down").unwrap();
    assert_eq!(gauge.now(), 4.0, "deferred and released ones wait");
    next(&queue).dead("no route").unwrap();
    assert_eq!(gauge.now(), 3.0, "dead");
    assert_eq!(queue.requeue_dead().unwrap(), 1);
    assert_eq!(gauge.now(), 4.0, "requeued");
    assert_eq!(queue.drain().len(), 3, "the released one is backing off");
    assert_eq!(gauge.now(), 1.0);
    drop(queue);
    assert_eq!(gauge.now(), 0.0, "a dropped memory queue takes its rows");

    #[cfg(feature = "sqlite")]
    sqlite(&mut gauge);
}

/// A durable queue counts what its ledger held before it opened and what other handles
/// wrote, from the sweep on.
#[cfg(feature = "sqlite")]
fn sqlite(gauge: &mut Pending) {
    use process_registry::{LedgerBackend, NewPending, SqliteLedger};
    use std::time::Duration;

    let dir = std::env::temp_dir().join(format!("pending-gauge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ledger.sqlite3");
    let config = LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600));
    let open = || {
        CompletionQueue::builder(SqliteLedger::open(&file).unwrap())
            .config(config.clone())
            .open()
            .unwrap()
    };

    let queue = open();
    queue.put(event("a"));
    queue.put(event("b"));
    assert_eq!(gauge.now(), 2.0);
    drop(queue);
    assert_eq!(gauge.now(), 0.0, "a closed queue no longer reports");

    let queue = open();
    assert_eq!(gauge.now(), 2.0, "the rows of the earlier run");
    let other = SqliteLedger::open(&file).unwrap();
    other
        .insert_pending(NewPending {
            owner: queue.instance(),
            event: event("from another process"),
        })
        .unwrap();
    assert_eq!(gauge.now(), 2.0, "not seen until the sweep");
    queue.sweep().unwrap();
    assert_eq!(gauge.now(), 3.0);
    assert_eq!(queue.drain().len(), 3);
    assert_eq!(gauge.now(), 0.0);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}
