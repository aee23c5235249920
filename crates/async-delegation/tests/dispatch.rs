//! `dispatch` answers at once, hands out well-formed unique ids, and enforces capacity
//! atomically: rejected, never queued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use async_delegation::{
    DelegationEngine, DelegationResult, DelegationSpec, DispatchError, DispatchOutcome,
    DEFAULT_MAX_ASYNC_CHILDREN,
};
use common::{capacity_text, gate, is_delegation_id, take_delegation, wait, HANG_GUARD};
use process_registry::CompletionQueue;
use serde_json::json;

fn engine() -> (CompletionQueue, DelegationEngine) {
    let queue = CompletionQueue::new();
    (queue.clone(), DelegationEngine::new(queue))
}

#[test]
fn test_dispatch_returns_immediately_without_blocking() {
    let (queue, engine) = engine();
    let (open, closed) = gate();
    let (started_tx, started) = crossbeam_channel::bounded(1);
    let outcome = engine.dispatch(
        DelegationSpec::new("g").with_role("leaf").with_model("m"),
        move || {
            started_tx.send(()).unwrap();
            wait(&closed);
            Ok(DelegationResult {
                status: Some("completed".into()),
                summary: Some("done".into()),
                api_calls: Some(1),
                duration_seconds: Some(0.1),
                model: Some("m".into()),
                ..DelegationResult::default()
            })
        },
        None,
        3,
    );
    // dispatch returned while the runner is still held at the gate: it cannot have
    // waited for it.
    assert!(outcome.is_dispatched(), "{outcome:?}");
    let id = outcome.delegation_id().unwrap().to_owned();
    assert!(is_delegation_id(&id), "{id}");
    assert_eq!(engine.active_count(), 1);
    started
        .recv_timeout(HANG_GUARD)
        .expect("runner started in the background");
    assert!(queue.is_empty(), "no completion while the runner is gated");
    assert_eq!(engine.list()[0].status, "running");

    drop(open);
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_ref()));
    assert_eq!(event.summary.as_deref(), Some("done"));
    assert_eq!(engine.active_count(), 0);
}

#[test]
fn test_dispatch_rejected_at_capacity() {
    let (queue, engine) = engine();
    let (open, closed) = gate();
    let blocker = |closed: crossbeam_channel::Receiver<()>| {
        move || {
            wait(&closed);
            Ok(DelegationResult::completed("x"))
        }
    };
    for i in 0..2 {
        let outcome = engine.dispatch(
            DelegationSpec::new(format!("task{i}")),
            blocker(closed.clone()),
            None,
            2,
        );
        assert!(outcome.is_dispatched(), "{outcome:?}");
    }
    let rejected_ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&rejected_ran);
    let third = engine.dispatch(
        DelegationSpec::new("task3"),
        move || {
            flag.store(true, Ordering::SeqCst);
            Ok(DelegationResult::completed("never"))
        },
        None,
        2,
    );
    assert_eq!(
        third,
        DispatchOutcome::Rejected {
            error: capacity_text(2)
        }
    );
    assert_eq!(
        third.to_json(),
        json!({"status": "rejected", "error": capacity_text(2)})
    );
    assert!(third.error().unwrap().contains("capacity reached"));
    assert_eq!(
        engine.active_count(),
        2,
        "a rejected dispatch is not queued"
    );

    drop(open);
    let events = common::take_delegations(&queue, 2);
    assert!(events.iter().all(|e| e.goal != "task3"));
    // Slots are free once the events are visible, so every event is already out.
    assert_eq!(engine.active_count(), 0);
    assert!(queue.is_empty(), "no event for the rejected dispatch");
    assert!(
        !rejected_ran.load(Ordering::SeqCst),
        "a rejected runner never runs"
    );
    assert!(engine.list().iter().all(|r| r.goal != "task3"));
}

