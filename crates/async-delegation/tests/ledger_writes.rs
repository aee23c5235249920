//! The engine writes through the completion ledger: the dispatch row before the handle
//! is returned (a refused write rejects the dispatch and holds no slot), the completion
//! row before the slot frees (a refused write keeps the completion and retries it — never
//! drops it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../process-registry/tests/support/forwarding.rs"]
mod forwarding;
use forwarding::forward_ledger;

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, DispatchError};
use common::{gate, row_of, take_delegation, wait, HANG_GUARD};
use process_registry::{
    CompletionQueue, DeliveryState, Finish, Inserted, LedgerBackend, LedgerError, MemoryLedger,
    NewRunning, RowQuery, RunState,
};

/// A memory ledger whose writes can be made to fail, as a full disk would.
#[derive(Default)]
struct Flaky {
    inner: MemoryLedger,
    refuse_dispatches: AtomicBool,
    refuse_completions: AtomicBool,
    refused: AtomicUsize,
    /// Answers "id taken" to this many dispatches, recording the ids it refused.
    taken_answers: AtomicUsize,
    refused_ids: std::sync::Mutex<Vec<String>>,
    /// When set, the next dispatch write says so on the first, waits on the second, then
    /// fails.
    held: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

fn full() -> LedgerError {
    LedgerError::Unwritable {
        reason: "the disk is full".to_owned(),
    }
}

impl forwarding::Forwarding for Flaky {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn insert_running(&self, row: NewRunning<'_>) -> Result<Inserted, LedgerError> {
        let held = self.held.lock().unwrap().take();
        if let Some((entered, go)) = held {
            entered.send(()).unwrap();
            go.recv().unwrap();
            return Err(full());
        }
        if self.refuse_dispatches.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(full());
        }
        let take = self
            .taken_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if take {
            self.refused_ids
                .lock()
                .unwrap()
                .push(row.delegation_id.to_owned());
            return Ok(Inserted::IdTaken);
        }
        self.inner.insert_running(row)
    }
    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError> {
        if self.refuse_completions.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(full());
        }
        self.inner.finish_run(finish)
    }
}
forward_ledger!(Flaky);

fn engine(backend: &Arc<Flaky>) -> (CompletionQueue, DelegationEngine) {
    let shared: Arc<dyn LedgerBackend> = backend.clone();
    let queue = CompletionQueue::builder_shared(shared).open().unwrap();
    (queue.clone(), DelegationEngine::new(queue))
}

#[test]
fn a_dispatch_the_ledger_cannot_record_is_rejected_and_holds_no_slot() {
    let backend = Arc::new(Flaky::default());
    let (queue, engine) = engine(&backend);
    backend.refuse_dispatches.store(true, Ordering::SeqCst);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let refused = engine.try_dispatch(
        DelegationSpec::new("never recorded"),
        move || {
            flag.store(true, Ordering::SeqCst);
            Ok(DelegationResult::completed("x"))
        },
        None,
        1,
    );
    let Err(error) = refused else {
        panic!("dispatched without a ledger row");
    };
    assert!(
        matches!(error, DispatchError::LedgerUnavailable(_)),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "Async delegation could not be recorded (the completion ledger could not be written: \
         the disk is full), so it was not started. Run this task synchronously \
         (background=false) or try again later."
    );
    assert_eq!(engine.active_count(), 0, "no slot held");
    assert!(engine.list().is_empty());
    assert!(queue.rows(&RowQuery::default()).unwrap().is_empty());

    // The store recovers: the one slot is free for the next dispatch.
    backend.refuse_dispatches.store(false, Ordering::SeqCst);
    let id = engine
        .try_dispatch(
            DelegationSpec::new("recorded"),
            || Ok(DelegationResult::completed("ok")),
            None,
            1,
        )
        .unwrap();
    assert_eq!(
        take_delegation(&queue).delegation_id.as_deref(),
        Some(id.as_str())
    );
    assert!(!ran.load(Ordering::SeqCst), "the refused runner never ran");
}

#[test]
fn the_dispatch_row_is_written_before_the_handle_is_returned() {
    let backend = Arc::new(Flaky::default());
    let (queue, engine) = engine(&backend);
    let (open, gated) = gate();
    let id = engine
        .try_dispatch(
            DelegationSpec::new("long").with_session_key("agent:main:telegram:dm:5"),
            move || {
                wait(&gated);
                Ok(DelegationResult::completed("done"))
            },
            None,
            3,
        )
        .unwrap();
    let row = row_of(&queue, &id);
    assert_eq!(row.run_state, Some(RunState::Running));
    assert_eq!(row.session_key, "agent:main:telegram:dm:5");
    assert_eq!(row.owner, queue.instance());
    drop(open);
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()));
}

