//! What an async consumer's look claimed for a future dropped before it returned, on a
//! store whose calls may block (the look runs on the queue's offload threads): it comes
//! back whole — deferred, its attempt given back, counted right by the `delegation_pending`
//! gauge — and stays in a durable store when the store refuses the give-back and the
//! queue then ends. Each store call the
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
    Capabilities, ClaimFilter, ClaimToken, ClaimedRow, CompletionQueue, Event, LedgerBackend,
    LedgerConfig, LedgerError, MemoryLedger, NewClaim, Settle, WatchOverflow,
};

/// Long enough for any machine; a wait that needs it has failed.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn numbered(n: u64) -> Event {
    Event::WatchOverflowReleased(WatchOverflow {
        suppressed: Some(n.into()),
        ..WatchOverflow::default()
    })
}

/// A store that says its calls may block; a claim that found a row while `hold` is set
/// tells `taken` and answers once `go` says so; every settle is refused while `refuse` is set (telling
/// `refused`).
struct Refusing<B: LedgerBackend> {
    inner: B,
    /// The next claim that finds a row waits for `go` (set by the test, once).
    hold: AtomicBool,
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
            hold: AtomicBool::new(false),
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
    fn settle(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        settle: Settle<'_>,
    ) -> Result<bool, LedgerError> {
        if self.refuse.load(Ordering::SeqCst) {
            let _ = self.refused.lock().unwrap().send(());
            return Err(LedgerError::Unwritable {
                reason: "the disk is full".to_owned(),
            });
        }
        self.inner.settle(seq, token, settle)
    }
    fn claim(&self, seq: u64, claim: NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError> {
        let claimed = self.inner.claim(seq, claim)?;
        if claimed.is_some() && self.hold.swap(false, Ordering::SeqCst) {
            let _ = self.taken.lock().unwrap().send(());
            let _ = self.go.lock().unwrap().recv_timeout(HANG_GUARD);
        }
        Ok(claimed)
    }
}
forward_ledger!(Refusing<MemoryLedger>);
#[cfg(feature = "sqlite")]
forward_ledger!(Refusing<process_registry::SqliteLedger>);

/// Polls `next_event` once (its look starts on an offload thread), waits until the look
/// claimed the event, drops the future and lets the look answer: what it claimed is the
/// offload thread's to give back.
fn take_for_a_dropped_future<B: LedgerBackend>(
    queue: &CompletionQueue,
    store: &Refusing<B>,
    signals: &Signals,
) {
    store.hold.store(true, Ordering::SeqCst);
    let mut taking = Box::pin(queue.next_event());
    let polled = Pin::new(&mut taking).poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "the look runs off this thread");
    signals
        .took
        .recv_timeout(HANG_GUARD)
        .expect("the look claimed the event");
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

/// The gauge stays the ledger's count of undelivered completions through a give-back, and
/// the completion given back is claimed again at its first attempt.
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

        take_for_a_dropped_future(&queue, &store, &signals);
        // Deferred on the offload thread: claimable again, at its first attempt.
        let mut got = Vec::new();
        for _ in 0..2 {
            let claim = std::iter::repeat_with(|| queue.claim(&ClaimFilter::any()).unwrap())
                .take(1_000_000)
                .find_map(|claim| claim)
                .expect("both completions are claimable");
            assert_eq!(claim.attempt(), 1, "{claim:?}");
            got.push(match claim.ack().unwrap().as_ref() {
                Event::WatchOverflowReleased(e) => e.suppressed.as_ref().unwrap().as_u64().unwrap(),
                other => panic!("unexpected {other:?}"),
            });
        }
        // (The give-back runs on the offload thread after the drop: the order of the two
        // claims here is the race's.)
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert_eq!(undelivered(), 0.0);
        assert_eq!(gauge(&snapshotter, &mut value), 0.0);
    });
}

/// A durable store: an event claimed for a future that was dropped, whose give-back the
/// store refuses, is still in the store when the queue ends (as a process ends), and the
/// next queue gets it once the claim's lease runs out. Nobody received it: a durable
/// completion must never be held only in this process's memory.
#[cfg(feature = "sqlite")]
#[test]
fn a_refused_give_back_loses_nothing_from_a_durable_store() {
    let dir = std::env::temp_dir().join(format!("awaiting-give-back-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.sqlite3");
    // A short lease: the refused give-back leaves the row claimed until it runs out.
    let config = LedgerConfig::default().with_lease(Duration::from_millis(300));
    let (store, signals) = Refusing::new(process_registry::SqliteLedger::open(&path).unwrap());
    let queue = CompletionQueue::builder_shared(Arc::clone(&store) as Arc<dyn LedgerBackend>)
        .config(config.clone())
        .open()
        .unwrap();
    queue.try_put(numbered(7)).unwrap();
    store.refuse.store(true, Ordering::SeqCst);
    take_for_a_dropped_future(&queue, &store, &signals);
    signals
        .refused
        .recv_timeout(HANG_GUARD)
        .expect("the give-back was tried");
    drop(queue);

    let reopened = CompletionQueue::builder(process_registry::SqliteLedger::open(&path).unwrap())
        .config(config)
        .open()
        .unwrap();
    let claim = reopened
        .claim_timeout(&ClaimFilter::any(), HANG_GUARD)
        .unwrap()
        .expect("the completion nobody received is still in the store");
    claim.ack().unwrap();
    drop(reopened);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