#[test]
fn capacity_text_is_exact_for_any_limit() {
    for max in [0, 1, DEFAULT_MAX_ASYNC_CHILDREN, 17] {
        assert_eq!(
            DispatchError::CapacityReached { max }.to_string(),
            capacity_text(max)
        );
    }
    // Zero capacity rejects everything, with the same text.
    let (queue, engine) = engine();
    let outcome = engine.dispatch(
        DelegationSpec::new("nothing fits"),
        || Ok(DelegationResult::default()),
        None,
        0,
    );
    assert_eq!(outcome.error(), Some(capacity_text(0).as_str()));
    assert!(queue.is_empty());
}

#[test]
fn try_dispatch_names_the_cause() {
    let (_queue, engine) = engine();
    let (open, closed) = gate();
    let id = engine
        .try_dispatch(
            DelegationSpec::new("one"),
            move || {
                wait(&closed);
                Ok(DelegationResult::default())
            },
            None,
            1,
        )
        .unwrap();
    assert!(is_delegation_id(&id));
    let error = engine
        .try_dispatch(
            DelegationSpec::new("two"),
            || Ok(DelegationResult::default()),
            None,
            1,
        )
        .unwrap_err();
    assert!(matches!(error, DispatchError::CapacityReached { max: 1 }));
    drop(open);
}

#[test]
fn dispatched_outcome_serializes_exactly() {
    let outcome = DispatchOutcome::Dispatched {
        delegation_id: "deleg_0123abcd".into(),
    };
    assert_eq!(
        serde_json::to_string(&outcome).unwrap(),
        r#"{"delegation_id":"deleg_0123abcd","status":"dispatched"}"#
    );
    assert_eq!(
        outcome.to_json(),
        json!({"status": "dispatched", "delegation_id": "deleg_0123abcd"})
    );
    assert_eq!(outcome.delegation_id(), Some("deleg_0123abcd"));
    assert_eq!(outcome.error(), None);
    let rejected = DispatchOutcome::Rejected { error: "no".into() };
    assert!(!rejected.is_dispatched());
    assert_eq!(rejected.delegation_id(), None);
}

#[test]
fn ids_are_well_formed_and_unique() {
    let (queue, engine) = engine();
    let (open, closed) = gate();
    let n = 500;
    let mut ids = HashSet::new();
    for i in 0..n {
        let closed = closed.clone();
        let outcome = engine.dispatch(
            DelegationSpec::new(format!("t{i}")),
            move || {
                wait(&closed);
                Ok(DelegationResult::default())
            },
            None,
            n,
        );
        let id = outcome.delegation_id().unwrap().to_owned();
        assert!(is_delegation_id(&id), "{id}");
        assert!(ids.insert(id.into()), "id reused among live records");
    }
    assert_eq!(engine.active_count(), n);
    drop(open);
    let events = common::take_delegations(&queue, n);
    let seen: HashSet<_> = events
        .into_iter()
        .map(|e| e.delegation_id.unwrap())
        .collect();
    assert_eq!(seen, ids);
}

#[test]
fn test_concurrent_dispatch_respects_capacity() {
    let (queue, engine) = engine();
    for round in 0..200 {
        let (open, closed) = gate();
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let engine = engine.clone();
                let barrier = Arc::clone(&barrier);
                let closed = closed.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    engine.dispatch(
                        DelegationSpec::new("race"),
                        move || {
                            wait(&closed);
                            Ok(DelegationResult::completed("x"))
                        },
                        None,
                        1,
                    )
                })
            })
            .collect();
        let outcomes: Vec<DispatchOutcome> =
            racers.into_iter().map(|r| r.join().unwrap()).collect();
        let mut statuses: Vec<String> = outcomes
            .iter()
            .map(|o| o.to_json()["status"].as_str().unwrap().to_owned())
            .collect();
        statuses.sort();
        assert_eq!(statuses, ["dispatched", "rejected"], "round {round}");
        let winner = outcomes.iter().find_map(|o| o.delegation_id()).unwrap();
        let loser = outcomes.iter().find_map(|o| o.error()).unwrap();
        assert_eq!(loser, capacity_text(1));
        drop(open);
        assert_eq!(
            take_delegation(&queue).delegation_id.as_deref(),
            Some(winner)
        );
    }
    assert!(queue.is_empty());
    assert_eq!(engine.active_count(), 0);
}
