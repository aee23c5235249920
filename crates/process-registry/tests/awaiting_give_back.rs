//! What an async consumer's look took for a future dropped before it returned, on a store
//! whose calls may block (the look runs on the queue's offload threads): it comes back
//! whole — counted right by the `delegation_pending` gauge, and still in a durable store
//! when the store refuses the give-back and the queue then ends. Each store call the
//! tests need to hold or refuse goes through a wrapper (`support/forwarding.rs`). Every
//! wait is bounded by a generous guard; nothing measures time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/forwarding.rs"]
mod forwarding;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use forwarding::{forward_ledger, Forwarding};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use process_registry::metrics::PENDING;
use process_registry::{
    CandidateQuery, Capabilities, ClaimFilter, CompletionQueue, Event, LedgerBackend, LedgerError,
    MemoryLedger, NewPending, PendingRefused, TakenRow, WatchOverflow,
};

/// Long enough for any machine; a wait that needs it has failed.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn numbered(n: u64) -> Event {
    Event::WatchOverflowReleased(WatchOverflow {
        suppressed: Some(n.into()),
        ..WatchOverflow::default()
    })
}

/// A store that says its calls may block; a take that found a row tells `taken` and
/// answers once `go` says so; every pending write is refused while `refuse` is set
/// (telling `refused`).
struct Refusing<B: LedgerBackend> {
    inner: B,
    refuse: AtomicBool,
    taken: Mutex<mpsc::Sender<()>>,
    go: Mutex<mpsc::Receiver<()>>,
    refused: Mutex<mpsc::Sender<()>>,
}

/// The test's ends of a [`Refusing`] store's signals.
struct Signals {
    took: mpsc::Receiver<()>,
    go: mpsc::Sender<()>,
    refused: mpsc::Receiver<()>,
}

impl<B: LedgerBackend> Refusing<B> {
    fn new(inner: B) -> (Arc<Self>, Signals) {
        let (taken, took) = mpsc::channel();
        let (go, gone) = mpsc::channel();
        let (refused, was_refused) = mpsc::channel();
        let wrapper = Arc::new(Refusing {
            inner,
            refuse: AtomicBool::new(false),
            taken: Mutex::new(taken),
            go: Mutex::new(gone),
            refused: Mutex::new(refused),
        });
        let signals = Signals {
            took,
            go,
            refused: was_refused,
        };
        (wrapper, signals)
    }
}

impl<B: LedgerBackend> Forwarding for Refusing<B> {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            may_block: true,
            ..self.inner.capabilities()
        }
    }
    fn insert_pending(&self, row: NewPending<'_>) -> Result<u64, PendingRefused> {
        if self.refuse.load(Ordering::SeqCst) {
            let _ = self.refused.lock().unwrap().send(());
            return Err(PendingRefused {
                error: LedgerError::Unwritable {
                    reason: "the disk is full".to_owned(),
                },
                event: Box::new(row.event),
            });
        }
        self.inner.insert_pending(row)
    }
    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<TakenRow>, LedgerError> {
        let taken = self.inner.take_next(query)?;
        if taken.is_some() {
            let _ = self.taken.lock().unwrap().send(());
            let _ = self.go.lock().unwrap().recv_timeout(HANG_GUARD);
        }
        Ok(taken)
    }
}
forward_ledger!(Refusing<MemoryLedger>);
#[cfg(feature = "sqlite")]
forward_ledger!(Refusing<process_registry::SqliteLedger>);

/// Polls `next_event` once (its look starts on an offload thread), waits until the look
/// took the event, drops the future and lets the look answer: what it took is the
/// offload thread's to give back.
fn take_for_a_dropped_future(queue: &CompletionQueue, signals: &Signals) {
    let mut taking = Box::pin(queue.next_event());
    let polled = Pin::new(&mut taking).poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "the look runs off this thread");
    signals
        .took
        .recv_timeout(HANG_GUARD)
        .expect("the look took the event");
    drop(taking);
    signals.go.send(()).unwrap();
}

