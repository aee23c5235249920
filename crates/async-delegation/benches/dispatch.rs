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

criterion_group!(benches, dispatch_latency, round_trip, baseline);
criterion_main!(benches);
