//! Steering a running delegation: a steer is taken by the child or comes back in its one
//! completion as `missed_steer` — never lost, never both — also when it races the
//! runner's return, and also when the runner fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use async_delegation::{
    Controls, DelegationEngine, DelegationResult, DelegationSpec, SteerOutcome, Steering,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};

const GUARD: Duration = Duration::from_secs(20);

fn take(queue: &CompletionQueue) -> AsyncDelegationEvent {
    match queue.take_timeout(GUARD) {
        Some(Event::AsyncDelegation(event)) => event,
        other => panic!("expected a completion, got {other:?}"),
    }
}

#[test]
fn a_steer_racing_the_runners_return_is_taken_or_reported_exactly_once() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (mut taken_count, mut missed_count, mut refused_count) = (0, 0, 0);
    for round in 0..600_u32 {
        let steering = Steering::new();
        let child_side = steering.clone();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let child_taken = Arc::clone(&taken);
        let start = Arc::new(Barrier::new(2));
        let child_start = Arc::clone(&start);
        let id = engine
            .try_dispatch_with(
                DelegationSpec::new("race"),
                move || {
                    child_start.wait();
                    // A few delivery boundaries, racing the steer below.
                    for _ in 0..round % 4 {
                        child_taken.lock().unwrap().extend(child_side.take());
                        std::thread::yield_now();
                    }
                    child_taken.lock().unwrap().extend(child_side.take());
                    Ok(DelegationResult::completed("done"))
                },
                Controls::default().with_steering(steering),
                8,
            )
            .unwrap();
        let text = format!("steer {round}");
        start.wait();
        if round % 2 == 1 {
            std::thread::yield_now();
        }
        let outcome = engine.steer(&id, &text);
        let event = take(&queue);
        let in_taken = taken
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t == *text)
            .count();
        let in_missed = usize::from(event.missed_steer.as_deref() == Some(text.as_str()));
        match outcome {
            SteerOutcome::Queued => {
                assert_eq!(in_taken + in_missed, 1, "round {round}: {event:?}");
                taken_count += in_taken;
                missed_count += in_missed;
            }
            SteerOutcome::Closed | SteerOutcome::NotRunning => {
                assert_eq!(
                    in_taken + in_missed,
                    0,
                    "round {round}: refused, yet delivered"
                );
                refused_count += 1;
            }
        }
        if in_missed == 0 {
            assert_eq!(event.summary.as_deref(), Some("done"), "round {round}");
        }
    }
    assert!(queue.is_empty(), "one completion per delegation");
    // Not a timing: the run must have gone each way at least once to prove anything.
    assert!(
        taken_count > 0 && missed_count + refused_count > 0,
        "taken {taken_count}, missed {missed_count}, refused {refused_count}"
    );
}

#[test]
fn a_failing_runner_still_reports_the_steer_it_never_took() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let id = engine
        .try_dispatch_with(
            DelegationSpec::new("boom"),
            move || -> Result<DelegationResult, async_delegation::RunnerError> {
                wait.recv().ok();
                panic!("the child fell over")
            },
            Controls::default().with_steering(Steering::with_missed_note("(missed: {text})")),
            4,
        )
        .unwrap();
    assert_eq!(engine.steer(&id, "try again"), SteerOutcome::Queued);
    let listed = engine.list();
    assert!(listed[0].accepting_steer);
    release.send(()).unwrap();
    let event = take(&queue);
    assert_eq!(event.status.as_deref(), Some("error"));
    assert_eq!(event.error.as_deref(), Some("panic: the child fell over"));
    assert_eq!(event.missed_steer.as_deref(), Some("try again"));
    // No summary: the note alone.
    assert_eq!(event.summary.as_deref(), Some("(missed: try again)"));
    assert_eq!(engine.steer(&id, "again"), SteerOutcome::NotRunning);
}

#[test]
fn a_delegation_without_steering_refuses_a_steer() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let id = engine
        .try_dispatch(
            DelegationSpec::new("plain"),
            move || {
                wait.recv().ok();
                Ok(DelegationResult::completed("done"))
            },
            None,
            4,
        )
        .unwrap();
    assert_eq!(engine.steer(&id, "hello"), SteerOutcome::Closed);
    assert!(!engine.list()[0].accepting_steer);
    assert_eq!(
        engine.steer("deleg_zzzzzzzz", "hello"),
        SteerOutcome::NotRunning
    );
    release.send(()).unwrap();
    assert_eq!(take(&queue).missed_steer, None);
}