/// The gauge's value: the sum of its deltas (a debugging snapshot resets gauges).
fn gauge(snapshotter: &metrics_util::debugging::Snapshotter, value: &mut f64) -> f64 {
    for (key, _, _, change) in snapshotter.snapshot().into_vec() {
        if key.key().name() == PENDING {
            if let DebugValue::Gauge(change) = change {
                *value += change.into_inner();
            }
        }
    }
    *value
}

/// The gauge stays the ledger's count of undelivered completions through a give-back the
/// store takes, one it refuses (kept in memory), and the sweep that writes it after all.
#[test]
fn the_gauge_follows_every_give_back() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut value = 0.0;
    metrics::with_local_recorder(&recorder, || {
        let (store, signals) = Refusing::new(MemoryLedger::new());
        let queue = CompletionQueue::builder_shared(Arc::clone(&store) as Arc<dyn LedgerBackend>)
            .open()
            .unwrap();
        let undelivered = || queue.backend().count_undelivered().unwrap() as f64;
        queue.try_put(numbered(1)).unwrap();
        queue.try_put(numbered(2)).unwrap();
        assert_eq!(gauge(&snapshotter, &mut value), 2.0);

        // Given back: pending again, counted once.
        take_for_a_dropped_future(&queue, &signals);
        let claim = queue
            .claim_timeout(&ClaimFilter::any(), HANG_GUARD)
            .unwrap()
            .unwrap();
        claim.ack().unwrap();
        let claim = queue
            .claim_timeout(&ClaimFilter::any(), HANG_GUARD)
            .unwrap()
            .unwrap();
        claim.defer().unwrap();
        // Both events went round once; one is left, pending.
        assert_eq!(undelivered(), 1.0);
        assert_eq!(gauge(&snapshotter, &mut value), undelivered());

        // Refused: kept in memory, not counted, until a sweep writes it.
        store.refuse.store(true, Ordering::SeqCst);
        take_for_a_dropped_future(&queue, &signals);
        signals
            .refused
            .recv_timeout(HANG_GUARD)
            .expect("the give-back was tried");
        // The put-back's bookkeeping follows its refused write on the offload thread:
        // the sweep below, on this thread, cannot run before it has finished (it takes
        // the outbox that the give-back fills) — wait for the row count to say so.
        assert_eq!(undelivered(), 0.0);
        store.refuse.store(false, Ordering::SeqCst);
        let mut swept = 0;
        while undelivered() == 0.0 {
            swept += 1;
            assert!(swept < 1_000_000, "the sweep writes the kept event");
            queue.sweep().unwrap();
            std::thread::yield_now();
        }
        assert_eq!(undelivered(), 1.0);
        assert_eq!(gauge(&snapshotter, &mut value), 1.0);
    });
}

/// A durable store: an event taken for a future that was dropped, whose give-back the store
/// refuses, is still in the store when the queue ends (as a process ends), for the next
/// queue to take. Before the future was dropped nobody received it: a durable completion
/// must not become one held only in this process's memory.
#[cfg(feature = "sqlite")]
#[test]
#[ignore = "open finding: fails on the build under review — the give-back appends a new row, and when the store refuses it the event lives only in the queue's outbox, lost when the queue ends"]
fn a_refused_give_back_loses_nothing_from_a_durable_store() {
    let dir = std::env::temp_dir().join(format!("awaiting-give-back-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.sqlite3");
    let (store, signals) = Refusing::new(process_registry::SqliteLedger::open(&path).unwrap());
    let queue = CompletionQueue::builder_shared(Arc::clone(&store) as Arc<dyn LedgerBackend>)
        .open()
        .unwrap();
    queue.try_put(numbered(7)).unwrap();
    store.refuse.store(true, Ordering::SeqCst);
    take_for_a_dropped_future(&queue, &signals);
    signals
        .refused
        .recv_timeout(HANG_GUARD)
        .expect("the give-back was tried");
    drop(queue);

    let reopened = CompletionQueue::builder(process_registry::SqliteLedger::open(&path).unwrap())
        .open()
        .unwrap();
    let claim = reopened
        .claim(&ClaimFilter::any())
        .unwrap()
        .expect("the completion nobody received is still in the store");
    claim.ack().unwrap();
    drop(reopened);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
