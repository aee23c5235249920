//! Runners run on named, detached `async-delegate` workers that are reused while busy,
//! exit when idle, and never keep the process alive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use common::{gate, take_delegation, wait, HANG_GUARD};
use process_registry::CompletionQueue;

const EXIT_CHILD: &str = "exit_child_dispatches_a_never_ending_runner_and_returns";
const EXIT_MARKER: &str = "exit-child: returning from the test with a runner still running";

fn current_thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned()
}

#[test]
fn test_async_executor_workers_are_daemon_threads() {
    // 1. The runner runs on a thread named async-delegate….
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (open, closed) = gate();
    let (name_tx, name_rx) = crossbeam_channel::bounded(1);
    let outcome = engine.dispatch(
        DelegationSpec::new("daemon check"),
        move || {
            name_tx.send(current_thread_name()).unwrap();
            wait(&closed);
            Ok(DelegationResult::completed("done"))
        },
        None,
        1,
    );
    assert!(outcome.is_dispatched());
    let name = name_rx.recv_timeout(HANG_GUARD).unwrap();
    assert!(
        name.starts_with("async-delegate"),
        "worker thread named {name:?}"
    );
    assert_ne!(name, current_thread_name());
    drop(open);
    assert_eq!(take_delegation(&queue).summary.as_deref(), Some("done"));

    // 2. …which is "daemon": a process whose main returns while a runner never ends
    // still exits, promptly and successfully.
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
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child process did not exit: a background worker kept it alive");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
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

/// Run in a child process by `test_async_executor_workers_are_daemon_threads`.
#[test]
#[ignore = "run in a child process by test_async_executor_workers_are_daemon_threads"]
fn exit_child_dispatches_a_never_ending_runner_and_returns() {
    let engine = DelegationEngine::new(CompletionQueue::new());
    let (started_tx, started) = crossbeam_channel::bounded(2);
    for goal in ["forever", "forever too"] {
        let started_tx = started_tx.clone();
        let outcome = engine.dispatch(
            DelegationSpec::new(goal),
            move || {
                started_tx.send(()).unwrap();
                loop {
                    std::thread::park();
                }
            },
            None,
            2,
        );
        assert!(outcome.is_dispatched());
    }
    // The global default engine must not hold the process either.
    let started_global = started_tx.clone();
    let outcome = async_delegation::dispatch_async_delegation(
        DelegationSpec::new("forever, globally"),
        move || {
            let _ = started_global.send(());
            loop {
                std::thread::park();
            }
        },
        None,
        1,
    );
    assert!(outcome.is_dispatched());
    for _ in 0..3 {
        started.recv_timeout(HANG_GUARD).unwrap();
    }
    assert_eq!(engine.active_count(), 2);
    drop(engine); // never waits for the children
    println!("{EXIT_MARKER}");
}

#[test]
fn a_busy_engine_reuses_its_worker() {
    // Dispatch → take completion → dispatch again: the worker marks itself idle before
    // it publishes, so the next dispatch always finds an idle worker — this one or the
    // spare started beside it — and no other thread starts.
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let mut names = HashSet::new();
    for i in 0..200 {
        let (name_tx, name_rx) = crossbeam_channel::bounded(1);
        engine.dispatch(
            DelegationSpec::new(format!("t{i}")),
            move || {
                name_tx.send(current_thread_name()).unwrap();
                Ok(DelegationResult::default())
            },
            None,
            1,
        );
        take_delegation(&queue);
        names.insert(name_rx.recv_timeout(HANG_GUARD).unwrap());
    }
    assert!(names.len() <= 2, "a worker and its spare: {names:?}");
}

/// The OS thread id of the calling thread ("/proc/thread-self" -> "<pid>/task/<tid>").
fn thread_id() -> std::ffi::OsString {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_owned()
}

fn alive(tid: &std::ffi::OsStr) -> bool {
    std::path::Path::new("/proc/self/task").join(tid).exists()
}

/// Waits (bounded) until at most `left` of `tids` are alive.
fn until_alive_at_most(tids: &[std::ffi::OsString], left: usize, what: &str) {
    let started = Instant::now();
    while tids.iter().filter(|tid| alive(tid)).count() > left {
        assert!(started.elapsed() < HANG_GUARD, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn idle_workers_exit_after_the_keep_alive_down_to_one_spare() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::with_worker_keep_alive(queue.clone(), Duration::from_millis(20));
    let (open, closed) = gate();
    let (tid_tx, tid_rx) = crossbeam_channel::unbounded();
    for i in 0..3 {
        let (closed, tid_tx) = (closed.clone(), tid_tx.clone());
        let outcome = engine.dispatch(
            DelegationSpec::new(format!("held {i}")),
            move || {
                tid_tx.send(thread_id()).unwrap();
                wait(&closed);
                Ok(DelegationResult::default())
            },
            None,
            3,
        );
        assert!(outcome.is_dispatched());
    }
    let tids: Vec<_> = (0..3)
        .map(|_| tid_rx.recv_timeout(HANG_GUARD).unwrap())
        .collect();
    drop(open);
    for _ in 0..3 {
        take_delegation(&queue);
    }
    // Three workers and a spare; one idle worker stays (it may be one of the three).
    until_alive_at_most(&tids, 1, "idle workers never exited");
    // The engine still works.
    assert!(engine
        .dispatch(
            DelegationSpec::new("again"),
            || Ok(DelegationResult::default()),
            None,
            1
        )
        .is_dispatched());
    take_delegation(&queue);
    // Dropping the engine ends the spare too.
    drop(engine);
    until_alive_at_most(&tids, 0, "a dropped engine's spare never exited");
}
