//! Interrupt hooks: called outside locks, panics isolated and not counted, and the child
//! still completes through the normal path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, InterruptHook};
use common::{take_delegation, take_delegations, HANG_GUARD};
use crossbeam_channel::{Receiver, Sender};
use process_registry::CompletionQueue;

fn engine() -> (CompletionQueue, DelegationEngine) {
    let queue = CompletionQueue::new();
    (queue.clone(), DelegationEngine::new(queue))
}

/// A runner that blocks until interrupted (or released with `""`), and the hook that
/// interrupts it by passing the reason along.
fn interruptible() -> (
    impl FnOnce() -> Result<DelegationResult, async_delegation::RunnerError> + Send + 'static,
    InterruptHook,
    Sender<String>,
) {
    let (tx, rx): (Sender<String>, Receiver<String>) = crossbeam_channel::unbounded();
    let hook_tx = tx.clone();
    let hook: InterruptHook = Arc::new(move |reason: &str| {
        let _ = hook_tx.send(reason.to_owned());
    });
    let runner = move || match rx.recv_timeout(HANG_GUARD) {
        Ok(reason) if !reason.is_empty() => Ok(DelegationResult::interrupted(reason)),
        _ => Ok(DelegationResult::completed("finished on its own")),
    };
    (runner, hook, tx)
}

#[test]
fn test_interrupt_all_signals_running_children() {
    let (queue, engine) = engine();
    let calls = Arc::new(AtomicUsize::new(0));
    let (runner, hook, _release) = interruptible();
    let counted = Arc::clone(&calls);
    let hook: InterruptHook = Arc::new(move |reason: &str| {
        counted.fetch_add(1, Ordering::SeqCst);
        hook(reason);
    });
    let outcome = engine.dispatch(DelegationSpec::new("long task"), runner, Some(hook), 3);
    assert!(outcome.is_dispatched());

    assert_eq!(engine.interrupt_all("test"), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The child still emits its completion after the interrupt.
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), outcome.delegation_id());
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.error.as_deref(), Some("test"));
    assert_eq!(engine.active_count(), 0);
    assert_eq!(engine.interrupt_all("again"), 0, "nothing left to signal");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn delegations_without_a_hook_are_not_counted() {
    let (queue, engine) = engine();
    let (open, closed) = common::gate();
    engine.dispatch(
        DelegationSpec::new("no hook"),
        move || {
            common::wait(&closed);
            Ok(DelegationResult::completed("ok"))
        },
        None,
        3,
    );
    let (runner, hook, _release) = interruptible();
    engine.dispatch(DelegationSpec::new("hooked"), runner, Some(hook), 3);
    assert_eq!(engine.interrupt_all("stop"), 1);
    drop(open);
    let events = take_delegations(&queue, 2);
    let hooked = events.iter().find(|e| e.goal == "hooked").unwrap();
    assert_eq!(hooked.status.as_deref(), Some("interrupted"));
}

#[test]
fn a_panicking_hook_is_isolated_and_not_counted() {
    let (queue, engine) = engine();
    let (panicky_runner, _unused_hook, release_panicky) = interruptible();
    let panicky: InterruptHook = Arc::new(|_: &str| panic!("hook exploded"));
    engine.dispatch(
        DelegationSpec::new("panicky hook"),
        panicky_runner,
        Some(panicky),
        3,
    );
    let (runner, hook, _release) = interruptible();
    engine.dispatch(DelegationSpec::new("good hook"), runner, Some(hook), 3);

    assert_eq!(engine.interrupt_all("stop"), 1);
    let event = take_delegation(&queue);
    assert_eq!(event.goal, "good hook");
    assert_eq!(event.status.as_deref(), Some("interrupted"));

    // The engine is unharmed: the panicky one finishes normally and its slot frees.
    release_panicky.send(String::new()).unwrap();
    let event = take_delegation(&queue);
    assert_eq!(event.goal, "panicky hook");
    assert_eq!(event.status.as_deref(), Some("completed"));
    assert_eq!(engine.active_count(), 0);
    assert!(engine
        .dispatch(
            DelegationSpec::new("after"),
            || Ok(DelegationResult::default()),
            None,
            1
        )
        .is_dispatched());
    take_delegation(&queue);
}

#[test]
fn hooks_run_outside_the_engine_lock() {
    // A hook that calls back into the engine would deadlock if it ran under the lock.
    let (queue, engine) = engine();
    let (runner, inner_hook, _release) = interruptible();
    let seen = Arc::new(Mutex::new(None));
    let (reentrant, seen_by_hook) = (engine.clone(), Arc::clone(&seen));
    let hook: InterruptHook = Arc::new(move |reason: &str| {
        *seen_by_hook.lock().unwrap() = Some((reentrant.active_count(), reentrant.list().len()));
        inner_hook(reason);
    });
    engine.dispatch(DelegationSpec::new("reentrant"), runner, Some(hook), 1);
    assert_eq!(engine.interrupt_all("stop"), 1);
    assert_eq!(*seen.lock().unwrap(), Some((1, 1)));
    assert_eq!(
        take_delegation(&queue).status.as_deref(),
        Some("interrupted")
    );
}

