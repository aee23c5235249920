//! The `delegation_pending` gauge stays exactly the memory ledger's count of undelivered
//! completions through every path a completion takes, and a durable queue counts what its
//! ledger held before it opened and what other handles wrote, from the sweep on. Each test uses its own local
//! debugging recorder (`metrics::with_local_recorder`), so they can share one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use process_registry::metrics::PENDING;
use process_registry::*;

fn event(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

/// Sums the gauge's deltas (a debugging snapshot resets gauges).
struct Pending {
    snapshotter: Snapshotter,
    value: f64,
}

impl Pending {
    fn now(&mut self) -> f64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if key.key().name() == PENDING {
                if let DebugValue::Gauge(change) = value {
                    self.value += change.into_inner();
                }
            }
        }
        self.value
    }
}

fn with_gauge(test: impl FnOnce(&mut Pending)) {
    let recorder = DebuggingRecorder::new();
    let mut gauge = Pending {
        snapshotter: recorder.snapshotter(),
        value: 0.0,
    };
    ::metrics::with_local_recorder(&recorder, || test(&mut gauge));
}

fn undelivered(queue: &CompletionQueue) -> f64 {
    queue.backend().count_undelivered().unwrap() as f64
}

struct Dead(&'static str);
impl Liveness for Dead {
    fn is_alive(&self, instance: &str) -> bool {
        instance != self.0
    }
}

/// Leases that run out, lost acks, dropped claims, the last attempt, requeues, plain
/// takes, drains, the async streams, two queues on one ledger with a recovered owner, the
/// restore horizon, and the queues dropped: after each, the gauge is the ledger's count.
#[test]
fn every_path_keeps_the_gauge_exact() {
    with_gauge(|gauge| {
        let clock = Arc::new(ManualClock::new(1_000_000.0));
        let ledger: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::with_clock(clock.clone()));
        let config = LedgerConfig::default()
            .with_lease(Duration::from_secs(10))
            .with_max_attempts(2)
            .with_restore_horizon(Duration::from_secs(100));
        let a = CompletionQueue::builder_shared(Arc::clone(&ledger))
            .instance("a")
            .config(config.clone())
            .open()
            .unwrap();
        for n in 0..8 {
            a.put(event(&n.to_string()));
        }
        assert_eq!(gauge.now(), 8.0);
        // Lease expiry, re-claim; the first claim's ack is ClaimLost.
        let first = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        clock.advance(Duration::from_secs(11));
        let second = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        assert!(matches!(first.ack(), Err(SettleError::ClaimLost)));
        assert_eq!(gauge.now(), 8.0);
        second.ack().unwrap();
        assert_eq!(gauge.now(), 7.0);
        // An expired claim taken plainly; the claim's ack is lost afterwards.
        let stale = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        clock.advance(Duration::from_secs(11));
        let seq_of_stale = stale.key().into_owned();
        let taken = a.try_take().unwrap();
        let _ = (seq_of_stale, taken);
        assert!(matches!(stale.ack(), Err(SettleError::ClaimLost)));
        assert_eq!(gauge.now(), 6.0);
        assert_eq!(gauge.now(), undelivered(&a));
        // Dropped undecided on the last attempt: dead.
        let c = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        drop(c); // attempt 1 -> released with backoff
        clock.advance(Duration::from_secs(400));
        let c = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        assert_eq!(c.attempt(), 2);
        drop(c); // last attempt -> dead
        assert_eq!(gauge.now(), undelivered(&a));
        // Release on the last attempt.
        let c = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        c.release("x").unwrap();
        clock.advance(Duration::from_secs(400));
        let c = a.claim(&ClaimFilter::any()).unwrap().unwrap();
        assert_eq!(c.release("x").unwrap(), Released::Dead);
        assert_eq!(gauge.now(), undelivered(&a));
        // requeue, requeue_dead
        let dead = a
            .rows(&RowQuery {
                delivery: Some(DeliveryState::Dead),
                ..RowQuery::default()
            })
            .unwrap();
        assert!(a.requeue(dead[0].seq).unwrap());
        assert!(!a.requeue(dead[0].seq).unwrap());
        assert_eq!(a.requeue_dead().unwrap(), 1);
        assert_eq!(gauge.now(), undelivered(&a));
        // take_where, drain, async stream and next_event.
        assert_eq!(a.take_where(|_| true).len() + a.drain().len(), 6);
        assert_eq!(gauge.now(), 0.0);
        a.put(event("s1"));
        a.put(event("s2"));
        a.put(event("s3"));
        let _ = futures_executor::block_on(a.next_event()).unwrap();
        {
            use futures_core::Stream;
            let mut events = std::pin::pin!(a.events());
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(events.as_mut().poll_next(&mut cx).is_ready());
            let mut claims = std::pin::pin!(a.claims(ClaimFilter::any()));
            match claims.as_mut().poll_next(&mut cx) {
                std::task::Poll::Ready(Some(Ok(claim))) => {
                    claim.ack().unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(gauge.now(), 0.0);
        // Two queues on one memory ledger; b recovers a's running row as unknown, and
        // a's own completion then arrives as a new row.
        let Recorded::Dispatch(record) = a
            .record_dispatch(
                "deleg_00000001",
                "",
                Event::from(AsyncDelegationEvent::default()),
            )
            .unwrap()
        else {
            panic!()
        };
        let b = CompletionQueue::builder_shared(Arc::clone(&ledger))
            .instance("b")
            .liveness(Dead("a"))
            .config(config.clone())
            .open()
            .unwrap();
        assert_eq!(gauge.now(), 1.0, "recovered as unknown");
        let committed = a
            .record_completion(
                record,
                "deleg_00000001",
                "completed",
                Arc::new(AsyncDelegationEvent::default().into()),
            )
            .unwrap();
        drop(committed);
        assert_eq!(gauge.now(), 2.0);
        assert_eq!(gauge.now(), undelivered(&a));
        // Restore horizon expiry of a's (dead owner's) put.
        a.put(event("old"));
        b.sweep().unwrap(); // adopts it as restored
        clock.advance(Duration::from_secs(101));
        b.sweep().unwrap(); // expires it
        assert_eq!(gauge.now(), undelivered(&a));
        assert_eq!(
            gauge.now(),
            0.0,
            "all three of a's rows were restored, then expired"
        );
        a.put(event("fresh"));
        drop(ledger);
        drop(a);
        assert_eq!(gauge.now(), 1.0, "b still holds the ledger");
        drop(b);
        assert_eq!(gauge.now(), 0.0);
    });
}

/// Rows written to a memory ledger through the backend before a queue opens on it count
/// from the open (else taking them would drive the gauge below zero).
#[test]
fn rows_written_before_the_queue_opens_count() {
    with_gauge(|gauge| {
        let ledger = MemoryLedger::new();
        ledger
            .insert_pending(NewPending {
                owner: current_instance(),
                event: event("before the queue"),
            })
            .unwrap();
        let queue = CompletionQueue::builder(ledger).open().unwrap();
        assert_eq!(undelivered(&queue), 1.0);
        assert_eq!(gauge.now(), 1.0, "the row waiting at open");
        queue.try_take().unwrap();
        assert_eq!(gauge.now(), 0.0, "taken");
    });
}

/// The next completion, claimed.
fn next(queue: &CompletionQueue) -> process_registry::Claim {
    queue.claim(&ClaimFilter::any()).unwrap().unwrap()
}

#[test]
fn the_pending_gauge_follows_every_arrival_and_departure() {
    with_gauge(the_pending_gauge_follows);
}

fn the_pending_gauge_follows(gauge: &mut Pending) {
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
    sqlite(gauge);
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
