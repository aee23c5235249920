//! The PostgreSQL ledger's costs on the local server, each beside its floor measured in
//! the same run:
//!
//! - `postgres/claim_ack/{1,4,16}_consumers` (threads claiming the next completion and
//!   acking it, on one handle with as many connections) beside
//!   `floor/bare_update_pair/{n}` (two bare `UPDATE`s by primary key per completion, on
//!   as many plain connections);
//! - `postgres/put_to_claim` (a put on one handle until a consumer waiting on another —
//!   its own connections, as another process would have — holds the claim: the commit,
//!   the notification and the wake-up) beside `floor/select_1` (one round trip).
//!
//! Needs the server of `LEDGER_TEST_POSTGRES` (default `host=127.0.0.1 user=postgres
//! dbname=test`); every run works in a schema of its own and drops it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use process_registry::{ClaimFilter, CompletionQueue, LedgerConfig, PostgresLedger};

mod common;
#[path = "../tests/pg_support/mod.rs"]
mod pg_support;

use common::event;
use pg_support::{client, params, Schema};

/// A queue on `schema` as `instance`, with `connections` connections.
fn queue(schema: &Schema, connections: usize, instance: &str) -> CompletionQueue {
    let options = schema.options(connections);
    CompletionQueue::builder(PostgresLedger::connect_with(&params(), options).unwrap())
        .instance(instance)
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600)))
        .open()
        .unwrap()
}

/// Runs `total` units of `work` on `threads` threads, each taking the next unit; the
/// time from the start to the last unit done.
fn on_threads(threads: usize, total: u64, work: impl Fn() + Sync) -> Duration {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    work();
                }
            });
        }
    });
    start.elapsed()
}

fn claim_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("postgres");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for consumers in [1_usize, 4, 16] {
        let schema = Schema::new("bench", &format!("claim_{consumers}"));
        let queue = queue(&schema, consumers, "bench-consumer");
        let sent = AtomicU64::new(0);
        group.bench_function(format!("claim_ack/{consumers}_consumers"), |b| {
            b.iter_custom(|iters| {
                for _ in 0..iters {
                    queue.put(event(sent.fetch_add(1, Ordering::Relaxed)));
                }
                on_threads(consumers, iters, || {
                    let claim = queue
                        .claim(&ClaimFilter::any())
                        .unwrap()
                        .expect("a completion");
                    claim.ack().unwrap();
                })
            });
        });

        // The floor: two updates by primary key per completion, on plain connections.
        let mut setup = client();
        setup
            .batch_execute(&format!(
                "CREATE TABLE {0}.bare (id bigint PRIMARY KEY, state text, event text);
                 INSERT INTO {0}.bare SELECT g, 'pending', repeat('x', 300) FROM generate_series(1, 1000) g;",
                schema.0
            ))
            .unwrap();
        let clients: Vec<std::sync::Mutex<postgres::Client>> = (0..consumers)
            .map(|_| std::sync::Mutex::new(client()))
            .collect();
        let claim_sql = format!(
            "UPDATE {}.bare SET state = 'claimed' WHERE id = $1",
            schema.0
        );
        let ack_sql = format!(
            "UPDATE {}.bare SET state = 'delivered' WHERE id = $1",
            schema.0
        );
        let picked = AtomicU64::new(0);
        let clients = Arc::new(clients);
        group.bench_function(format!("floor/bare_update_pair/{consumers}"), |b| {
            b.iter_custom(|iters| {
                let turn = AtomicU64::new(0);
                on_threads(consumers, iters, || {
                    // Each thread keeps to one connection: its turn number picks it.
                    thread_local!(static MINE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
                    let index = MINE.with(|mine| {
                        let index = mine.get().unwrap_or_else(|| {
                            usize::try_from(turn.fetch_add(1, Ordering::Relaxed)).unwrap()
                                % consumers
                        });
                        mine.set(Some(index));
                        index
                    });
                    let id = i64::try_from(picked.fetch_add(1, Ordering::Relaxed) % 1000 + 1)
                        .unwrap();
                    let mut client = clients[index].lock().unwrap();
                    client.execute(claim_sql.as_str(), &[&id]).unwrap();
                    client.execute(ack_sql.as_str(), &[&id]).unwrap();
                })
            });
        });
    }
    group.finish();
}

fn put_to_claim(c: &mut Criterion) {
    let mut group = c.benchmark_group("postgres");
    group.sample_size(20);
    let schema = Schema::new("bench", "put_to_claim");
    let producer = queue(&schema, 1, "bench-worker");
    let consumer = queue(&schema, 1, "bench-gateway");
    let sent = AtomicU64::new(0);
    group.bench_function("put_to_claim", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let consumer = &consumer;
                std::thread::scope(|scope| {
                    let (armed, waiting) = crossbeam_channel::bounded::<()>(1);
                    let claimed = scope.spawn(move || {
                        let wait = consumer.listen();
                        armed.send(()).unwrap();
                        assert!(wait.wait_until(Instant::now() + Duration::from_secs(10)));
                        let claim = consumer.claim(&ClaimFilter::any()).unwrap().expect("woken");
                        let at = Instant::now();
                        claim.ack().unwrap();
                        at
                    });
                    waiting.recv().unwrap();
                    let start = Instant::now();
                    producer.put(event(sent.fetch_add(1, Ordering::Relaxed)));
                    total += claimed.join().unwrap() - start;
                });
            }
            total
        });
    });
    let mut bare = client();
    group.bench_function("floor/select_1", |b| {
        b.iter(|| bare.query_one("SELECT 1", &[]).unwrap())
    });
    group.finish();
}

criterion_group!(benches, claim_ack, put_to_claim);
criterion_main!(benches);
