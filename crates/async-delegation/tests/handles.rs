//! `DelegationHandle` of a sync runner: status, blocking and timed waits, the awaited
//! outcome on an executor that is not tokio, and cancel through the interrupt hook. Waits
//! are bounded by a generous timeout; nothing measures time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, InterruptHook};
use process_registry::{CompletionQueue, Event};

const HANG_GUARD: Duration = Duration::from_secs(20);

#[test]
fn a_handle_follows_its_delegation_from_running_to_its_outcome() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (stop, stopped) = mpsc::channel::<String>();
    let hook: InterruptHook = Arc::new(move |reason: &str| {
        let _ = stop.send(reason.to_owned());
    });
    let handle = engine
        .dispatch_handle(
            DelegationSpec::new("Wait for the signal"),
            move || {
                let reason = stopped.recv_timeout(HANG_GUARD).unwrap_or_default();
                Ok(DelegationResult::interrupted(format!("stopped: {reason}")))
            },
            Some(hook),
            3,
        )
        .unwrap();
    assert_eq!(handle.status(), "running");
    assert!(handle.outcome().is_none());
    assert!(handle.wait_timeout(Duration::from_millis(5)).is_none());

    assert!(
        futures_executor::block_on(handle.finished_within(Duration::from_millis(5))).is_none(),
        "still running"
    );
    assert!(handle.cancel("enough"));
    let outcome = futures_executor::block_on(handle.finished_within(HANG_GUARD))
        .expect("finished after the cancel");
    assert_eq!(outcome.error.as_deref(), Some("stopped: enough"));
    assert_eq!(handle.status(), "interrupted");
    assert_eq!(handle.wait().delegation_id.as_deref(), Some(handle.id()));
    // The handle saw the same completion the queue got, and the slot is free.
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion");
    };
    assert_eq!(&event, handle.outcome().unwrap());
    assert_eq!(engine.active_count(), 0);
    assert!(!handle.cancel("after the end"), "nothing left to interrupt");
}

#[test]
fn many_waiters_of_one_handle_all_see_the_outcome() {
    let engine = DelegationEngine::new(CompletionQueue::new());
    let (go, wait_for_go) = mpsc::channel::<()>();
    let handle = engine
        .dispatch_handle(
            DelegationSpec::new("Shared"),
            move || {
                wait_for_go.recv_timeout(HANG_GUARD).ok();
                Ok(DelegationResult::completed("shared result"))
            },
            None,
            3,
        )
        .unwrap();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                handle
                    .wait_timeout(HANG_GUARD)
                    .and_then(|outcome| outcome.summary.clone())
            })
        })
        .collect();
    go.send(()).unwrap();
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap().as_deref(), Some("shared result"));
    }
}

/// A handle's outcome is there as soon as anything else can tell the delegation ended:
/// when a shutdown finds nothing running, and when a consumer has taken the completion.
#[test]
fn the_outcome_is_set_before_the_end_is_visible_anywhere_else() {
    for _ in 0..300 {
        let queue = CompletionQueue::new();
        // Workers that exit when idle: a parked worker per engine would pile up threads.
        let engine = DelegationEngine::with_worker_keep_alive(queue.clone(), Duration::ZERO);
        let quick = || {
            engine
                .dispatch_handle(
                    DelegationSpec::new("quick"),
                    || Ok(DelegationResult::completed("done")),
                    None,
                    3,
                )
                .unwrap()
        };
        let handle = quick();
        let Some(Event::AsyncDelegation(_)) = queue.take_timeout(HANG_GUARD) else {
            panic!("no completion");
        };
        assert!(handle.outcome().is_some(), "taken from the queue first");
        let handle = quick();
        assert_eq!(engine.shutdown("bye", HANG_GUARD), 0);
        assert!(handle.outcome().is_some(), "a shutdown saw it end first");
    }
}

/// The same for a consumer that polls the queue instead of waiting on it: it can take the
/// completion the moment it is written to the ledger, before the engine (still holding
/// its lock) has set the handle's outcome — the handle waits for that lock once.
#[test]
fn a_polling_consumer_never_sees_the_completion_before_the_handle_does() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    for _ in 0..2000 {
        let handle = engine
            .dispatch_handle(
                DelegationSpec::new("quick"),
                || Ok(DelegationResult::completed("done")),
                None,
                3,
            )
            .unwrap();
        let deadline = std::time::Instant::now() + HANG_GUARD;
        let taken = loop {
            if let Some(event) = queue.try_take() {
                break event;
            }
            assert!(std::time::Instant::now() < deadline, "no completion");
            std::hint::spin_loop();
        };
        assert!(matches!(taken, Event::AsyncDelegation(_)));
        assert!(handle.outcome().is_some(), "taken from the queue first");
    }
}
