//! What a caller pays: the `dispatch` call itself (runner held at a gate), and the full
//! round trip dispatch → runner on a worker → completion taken from the queue.
//!
//! The `baseline` group prices the two primitives a dispatch could pay for: starting a
//! named thread (what a thread-per-delegation design costs the caller) and waking a
//! parked worker through a channel (what the engine's cached pool costs).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult};
use common::{runner_return_to_claim, spec, sqlite_queue, take, timed_dispatch};
use criterion::{criterion_group, criterion_main, Criterion};
use process_registry::{CompletionQueue, Event};

fn dispatch_latency(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    c.bench_function("dispatch", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_dispatch(&engine, &queue)).sum());
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

/// On the SQLite ledger: the `dispatch` call (its row committed before it returns), and
/// the time from a runner's return to a consumer — already waiting in `claim_timeout` on
/// another thread — holding the claim. Floors in the same group: one bare SQLite commit
/// of the same JSON, and a bare two-thread hand-off through a channel.
fn sqlite_ledger(c: &mut Criterion) {
    let (queue, scratch) = sqlite_queue("sqlite");
    let engine = DelegationEngine::new(queue.clone());
    let mut group = c.benchmark_group("sqlite");
    group.bench_function("dispatch", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_dispatch(&engine, &queue)).sum());
    });
    group.bench_function("runner_return_to_claim_held", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runner_return_to_claim(&engine, &queue))
                .sum()
        });
    });
    group.bench_function("floor/bare_commit", |b| {
        let connection = rusqlite_bare(scratch.path());
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
    drop(scratch);
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
