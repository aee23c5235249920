//! What a caller pays: the `dispatch` call itself (runner held at a gate), with a worker
//! idle and with every worker busy; and the full round trip dispatch → runner on a worker
//! → completion taken from the queue, one at a time and pipelined. Each group measures its
//! floors in the same run (`floor/…`), so the ratios are read from one run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult};
use common::{runner_return_to_claim, spec, sqlite_queue, take, timed_dispatch, GUARD};
use criterion::{criterion_group, criterion_main, Criterion};
use process_registry::{CompletionQueue, Event};

/// The `dispatch` call as the parent's turn pays it: with an idle worker to wake, and with
/// every worker busy (bursts of held runners on an engine whose idle workers retire at
/// once, so each burst starts from the spare alone). Floors in the same group: starting a
/// named thread (what the caller would pay if the pool started one on its path), and
/// waking a parked worker through a channel.
fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    group.bench_function("idle_worker", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_dispatch(&engine, &queue)).sum());
    });
    let busy_queue = CompletionQueue::new();
    let busy = DelegationEngine::with_worker_keep_alive(busy_queue.clone(), Duration::ZERO);
    group.bench_function("every_worker_busy", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let burst = left.min(BURST);
                left -= burst;
                spent += busy_burst(&busy, &busy_queue, burst);
            }
            spent
        });
    });
    group.bench_function("floor/spawn_named_thread", |b| {
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
    group.bench_function("floor/wake_parked_worker", |b| {
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

/// Delegations held at once by one `every_worker_busy` burst.
const BURST: u64 = 16;

/// Dispatches `burst` runners that hold until the burst is over, timing each dispatch
/// (every one finds every worker busy but the spare); then frees and takes them, and
/// lets the idle workers retire, outside the measurement.
fn busy_burst(engine: &DelegationEngine, queue: &CompletionQueue, burst: u64) -> Duration {
    let (open, closed) = crossbeam_channel::bounded::<()>(0);
    let mut spent = Duration::ZERO;
    for _ in 0..burst {
        let closed = closed.clone();
        let runner = move || {
            let _ = closed.recv_timeout(GUARD);
            Ok(DelegationResult::completed("done"))
        };
        let spec = spec();
        let started = Instant::now();
        let outcome = engine.dispatch(spec, runner, None, usize::MAX);
        spent += started.elapsed();
        assert!(outcome.is_dispatched(), "{outcome:?}");
    }
    drop(open);
    for _ in 0..burst {
        take(queue);
    }
    // Idle workers retire at once (keep-alive zero): the next burst finds only the spare.
    std::thread::sleep(Duration::from_millis(2));
    spent
}

/// The round trip dispatch → runner on a worker → completion taken, one at a time and
/// pipelined (up to 64 in flight), beside the same hand-offs done bare: a job sent to a
/// thread through one crossbeam channel and its answer sent back through another.
fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    group.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            let outcome =
                engine.dispatch(spec(), || Ok(DelegationResult::completed("done")), None, 1);
            assert!(outcome.is_dispatched());
            take(&queue)
        });
    });
    group.bench_function("floor/two_hop_hand_off", |b| {
        let hops = BareHops::start();
        b.iter(|| hops.round_trip());
    });
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("pipelined_cap_64", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            pipelined(
                iters,
                PIPELINE,
                |cap| {
                    engine
                        .dispatch(
                            spec(),
                            || Ok(DelegationResult::completed("done")),
                            None,
                            cap,
                        )
                        .is_dispatched()
                },
                || drop(take(&queue)),
            );
            started.elapsed()
        });
    });
    group.bench_function("floor/pipelined_two_hop_cap_64", |b| {
        let hops = BareHops::start();
        b.iter_custom(|iters| {
            let started = Instant::now();
            pipelined(iters, PIPELINE, |_| hops.send(), || hops.receive());
            started.elapsed()
        });
    });
    group.finish();
}

/// Delegations in flight in the pipelined round trip.
const PIPELINE: usize = 64;

/// Runs `cycles` send → receive cycles with up to `cap` sent and not yet received.
fn pipelined(
    cycles: u64,
    cap: usize,
    mut send: impl FnMut(usize) -> bool,
    mut receive: impl FnMut(),
) {
    let cycles = usize::try_from(cycles).unwrap();
    let (mut sent, mut received) = (0, 0);
    while received < cycles {
        while sent < cycles && sent - received < cap && send(cap) {
            sent += 1;
        }
        receive();
        received += 1;
    }
}

/// The floor of a round trip: a job handed to a parked thread and its answer handed back.
struct BareHops {
    jobs: Option<crossbeam_channel::Sender<u64>>,
    answers: crossbeam_channel::Receiver<u64>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl BareHops {
    fn start() -> Self {
        let (jobs, inbox) = crossbeam_channel::unbounded::<u64>();
        let (answer, answers) = crossbeam_channel::unbounded::<u64>();
        let worker = std::thread::spawn(move || {
            while let Ok(job) = inbox.recv() {
                answer.send(job + 1).unwrap();
            }
        });
        BareHops {
            jobs: Some(jobs),
            answers,
            worker: Some(worker),
        }
    }

    fn send(&self) -> bool {
        self.jobs.as_ref().unwrap().send(1).is_ok()
    }

    fn receive(&self) {
        self.answers.recv().unwrap();
    }

    fn round_trip(&self) {
        self.send();
        self.receive();
    }
}

impl Drop for BareHops {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            worker.join().unwrap();
        }
    }
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

criterion_group!(benches, dispatch, round_trip, sqlite_ledger);
criterion_main!(benches);
