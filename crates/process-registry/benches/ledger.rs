//! The completion ledger's costs, each beside its floor measured in the same run:
//!
//! - `sqlite/put` (a pending row committed) beside `floor/sqlite_bare_insert` (one
//!   `INSERT` of the same JSON into a bare WAL table with the same durability);
//! - `sqlite/claim_ack` (claim the next completion, ack it: two guarded commits) beside
//!   `floor/sqlite_bare_update_pair` (two bare `UPDATE`s by primary key);
//! - `sqlite/next_claim_ack_awaited` (the same claim awaited: its look runs on the queue's
//!   offload thread) beside `sqlite/claim_ack` (the look on the calling thread) and
//!   `floor/two_hop_hand_off` (what the offload adds, done bare: a value handed to a parked
//!   thread through a crossbeam channel and one handed back);
//! - `memory/put_claim_ack` (the memory ledger's whole cycle) beside
//!   `floor/channel_send_recv` (a crossbeam channel hand-off of the same event).
//!
//! Throughput groups report completions per second.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::event;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use process_registry::{ClaimFilter, CompletionQueue, LedgerConfig, SqliteLedger};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ledger-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sqlite_queue(scratch: &Scratch) -> CompletionQueue {
    CompletionQueue::builder(SqliteLedger::open(scratch.file("ledger.sqlite3")).unwrap())
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600)))
        .open()
        .unwrap()
}

fn bare_connection(scratch: &Scratch) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(scratch.file("bare.sqlite3")).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY, state TEXT, event TEXT);",
        )
        .unwrap();
    connection
}

fn sqlite(c: &mut Criterion) {
    let scratch = Scratch::new("sqlite");
    let queue = sqlite_queue(&scratch);
    let bare = bare_connection(&scratch);
    let json = serde_json::to_string(&event(1)).unwrap();

    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(1));
    let mut n = 0;
    group.bench_function("sqlite/put", |b| {
        b.iter(|| {
            n += 1;
            queue.try_put(event(n)).unwrap();
        });
    });
    group.bench_function("floor/sqlite_bare_insert", |b| {
        let mut statement = bare
            .prepare_cached("INSERT INTO rows (state, event) VALUES ('pending', ?1)")
            .unwrap();
        b.iter(|| statement.execute([&json]).unwrap());
    });
    // The puts above left rows to claim; keep topping up outside the measurement.
    group.bench_function("sqlite/claim_ack", |b| {
        b.iter_custom(|iters| {
            for _ in 0..iters {
                n += 1;
                queue.try_put(event(n)).unwrap();
            }
            let started = Instant::now();
            for _ in 0..iters {
                let claim = queue.claim(&ClaimFilter::routed()).unwrap().expect("a row");
                black_box(claim.ack().unwrap());
            }
            started.elapsed()
        });
    });
    // The same claim awaited: the look runs on the queue's offload thread (SQLite may
    // block), so this is `claim_ack` plus the hand-off there and back.
    group.bench_function("sqlite/next_claim_ack_awaited", |b| {
        b.iter_custom(|iters| {
            for _ in 0..iters {
                n += 1;
                queue.try_put(event(n)).unwrap();
            }
            let filter = ClaimFilter::routed();
            let started = Instant::now();
            for _ in 0..iters {
                let claim = futures_executor::block_on(queue.next_claim(&filter)).unwrap();
                black_box(claim.ack().unwrap());
            }
            started.elapsed()
        });
    });
    // What the awaited claim adds, done bare: a call handed to a parked thread and its
    // answer handed back.
    group.bench_function("floor/two_hop_hand_off", |b| {
        let (calls, inbox) = crossbeam_channel::bounded::<u64>(0);
        let (answer, answers) = crossbeam_channel::bounded::<u64>(0);
        let worker = std::thread::spawn(move || {
            while let Ok(call) = inbox.recv() {
                let _ = answer.send(call + 1);
            }
        });
        b.iter(|| {
            calls.send(1).unwrap();
            black_box(answers.recv().unwrap())
        });
        drop(calls);
        worker.join().unwrap();
    });
    group.bench_function("floor/sqlite_bare_update_pair", |b| {
        bare.execute(
            "INSERT INTO rows (state, event) VALUES ('pending', ?1)",
            [&json],
        )
        .unwrap();
        let seq = bare.last_insert_rowid();
        let mut claim = bare
            .prepare_cached("UPDATE rows SET state = 'claimed' WHERE seq = ?1")
            .unwrap();
        let mut ack = bare
            .prepare_cached("UPDATE rows SET state = 'delivered' WHERE seq = ?1")
            .unwrap();
        b.iter(|| {
            claim.execute([seq]).unwrap();
            ack.execute([seq]).unwrap();
        });
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let (send, receive) = crossbeam_channel::unbounded();
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory/put_claim_ack", |b| {
        b.iter_batched(
            || event(7),
            |event| {
                queue.put(event);
                let claim = queue.claim(&ClaimFilter::routed()).unwrap().expect("a row");
                black_box(claim.ack().unwrap())
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("floor/channel_send_recv", |b| {
        b.iter_batched(
            || event(7),
            |event| {
                send.send(event).unwrap();
                black_box(receive.recv().unwrap())
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, sqlite, memory);
criterion_main!(benches);
