//! Async runners (feature `tokio`): the `dispatch_async` call itself, and the async round
//! trip — `dispatch_async` → the runner's future on the runtime → the completion awaited
//! with `CompletionQueue::next_event` — one at a time and pipelined (up to 64 in flight),
//! each beside its floor measured in the same run: a bare tokio `oneshot` round trip
//! through a spawned task, on the same current-thread runtime.
//!
//! `cargo bench -p async-delegation --features tokio --bench async_dispatch`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult};
use common::spec;
use criterion::{criterion_group, criterion_main, Criterion};
use process_registry::CompletionQueue;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn async_dispatch(c: &mut Criterion) {
    let runtime = runtime();
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let mut group = c.benchmark_group("async");
    group.bench_function("dispatch_async", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let handle = engine
                        .dispatch_async(
                            spec(),
                            &tokio::runtime::Handle::current(),
                            |_| async { Ok(DelegationResult::completed("done")) },
                            1,
                        )
                        .unwrap();
                    spent += started.elapsed();
                    // Outside the timing: let the task run, and take its completion.
                    handle.finished().await;
                    queue.next_event().await.unwrap();
                }
                spent
            })
        });
    });
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            runtime.block_on(async {
                engine
                    .dispatch_async(
                        spec(),
                        &tokio::runtime::Handle::current(),
                        |_| async { Ok(DelegationResult::completed("done")) },
                        1,
                    )
                    .unwrap();
                queue.next_event().await.unwrap()
            })
        });
    });
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("pipelined_cap_64", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                let (mut sent, mut received) = (0, 0);
                while received < iters {
                    while sent < iters && sent - received < PIPELINE {
                        let handle = engine.dispatch_async(
                            spec(),
                            &tokio::runtime::Handle::current(),
                            |_| async { Ok(DelegationResult::completed("done")) },
                            PIPELINE_CAP,
                        );
                        drop(handle.unwrap());
                        sent += 1;
                    }
                    queue.next_event().await.unwrap();
                    received += 1;
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("floor/pipelined_oneshot_cap_64", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                let mut answers = std::collections::VecDeque::new();
                let (mut sent, mut received) = (0, 0);
                while received < iters {
                    while sent < iters && sent - received < PIPELINE {
                        let (done, finished) = tokio::sync::oneshot::channel();
                        drop(tokio::spawn(async move {
                            let _ = done.send(DelegationResult::completed("done"));
                        }));
                        answers.push_back(finished);
                        sent += 1;
                    }
                    answers.pop_front().unwrap().await.unwrap();
                    received += 1;
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("floor/oneshot_round_trip", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (done, finished) = tokio::sync::oneshot::channel();
                drop(tokio::spawn(async move {
                    let _ = done.send(DelegationResult::completed("done"));
                }));
                finished.await.unwrap()
            })
        });
    });
    group.finish();
}

/// Delegations in flight in the pipelined round trip.
const PIPELINE: u64 = 64;
/// Its capacity, as `dispatch_async` takes it.
const PIPELINE_CAP: usize = 64;

criterion_group!(benches, async_dispatch);
criterion_main!(benches);
