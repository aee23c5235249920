//! Async runners (feature `tokio`): a future spawned on the caller's runtime, on both
//! runtime flavours, with exactly one completion whatever the future does — returns,
//! errors, panics (polling, building, dropping), is cancelled, or is dropped by a runtime
//! that shut down — and one capacity shared with sync runners. Every wait is bounded by a
//! generous timeout so a wait that never ends fails instead of hanging; nothing measures
//! time.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::pending;
use std::time::Duration;

use async_delegation::{
    DelegationEngine, DelegationResult, DelegationSpec, DispatchError, RunnerError,
    RUNTIME_SHUT_DOWN_ERROR,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};

const HANG_GUARD: Duration = Duration::from_secs(20);

fn engine() -> (DelegationEngine, CompletionQueue) {
    let queue = CompletionQueue::new();
    (DelegationEngine::new(queue.clone()), queue)
}

/// The one completion on the queue, and that there is no other.
fn only_completion(queue: &CompletionQueue) -> AsyncDelegationEvent {
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion");
    };
    assert!(queue.try_take().is_none(), "a second completion");
    event
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_runner_completes_on_a_current_thread_runtime() {
    let (engine, queue) = engine();
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("Summarise").with_session_key("agent:main:cli"),
            &tokio::runtime::Handle::current(),
            |_| async {
                // Awaits on the runtime's only thread: the dispatching task must not hold it.
                tokio::task::yield_now().await;
                Ok(DelegationResult::completed("Three errors."))
            },
            3,
        )
        .unwrap();
    assert_eq!(handle.status(), "running");
    let outcome = tokio::time::timeout(HANG_GUARD, handle.finished())
        .await
        .expect("finished");
    assert_eq!(outcome.summary.as_deref(), Some("Three errors."));
    assert_eq!(handle.status(), "completed");
    let event = tokio::time::timeout(HANG_GUARD, queue.next_event())
        .await
        .unwrap()
        .unwrap();
    let Event::AsyncDelegation(event) = event else {
        panic!("not a delegation")
    };
    assert_eq!(event.delegation_id.as_deref(), Some(handle.id()));
    assert_eq!(event.session_key, "agent:main:cli");
    assert_eq!(engine.active_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_async_runners_each_complete_once_on_a_multi_thread_runtime() {
    let (engine, queue) = engine();
    let runtime = tokio::runtime::Handle::current();
    let handles: Vec<_> = (0..50)
        .map(|n| {
            engine
                .dispatch_async(
                    DelegationSpec::new(format!("task {n}")),
                    &runtime,
                    move |_| async move {
                        tokio::task::yield_now().await;
                        if n % 5 == 0 {
                            Err::<DelegationResult, RunnerError>(format!("failed {n}").into())
                        } else {
                            Ok(DelegationResult::completed(format!("done {n}")))
                        }
                    },
                    64,
                )
                .unwrap()
        })
        .collect();
    for handle in &handles {
        tokio::time::timeout(HANG_GUARD, handle.finished())
            .await
            .expect("finished");
    }
    let mut ids: Vec<String> = queue
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::AsyncDelegation(e) => e.delegation_id.unwrap().into(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
    expected.sort();
    assert_eq!(ids, expected, "one completion per dispatch");
    let failed = handles.iter().filter(|h| h.status() == "error").count();
    assert_eq!(failed, 10);
    assert_eq!(
        handles[5].outcome().unwrap().error.as_deref(),
        Some("failed 5")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_interrupt_cancels_the_token_and_keeps_the_first_reason() {
    let (engine, queue) = engine();
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("Long research"),
            &tokio::runtime::Handle::current(),
            |cancel| async move {
                cancel.cancelled().await;
                Ok(DelegationResult::interrupted(format!(
                    "stopped: {}",
                    cancel.reason().unwrap_or("?")
                )))
            },
            3,
        )
        .unwrap();
    assert!(handle.cancel("the user changed their mind"));
    assert!(!engine.interrupt("deleg_00000000", "unknown id"));
    engine.interrupt_all("shutting down");
    let outcome = tokio::time::timeout(HANG_GUARD, handle.finished())
        .await
        .expect("finished");
    assert_eq!(outcome.status.as_deref(), Some("interrupted"));
    assert_eq!(
        outcome.error.as_deref(),
        Some("stopped: the user changed their mind")
    );
    assert_eq!(
        only_completion(&queue).status.as_deref(),
        Some("interrupted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_future_is_an_error_completion_and_the_engine_goes_on() {
    let (engine, queue) = engine();
    let runtime = tokio::runtime::Handle::current();
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("Explode"),
            &runtime,
            |_| async {
                tokio::task::yield_now().await;
                panic!("subagent exploded");
            },
            1,
        )
        .unwrap();
    let outcome = tokio::time::timeout(HANG_GUARD, handle.finished())
        .await
        .expect("finished");
    assert_eq!(outcome.status.as_deref(), Some("error"));
    assert_eq!(outcome.error.as_deref(), Some("panic: subagent exploded"));
    assert_eq!(
        only_completion(&queue).delegation_id.as_deref(),
        Some(handle.id())
    );
    // The slot is free again.
    let again = engine
        .dispatch_async(
            DelegationSpec::new("Again"),
            &runtime,
            |_| async { Ok(DelegationResult::completed("ok")) },
            1,
        )
        .unwrap();
    tokio::time::timeout(HANG_GUARD, again.finished())
        .await
        .expect("finished");
}

#[tokio::test(flavor = "current_thread")]
async fn a_runner_that_panics_while_building_its_future_is_an_error_completion() {
    let (engine, queue) = engine();
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("Never built"),
            &tokio::runtime::Handle::current(),
            |_| -> std::future::Ready<Result<DelegationResult, RunnerError>> {
                panic!("no client configured")
            },
            3,
        )
        .unwrap();
    assert_eq!(
        handle.outcome().expect("at once").error.as_deref(),
        Some("panic: no client configured")
    );
    assert_eq!(only_completion(&queue).status.as_deref(), Some("error"));
    assert_eq!(engine.active_count(), 0);
}

/// A future still pending when its runtime shuts down is dropped by the runtime: its
/// completion is `interrupted` with the shutdown text — also when dropping the future
/// panics, and for a dispatch onto a runtime that is already gone.
#[test]
fn a_runtime_that_shuts_down_interrupts_its_pending_runners() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("dropping the child's client panicked");
        }
    }

    let (engine, queue) = engine();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let plain = engine
        .dispatch_async(
            DelegationSpec::new("Waits forever"),
            &handle,
            |_| pending::<Result<DelegationResult, RunnerError>>(),
            3,
        )
        .unwrap();
    let guarded = engine
        .dispatch_async(
            DelegationSpec::new("Waits forever, panics when dropped"),
            &handle,
            |_| async {
                let _client = PanicsOnDrop;
                pending::<Result<DelegationResult, RunnerError>>().await
            },
            3,
        )
        .unwrap();
    assert!(plain.wait_timeout(Duration::from_millis(1)).is_none());
    runtime.shutdown_timeout(HANG_GUARD);
    for handle in [&plain, &guarded] {
        let outcome = handle
            .wait_timeout(HANG_GUARD)
            .expect("completed by the shutdown");
        assert_eq!(outcome.status.as_deref(), Some("interrupted"));
        assert_eq!(outcome.error.as_deref(), Some(RUNTIME_SHUT_DOWN_ERROR));
    }
    let late = engine
        .dispatch_async(
            DelegationSpec::new("Onto a dead runtime"),
            &handle,
            |_| async { Ok(DelegationResult::completed("never")) },
            3,
        )
        .unwrap();
    assert_eq!(
        late.wait_timeout(HANG_GUARD).unwrap().error.as_deref(),
        Some(RUNTIME_SHUT_DOWN_ERROR)
    );
    assert_eq!(queue.drain().len(), 3);
    assert_eq!(engine.active_count(), 0);
}

