//! What a caller pays: the `dispatch` call itself (runner held at a gate), and the full
//! round trip dispatch → runner on a worker → completion taken from the queue.
//!
//! The `baseline` group prices the two primitives a dispatch could pay for: starting a
//! named thread (what a thread-per-delegation design costs the caller) and waking a
//! parked worker through a channel (what the engine's cached pool costs).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use criterion::{criterion_group, criterion_main, Criterion};
use process_registry::{CompletionQueue, Event};

const TAKE_GUARD: Duration = Duration::from_secs(20);

fn spec() -> DelegationSpec {
    DelegationSpec::new("Summarise the logs")
        .with_context("Only the last hour matters")
        .with_toolsets(["terminal"])
        .with_role("leaf")
        .with_session_key("agent:main:telegram:dm:12345")
}

fn take(queue: &CompletionQueue) -> Event {
    queue.take_timeout(TAKE_GUARD).expect("completion")
}

fn dispatch_latency(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    c.bench_function("dispatch", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (open, closed) = crossbeam_channel::bounded::<()>(0);
                let spec = spec();
                let runner = move || {
                    let _ = closed.recv_timeout(TAKE_GUARD);
                    Ok(DelegationResult::completed("done"))
                };
                let started = Instant::now();
                let outcome = engine.dispatch(spec, runner, None, 1);
                spent += started.elapsed();
                assert!(outcome.is_dispatched());
                // Free the slot outside the measurement.
                drop(open);
                take(&queue);
            }
            spent
        });
    });
}

fn round_trip(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    c.bench_function("round_trip", |b| {
        b.iter(|| {
            let outcome =
                engine.dispatch(spec(), || Ok(DelegationResult::completed("done")), None, 1);
            assert!(outcome.is_dispatched());
            take(&queue)
        });
    });
}

fn baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    group.bench_function("spawn_named_thread", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let handle = std::thread::Builder::new()
                    .name("async-delegate-bench".into())
                    .spawn(|| ())
                    .unwrap();
                spent += started.elapsed();
                handle.join().unwrap();
            }
            spent
        });
    });
    group.bench_function("wake_parked_worker", |b| {
        let (jobs, inbox) = crossbeam_channel::unbounded::<()>();
        let (ack, acks) = crossbeam_channel::bounded::<()>(1);
        let worker = std::thread::spawn(move || {
            while inbox.recv().is_ok() {
                ack.send(()).unwrap();
            }
        });
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // Let the worker go back to sleep in `recv` before the next send.
                std::thread::sleep(Duration::from_micros(50));
                let started = Instant::now();
                jobs.send(()).unwrap();
                spent += started.elapsed();
                acks.recv().unwrap();
            }
            spent
        });
        drop(jobs);
        worker.join().unwrap();
    });
    group.finish();
}

/// A fresh SQLite ledger (process durability) in a scratch directory.
fn sqlite_queue(name: &str) -> (CompletionQueue, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("dispatch-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = process_registry::SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    (
        CompletionQueue::builder(ledger)
            .config(
                process_registry::LedgerConfig::default()
                    .with_sweep_interval(Duration::from_secs(3600)),
            )
            .open()
            .unwrap(),
        dir,
    )
}

/// On the SQLite ledger: the `dispatch` call (its row committed before it returns), and
/// the time from a runner's return to a consumer — already waiting in `claim_timeout` on
/// another thread — holding the claim. Floors in the same group: one bare SQLite commit
/// of the same JSON, and a bare two-thread hand-off through a channel.
fn sqlite_ledger(c: &mut Criterion) {
    let (queue, dir) = sqlite_queue("sqlite");
    let engine = DelegationEngine::new(queue.clone());
    let mut group = c.benchmark_group("sqlite");
    group.bench_function("dispatch", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (open, closed) = crossbeam_channel::bounded::<()>(0);
                let runner = move || {
                    let _ = closed.recv_timeout(TAKE_GUARD);
                    Ok(DelegationResult::completed("done"))
                };
                let started = Instant::now();
                let outcome = engine.dispatch(spec(), runner, None, 1);
                spent += started.elapsed();
                assert!(outcome.is_dispatched());
                drop(open);
                take(&queue);
            }
            spent
        });
    });
    group.bench_function("runner_return_to_claim_held", |b| {
        let filter = process_registry::ClaimFilter::routed();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (returned_tx, returned) = crossbeam_channel::bounded::<Instant>(1);
                let consumer = {
                    let queue = queue.clone();
                    let filter = filter.clone();
                    std::thread::spawn(move || {
                        let claim = queue
                            .claim_timeout(&filter, TAKE_GUARD)
                            .unwrap()
                            .expect("claimed");
                        let held = Instant::now();
                        claim.ack().unwrap();
                        held
                    })
                };
                // Let the consumer reach its wait.
                std::thread::sleep(Duration::from_micros(200));
                let outcome = engine.dispatch(
                    spec(),
                    move || {
                        let _ = returned_tx.send(Instant::now());
                        Ok(DelegationResult::completed("done"))
                    },
                    None,
                    1,
                );
                assert!(outcome.is_dispatched());
                let held = consumer.join().unwrap();
                let returned = returned.recv().unwrap();
                spent += held.saturating_duration_since(returned);
            }
            spent
        });
    });
    group.bench_function("floor/bare_commit", |b| {
        let connection = rusqlite_bare(&dir);
        let json = serde_json::to_string(&Event::AsyncDelegation(
            process_registry::AsyncDelegationEvent {
                delegation_id: Some("deleg_0000beef".into()),
                goal: "Summarise the logs".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        let mut statement = connection
            .prepare_cached("INSERT INTO rows (event) VALUES (?1)")
            .unwrap();
        b.iter(|| statement.execute([&json]).unwrap());
    });
    group.bench_function("floor/two_thread_hand_off", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = crossbeam_channel::bounded::<Instant>(1);
                let consumer = std::thread::spawn(move || {
                    let sent = rx.recv().unwrap();
                    Instant::now().saturating_duration_since(sent)
                });
                std::thread::sleep(Duration::from_micros(200));
                tx.send(Instant::now()).unwrap();
                spent += consumer.join().unwrap();
            }
            spent
        });
    });
    group.finish();
    drop(engine);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rusqlite_bare(dir: &std::path::Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(dir.join("bare.sqlite3")).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY, event TEXT);",
        )
        .unwrap();
    connection
}

criterion_group!(
    benches,
    dispatch_latency,
    round_trip,
    baseline,
    sqlite_ledger
);
criterion_main!(benches);
