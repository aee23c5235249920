//! Engine shutdown: new dispatches refused with a clear text, running delegations
//! interrupted, a grace period awaited (blocking or as a future), and a runner that
//! outlives the grace still delivering its one completion. Waits are bounded by a generous
//! timeout; nothing measures time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use async_delegation::{
    DelegationEngine, DelegationResult, DelegationSpec, DispatchError, InterruptHook,
    SHUT_DOWN_TEXT,
};
use process_registry::{CompletionQueue, Event};

const HANG_GUARD: Duration = Duration::from_secs(20);

/// A runner that ends when its hook is called, reporting the reason.
fn interruptible(engine: &DelegationEngine) -> String {
    let (stop, stopped) = mpsc::channel::<String>();
    let hook: InterruptHook = Arc::new(move |reason: &str| {
        let _ = stop.send(reason.to_owned());
    });
    engine
        .try_dispatch(
            DelegationSpec::new("interruptible"),
            move || {
                let reason = stopped.recv_timeout(HANG_GUARD).unwrap_or_default();
                Ok(DelegationResult::interrupted(reason))
            },
            Some(hook),
            8,
        )
        .unwrap()
        .into()
}

#[test]
fn shutdown_interrupts_waits_and_refuses_new_work() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let ids = [interruptible(&engine), interruptible(&engine)];
    assert_eq!(engine.shutdown("the gateway is restarting", HANG_GUARD), 0);
    assert_eq!(engine.active_count(), 0);
    let mut got: Vec<(String, Option<String>)> = queue
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::AsyncDelegation(e) => {
                (e.delegation_id.unwrap().into(), e.error.map(String::from))
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    got.sort();
    let mut expected: Vec<_> = ids
        .iter()
        .map(|id| (id.clone(), Some("the gateway is restarting".to_owned())))
        .collect();
    expected.sort();
    assert_eq!(got, expected);

    let refused = engine
        .try_dispatch(
            DelegationSpec::new("too late"),
            || Ok(DelegationResult::completed("never")),
            None,
            8,
        )
        .unwrap_err();
    assert!(matches!(refused, DispatchError::ShutDown));
    assert_eq!(refused.to_string(), SHUT_DOWN_TEXT);
    assert!(queue.is_empty(), "a refused dispatch has no completion");
}

#[test]
fn a_runner_that_outlives_the_grace_still_completes_once() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (finish, finished) = mpsc::channel::<()>();
    let id = engine
        .try_dispatch(
            DelegationSpec::new("ignores interrupts"),
            move || {
                finished.recv_timeout(HANG_GUARD).ok();
                Ok(DelegationResult::completed("done anyway"))
            },
            None,
            8,
        )
        .unwrap();
    assert_eq!(engine.shutdown("stop", Duration::from_millis(10)), 1);
    finish.send(()).unwrap();
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion");
    };
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()));
    assert_eq!(event.summary.as_deref(), Some("done anyway"));
    assert_eq!(engine.shutdown("again", HANG_GUARD), 0, "idempotent");
}

#[test]
fn shutdown_can_be_awaited_on_any_executor() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    interruptible(&engine);
    let left = futures_executor::block_on(engine.shutdown_async("bye", HANG_GUARD));
    assert_eq!(left, 0);
    assert_eq!(queue.len(), 1);
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "current_thread")]
async fn shutdown_async_lets_async_runners_finish_on_the_same_thread() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("async"),
            &tokio::runtime::Handle::current(),
            |cancel| async move {
                cancel.cancelled().await;
                Ok(DelegationResult::interrupted(
                    cancel.reason().unwrap_or("").to_owned(),
                ))
            },
            8,
        )
        .unwrap();
    assert_eq!(engine.shutdown_async("deploy", HANG_GUARD).await, 0);
    assert_eq!(handle.outcome().unwrap().error.as_deref(), Some("deploy"));
}