/// One capacity for both kinds: a running sync delegation fills the only slot for an
/// async one, and the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_delegations_share_one_capacity() {
    let (engine, _queue) = engine();
    let runtime = tokio::runtime::Handle::current();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let sync = engine
        .dispatch_handle(
            DelegationSpec::new("sync"),
            move || {
                released.recv().ok();
                Ok(DelegationResult::completed("sync done"))
            },
            None,
            1,
        )
        .unwrap();
    let refused = engine.dispatch_async(
        DelegationSpec::new("async"),
        &runtime,
        |_| async { Ok(DelegationResult::completed("never")) },
        1,
    );
    assert!(matches!(
        refused,
        Err(DispatchError::CapacityReached { max: 1 })
    ));
    release.send(()).unwrap();
    let blocking_wait = {
        let sync = sync.clone();
        tokio::task::spawn_blocking(move || sync.wait_timeout(HANG_GUARD).is_some())
    };
    assert!(blocking_wait.await.unwrap());

    let async_handle = engine
        .dispatch_async(
            DelegationSpec::new("async"),
            &runtime,
            |cancel| async move {
                cancel.cancelled().await;
                Ok(DelegationResult::interrupted("cancelled"))
            },
            1,
        )
        .unwrap();
    let refused = engine.try_dispatch(
        DelegationSpec::new("sync"),
        || Ok(DelegationResult::completed("never")),
        None,
        1,
    );
    assert!(matches!(
        refused,
        Err(DispatchError::CapacityReached { max: 1 })
    ));
    assert!(async_handle.cancel("done with it"));
    tokio::time::timeout(HANG_GUARD, async_handle.finished())
        .await
        .expect("finished");
}

/// On a store whose calls may block (SQLite), an async delegation completes as on the
/// memory ledger, on both runtime flavours: its completion is recorded (off the runtime),
/// its handle resolves, and nothing is left running.
#[test]
fn async_runners_complete_on_a_sqlite_ledger() {
    let dir = std::env::temp_dir().join(format!("async-runners-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = process_registry::SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    let queue = CompletionQueue::builder(ledger).open().unwrap();
    let engine = DelegationEngine::new(queue.clone());
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        runtime.block_on(async {
            let handles: Vec<_> = (0..8)
                .map(|n| {
                    engine
                        .dispatch_async(
                            DelegationSpec::new(format!("Task {n}")),
                            &tokio::runtime::Handle::current(),
                            move |_| async move {
                                tokio::task::yield_now().await;
                                Ok(DelegationResult::completed(format!("done {n}")))
                            },
                            8,
                        )
                        .unwrap()
                })
                .collect();
            for handle in &handles {
                let outcome = tokio::time::timeout(HANG_GUARD, handle.finished())
                    .await
                    .expect("finished");
                assert_eq!(outcome.status.as_deref(), Some("completed"));
            }
        });
        let mut summaries: Vec<String> = (0..8)
            .map(|_| match queue.take_timeout(HANG_GUARD) {
                Some(Event::AsyncDelegation(event)) => event.summary.unwrap().to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        summaries.sort();
        assert_eq!(
            summaries,
            (0..8).map(|n| format!("done {n}")).collect::<Vec<_>>()
        );
        assert_eq!(engine.active_count(), 0);
    }
    drop(engine);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}
