//! The dispatch contract of the Python harness's test file, across the real crates:
//! dispatch answers at once, runs the runner on a named detached worker, and enforces
//! capacity atomically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, DispatchOutcome};
use integration_tests::{take_delegation, wait_until, Gate, HANG_GUARD};
use process_registry::CompletionQueue;

fn spec(goal: &str) -> DelegationSpec {
    DelegationSpec::new(goal).with_role("leaf").with_model("m")
}

#[test]
fn test_dispatch_returns_immediately_without_blocking() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let gate = Gate::new();
    let runner_gate = Arc::clone(&gate);

    let outcome = engine.dispatch(
        spec("g"),
        move || {
            runner_gate.wait();
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
    let json = outcome.to_json();
    assert_eq!(json["status"], "dispatched");
    assert!(json["delegation_id"]
        .as_str()
        .unwrap()
        .starts_with("deleg_"));
    // The non-blocking proof without a clock: dispatch returned while the runner is
    // still held by the closed gate.
    assert_eq!(engine.active_count(), 1);
    assert!(queue.is_empty());

    gate.open();
    let event = take_delegation(&queue).expect("a completion");
    assert_eq!(event.delegation_id.as_deref(), outcome.delegation_id());
    assert_eq!(event.summary.as_deref(), Some("done"));
}

const EXIT_CHILD: &str = "exit_child_leaves_a_runner_running_and_returns";
const EXIT_MARKER: &str = "exit-child: main is returning with a subagent still running";

#[test]
fn test_async_executor_workers_are_daemon_threads() {
    // The runner runs on a worker thread whose name starts with `async-delegate`…
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let gate = Gate::new();
    let runner_gate = Arc::clone(&gate);
    let (name_tx, name_rx) = mpsc::channel();
    let outcome = engine.dispatch(
        spec("daemon check"),
        move || {
            let name = std::thread::current().name().map(str::to_owned);
            name_tx.send(name).unwrap();
            runner_gate.wait();
            Ok(DelegationResult::completed("done"))
        },
        None,
        1,
    );
    assert!(outcome.is_dispatched());
    let name = name_rx
        .recv_timeout(HANG_GUARD)
        .unwrap()
        .unwrap_or_default();
    assert!(
        name.starts_with("async-delegate"),
        "worker thread named {name:?}"
    );
    gate.open();
    assert!(take_delegation(&queue).is_some());

    // …and is a daemon: a process whose main returns while a runner never finishes
    // exits on its own, successfully.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            EXIT_CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(|| child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child process did not exit: a background worker kept it alive");
    }
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "child failed: {status}\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(EXIT_MARKER),
        "child did not run its body:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run in a child process by `test_async_executor_workers_are_daemon_threads`: returns
/// while its subagent is blocked forever (the gate is never opened).
#[test]
#[ignore = "run in a child process by test_async_executor_workers_are_daemon_threads"]
fn exit_child_leaves_a_runner_running_and_returns() {
    let engine = DelegationEngine::new(CompletionQueue::new());
    let (started_tx, started_rx) = mpsc::channel();
    let never = Gate::new();
    let runner_never = Arc::clone(&never);
    let outcome = engine.dispatch(
        spec("forever"),
        move || {
            started_tx.send(()).unwrap();
            loop {
                runner_never.wait();
            }
        },
        None,
        1,
    );
    assert!(outcome.is_dispatched());
    started_rx.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(engine.active_count(), 1);
    println!("{EXIT_MARKER}");
}

#[test]
fn test_dispatch_rejected_at_capacity() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let gate = Gate::new();
    let blocker = |gate: &Arc<Gate>| {
        let gate = Arc::clone(gate);
        move || {
            gate.wait();
            Ok(DelegationResult::completed("x"))
        }
    };
    for i in 0..2 {
        let outcome = engine.dispatch(spec(&format!("task{i}")), blocker(&gate), None, 2);
        assert_eq!(outcome.to_json()["status"], "dispatched");
    }
    let third = engine.dispatch(spec("task3"), blocker(&gate), None, 2);
    assert_eq!(third.to_json()["status"], "rejected");
    let error = third.error().unwrap();
    assert!(error.contains("capacity reached"), "{error}");
    assert_eq!(
        error,
        "Async delegation capacity reached (2 running). Wait for one to finish (its result \
         will re-enter the chat), or run this task synchronously (background=false). Raise \
         delegation.max_concurrent_children in config.yaml to allow more concurrent background \
         subagents."
    );

    gate.open();
    // Exactly the two accepted ones complete; the rejected one never does.
    let mut goals: Vec<String> = (0..2)
        .map(|_| take_delegation(&queue).unwrap().goal.to_string())
        .collect();
    goals.sort();
    assert_eq!(goals, ["task0", "task1"]);
    // Once no delegation is active, every completion is already on the queue.
    assert!(wait_until(|| engine.active_count() == 0));
    assert!(queue.is_empty());
}

#[test]
fn test_concurrent_dispatch_respects_capacity() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let gate = Gate::new();
    let barrier = Arc::new(Barrier::new(2));

    let racers: Vec<_> = (0..2)
        .map(|_| {
            let engine = engine.clone();
            let gate = Arc::clone(&gate);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                engine.dispatch(
                    spec("race"),
                    move || {
                        gate.wait();
                        Ok(DelegationResult::completed("x"))
                    },
                    None,
                    1,
                )
            })
        })
        .collect();
    let outcomes: Vec<DispatchOutcome> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut statuses: Vec<String> = outcomes
        .iter()
        .map(|o| o.to_json()["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["dispatched", "rejected"]);

    gate.open();
    let winner = outcomes
        .iter()
        .find_map(DispatchOutcome::delegation_id)
        .unwrap();
    assert_eq!(
        take_delegation(&queue).unwrap().delegation_id.as_deref(),
        Some(winner)
    );
}