#[test]
fn a_completion_the_ledger_refuses_is_kept_retried_and_delivered_with_its_slot_held_meanwhile() {
    let backend = Arc::new(Flaky::default());
    let (queue, engine) = engine(&backend);
    backend.refuse_completions.store(true, Ordering::SeqCst);
    let id = engine
        .try_dispatch(
            DelegationSpec::new("finishes while the disk is full"),
            || Ok(DelegationResult::completed("kept")),
            None,
            1,
        )
        .unwrap();
    // The store refuses the completion a few times: the slot stays held (backpressure),
    // nothing is offered, nothing is lost.
    let deadline = Instant::now() + HANG_GUARD;
    while backend.refused.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the worker never tried to record"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        engine.active_count(),
        1,
        "the slot is held until the completion is durable"
    );
    assert!(queue.is_empty());
    assert!(matches!(
        engine.try_dispatch(
            DelegationSpec::new("no room"),
            || Ok(DelegationResult::default()),
            None,
            1
        ),
        Err(DispatchError::CapacityReached { max: 1 })
    ));

    backend.refuse_completions.store(false, Ordering::SeqCst);
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()));
    assert_eq!(event.summary.as_deref(), Some("kept"));
    assert_eq!(engine.active_count(), 0);
    assert!(queue.is_empty(), "exactly one completion");
    let row = &queue.rows(&RowQuery::default()).unwrap();
    assert!(row.is_empty() || row[0].delivery == Some(DeliveryState::Delivered));
}

#[test]
fn ids_the_ledger_already_holds_are_drawn_again() {
    let backend = Arc::new(Flaky::default());
    let (queue, engine) = engine(&backend);
    backend.taken_answers.store(5, Ordering::SeqCst);
    let id = engine
        .try_dispatch(
            DelegationSpec::new("g"),
            || Ok(DelegationResult::default()),
            None,
            1,
        )
        .unwrap();
    let refused = backend.refused_ids.lock().unwrap().clone();
    assert_eq!(refused.len(), 5, "drawn again after each answer");
    assert!(
        !refused.iter().any(|refused| *refused == id),
        "the id it got is not one it was refused"
    );
    assert_eq!(
        take_delegation(&queue).delegation_id.as_deref(),
        Some(id.as_str())
    );

    // A ledger that never has a free id: a clear rejection, no slot held.
    backend.taken_answers.store(usize::MAX, Ordering::SeqCst);
    let error = engine
        .try_dispatch(
            DelegationSpec::new("g"),
            || Ok(DelegationResult::default()),
            None,
            1,
        )
        .unwrap_err();
    assert!(
        matches!(error, DispatchError::LedgerUnavailable(_)),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("no free delegation id after 64 draws"),
        "{error}"
    );
    assert_eq!(engine.active_count(), 0);
}

/// A shutdown waiting for the last delegation is woken when that delegation's dispatch is
/// taken back (its write failed after it was admitted): it returns at once instead of
/// sleeping out its grace.
#[test]
fn a_shutdown_is_woken_when_the_last_admitted_dispatch_is_taken_back() {
    let backend = Arc::new(Flaky::default());
    let (_queue, engine) = engine(&backend);
    let (entered, in_write) = std::sync::mpsc::channel();
    let (go, gate) = std::sync::mpsc::channel();
    *backend.held.lock().unwrap() = Some((entered, gate));
    let dispatcher = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            engine.try_dispatch(
                DelegationSpec::new("admitted, then not recorded"),
                || Ok(DelegationResult::completed("never")),
                None,
                3,
            )
        })
    };
    in_write.recv().unwrap();
    let (done, shut) = std::sync::mpsc::channel();
    let shutting = {
        let engine = engine.clone();
        // A grace with no end: only the wake-up can end this wait.
        std::thread::spawn(move || done.send(engine.shutdown("bye", Duration::MAX)).unwrap())
    };
    // Once dispatches are refused as shut down, the shutdown is in its wait (a dispatch
    // with no capacity is refused without running anything either way).
    let deadline = Instant::now() + HANG_GUARD;
    while !matches!(
        engine.try_dispatch(
            DelegationSpec::new("probe"),
            || Ok(DelegationResult::completed("never")),
            None,
            0
        ),
        Err(async_delegation::DispatchError::ShutDown)
    ) {
        assert!(Instant::now() < deadline, "the shutdown began");
        std::thread::yield_now();
    }
    go.send(()).unwrap();
    assert!(dispatcher.join().unwrap().is_err());
    assert_eq!(shut.recv_timeout(HANG_GUARD).expect("woken"), 0);
    shutting.join().unwrap();
}
