//! The async path (`dispatch_async_with`) against the stall monitor, steering, cancel and
//! a ledger that refuses writes: one completion, a steer never lost, the wedged future
//! dropped, a cancel that landed reported as such, a late result logged.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../process-registry/tests/support/forwarding.rs"]
mod forwarding;
use forwarding::forward_ledger;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_delegation::{
    Controls, DelegationEngine, DelegationResult, DelegationSpec, InterruptHook, SteerOutcome,
    Steering,
};
use process_registry::{
    CompletionQueue, Event, Finish, LedgerBackend, LedgerError, ManualClock, MemoryLedger, RunState,
};

const GUARD: Duration = Duration::from_secs(20);

/// A memory ledger that refuses to record completions with status `completed` while set
/// (a transient write failure that only the runner's completion meets).
#[derive(Default)]
struct RefuseCompleted {
    inner: MemoryLedger,
    refuse: AtomicBool,
}

impl forwarding::Forwarding for RefuseCompleted {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError> {
        if self.refuse.load(Ordering::SeqCst)
            && matches!(&finish.run_state, RunState::Finished(s) if s == "completed")
        {
            return Err(LedgerError::Unwritable {
                reason: "the disk is full".to_owned(),
            });
        }
        self.inner.finish_run(finish)
    }
}
forward_ledger!(RefuseCompleted);

async fn until(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(GUARD, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition never held");
}

/// The runner returns after its stall interrupt, its completion write fails once (it has
/// already drained the steering into its own event), and the monitor's `stalled`
/// finalization wins: the steer must still come back in the one completion (§10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steer_drained_by_a_failed_completion_write_is_not_lost_when_the_monitor_wins() {
    let backend = Arc::new(RefuseCompleted::default());
    let shared: Arc<dyn LedgerBackend> = backend.clone();
    let queue = CompletionQueue::builder_shared(shared).open().unwrap();
    let clock = Arc::new(ManualClock::new(1_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let steering = Steering::new();
    let handle = engine
        .dispatch_async_with(
            DelegationSpec::new("steered then stalled"),
            &tokio::runtime::Handle::current(),
            |cancel| async move {
                cancel.cancelled().await;
                Ok(DelegationResult::completed("partial"))
            },
            Controls::default()
                .with_steering(steering.clone())
                .with_progress(engine.progress()),
            3,
        )
        .unwrap();
    assert_eq!(
        engine.steer(handle.id(), "only errors"),
        SteerOutcome::Queued
    );
    backend.refuse.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(451));
    assert_eq!(engine.sweep_stalls(), 1, "interrupted");
    // The runner returned and tried to record (the inbox is closed by that attempt).
    until(|| !steering.is_open()).await;
    clock.advance(Duration::from_secs(121));
    assert_eq!(engine.sweep_stalls(), 1, "finalized");
    let event = tokio::time::timeout(GUARD, handle.finished())
        .await
        .unwrap();
    assert_eq!(event.status.as_deref(), Some("stalled"));
    assert_eq!(
        event.missed_steer.as_deref(),
        Some("only errors"),
        "the steer was neither taken nor reported: {event:?}"
    );
}

/// A user hook given through Controls panics *after* the engine's own cancellation
/// reached the future: the delegation was signalled (it ends `interrupted`), so
/// `cancel` must say so (the tool's `stop` otherwise answers "it likely finished").
#[tokio::test(flavor = "current_thread")]
async fn cancel_is_true_when_the_cancellation_landed_but_the_user_hook_panicked() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let hook: InterruptHook = Arc::new(|_: &str| panic!("user hook exploded"));
    let handle = engine
        .dispatch_async_with(
            DelegationSpec::new("cancel me"),
            &tokio::runtime::Handle::current(),
            |cancel| async move {
                cancel.cancelled().await;
                Ok(DelegationResult::interrupted("stopped"))
            },
            Controls::default().with_interrupt(hook),
            3,
        )
        .unwrap();
    let signalled = handle.cancel("stop");
    let event = tokio::time::timeout(GUARD, handle.finished())
        .await
        .unwrap();
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert!(
        signalled,
        "the future was cancelled, yet cancel() reported it was not"
    );
}

/// A future wedged past the grace is finalized `stalled`; the engine holds no slot for it
/// any more, yet the future (and everything it owns: the child, its steering, its
/// progress) is never dropped while the runtime lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_async_future_is_dropped() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let queue = CompletionQueue::new();
    let clock = Arc::new(ManualClock::new(1_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = Guard(Arc::clone(&dropped));
    let handle = engine
        .dispatch_async_with(
            DelegationSpec::new("wedged"),
            &tokio::runtime::Handle::current(),
            move |_cancel| async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(DelegationResult::completed("never"))
            },
            Controls::default().with_progress(engine.progress()),
            3,
        )
        .unwrap();
    tokio::task::yield_now().await;
    clock.advance(Duration::from_secs(451));
    assert_eq!(engine.sweep_stalls(), 1);
    clock.advance(Duration::from_secs(121));
    assert_eq!(engine.sweep_stalls(), 1);
    let event = tokio::time::timeout(GUARD, handle.finished())
        .await
        .unwrap();
    assert_eq!(event.status.as_deref(), Some("stalled"));
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        until(|| dropped.load(Ordering::SeqCst)),
    )
    .await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the finalized future still runs on the runtime (its child is never closed)"
    );
}

/// The runtime shuts down with a steer queued and after the stall interrupt: one
/// `interrupted` completion carrying the steer; a later sweep adds nothing.
#[test]
fn runtime_shutdown_after_a_stall_interrupt_keeps_one_completion_and_the_steer() {
    let queue = CompletionQueue::new();
    let clock = Arc::new(ManualClock::new(1_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let handle = engine
        .dispatch_async_with(
            DelegationSpec::new("dropped"),
            runtime.handle(),
            |_cancel| async move {
                std::future::pending::<()>().await;
                Ok(DelegationResult::completed("never"))
            },
            Controls::default()
                .with_steering(Steering::new())
                .with_progress(engine.progress()),
            3,
        )
        .unwrap();
    assert_eq!(engine.steer(handle.id(), "hurry"), SteerOutcome::Queued);
    clock.advance(Duration::from_secs(451));
    assert_eq!(engine.sweep_stalls(), 1);
    drop(runtime);
    let event = handle.wait_timeout(GUARD).unwrap().clone();
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.missed_steer.as_deref(), Some("hurry"));
    clock.advance(Duration::from_secs(121));
    assert_eq!(engine.sweep_stalls(), 0);
    let Some(Event::AsyncDelegation(queued)) = queue.take_timeout(GUARD) else {
        panic!()
    };
    assert_eq!(queued, event);
    assert!(queue.try_take().is_none());
    assert_eq!(engine.active_count(), 0);
}