#[test]
fn interrupt_one_by_id_and_all_of_one_session() {
    let (queue, engine) = engine();
    let mut ids = Vec::new();
    let mut releases = Vec::new();
    for (goal, session) in [
        ("a1", "agent:main:slack:group:A"),
        ("a2", "agent:main:slack:group:A"),
        ("b", ""),
    ] {
        let (runner, hook, release) = interruptible();
        let outcome = engine.dispatch(
            DelegationSpec::new(goal).with_session_key(session),
            runner,
            Some(hook),
            3,
        );
        ids.push(outcome.delegation_id().unwrap().to_owned());
        releases.push(release);
    }
    assert_eq!(
        engine.interrupt_session("agent:main:slack:group:A", "chat closed"),
        2
    );
    assert_eq!(
        engine.interrupt_session("agent:main:slack:group:nobody", "x"),
        0
    );
    let mut events = take_delegations(&queue, 2);
    events.sort_by(|a, b| a.goal.cmp(&b.goal));
    assert_eq!(events[0].goal, "a1");
    assert_eq!(events[1].goal, "a2");
    assert!(events
        .iter()
        .all(|e| e.status.as_deref() == Some("interrupted")
            && e.error.as_deref() == Some("chat closed")));

    assert!(!engine.interrupt("deleg_00000000", "unknown id"));
    assert!(engine.interrupt(&ids[2], "just this one"));
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(ids[2].as_ref()));
    assert_eq!(event.error.as_deref(), Some("just this one"));
    assert!(!engine.interrupt(&ids[2], "already finished"));
    assert_eq!(engine.active_count(), 0);
    drop(releases);
}

#[test]
fn a_hook_is_dropped_outside_the_engine_lock() {
    // The hook's captures are dropped when the delegation completes; a capture whose
    // drop calls back into the engine would deadlock the worker under the lock.
    struct CallsBack(DelegationEngine, Sender<usize>);
    impl Drop for CallsBack {
        fn drop(&mut self) {
            let _ = self.1.send(self.0.active_count());
        }
    }
    let (queue, engine) = engine();
    let (dropped_tx, dropped) = crossbeam_channel::bounded(1);
    let capture = CallsBack(engine.clone(), dropped_tx);
    let hook: InterruptHook = Arc::new(move |_: &str| {
        let _keep = &capture;
    });
    engine.dispatch(
        DelegationSpec::new("callback on drop"),
        || Ok(DelegationResult::completed("ok")),
        Some(hook),
        1,
    );
    assert_eq!(take_delegation(&queue).summary.as_deref(), Some("ok"));
    assert_eq!(dropped.recv_timeout(HANG_GUARD).unwrap(), 0);
}

/// Panics when dropped: user state captured by a hook.
struct DropBomb;

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("hook state exploded on drop");
    }
}

/// A hook that lets its delegation finish and waits until the engine has published it,
/// so the interrupting caller holds the last reference to the hook — whose captured
/// state panics when dropped.
fn last_reference_hook(queue: &CompletionQueue, release: Sender<String>) -> InterruptHook {
    let queue = queue.clone();
    let bomb = DropBomb;
    Arc::new(move |_reason: &str| {
        let _keep = &bomb;
        let _ = release.send(String::new());
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while queue.is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        // The worker drops its reference just after publishing, outside the lock.
        std::thread::sleep(std::time::Duration::from_millis(100));
    })
}

#[test]
fn a_hook_whose_state_panics_on_drop_never_takes_the_interrupting_caller_down() {
    type Interrupt = fn(&DelegationEngine, &str) -> usize;
    let ways: [(&str, Interrupt); 3] = [
        ("interrupt_all", |engine, _| engine.interrupt_all("stop")),
        ("interrupt", |engine, id| {
            usize::from(engine.interrupt(id, "stop"))
        }),
        ("interrupt_session", |engine, _| {
            engine.interrupt_session("agent:main:telegram:dm:7", "stop")
        }),
    ];
    for (name, interrupt) in ways {
        let (queue, engine) = engine();
        let (runner, _hook, release) = interruptible();
        let hook = last_reference_hook(&queue, release);
        let id = engine
            .try_dispatch(
                DelegationSpec::new("g").with_session_key("agent:main:telegram:dm:7"),
                runner,
                Some(hook),
                3,
            )
            .unwrap();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| interrupt(&engine, &id)));
        assert_eq!(outcome.ok(), Some(1), "{name}: the hook ran and returned");
        let event = take_delegation(&queue);
        assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()), "{name}");
        assert_eq!(engine.active_count(), 0, "{name}");
    }
}

#[test]
fn a_refused_dispatch_whose_runner_and_hook_panic_on_drop_is_still_just_refused() {
    let (queue, engine) = engine();
    let bomb = DropBomb;
    let hook_bomb = DropBomb;
    let hook: InterruptHook = Arc::new(move |_: &str| {
        let _keep = &hook_bomb;
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.dispatch(
            DelegationSpec::new("g"),
            move || {
                let _keep = &bomb;
                Ok(DelegationResult::default())
            },
            Some(hook),
            0,
        )
    }));
    let outcome = outcome.expect("no panic escapes dispatch");
    assert!(!outcome.is_dispatched());
    assert!(queue.is_empty());
}
