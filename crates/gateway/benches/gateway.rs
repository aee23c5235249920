//! The paths a gateway pays for: session keys, enrichment + formatting of a completion,
//! and router throughput to a no-op adapter.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::{
    enrich_event_routing, format_gateway_process_notification, DeliveryRouter, InternalMessage,
    Platform, SessionKey, SessionKeyOptions, SessionSource,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};
use serde_json::json;

fn harness_test_event() -> Event {
    Event::from_value(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_x1",
        "session_key": "agent:main:telegram:dm:12345:678",
        "goal": "Investigate flaky test",
        "context": "repo /tmp/p",
        "toolsets": ["terminal"],
        "role": "leaf",
        "model": "m",
        "status": "completed",
        "summary": "Found the bug in test_foo",
        "api_calls": 4,
        "duration_seconds": 12.0,
        "dispatched_at": 1000.0,
        "completed_at": 1012.0,
    }))
    .unwrap()
}

fn session_keys(c: &mut Criterion) {
    let options = SessionKeyOptions::default();
    let dm = SessionSource::new(Platform::Telegram, "12345").with_thread_id("678");
    let group = SessionSource::new(Platform::Slack, "C024BE91L")
        .with_chat_type("group")
        .with_user_id("U1")
        .with_user_id_alt("W42");
    let mut group_bench = c.benchmark_group("session_key");
    group_bench.bench_function("build+parse dm thread", |b| {
        b.iter(|| {
            let key = SessionKey::build(black_box(&dm), &options);
            SessionKey::parse(key.as_str()).unwrap()
        })
    });
    group_bench.bench_function("build+parse group per-user", |b| {
        b.iter(|| {
            let key = SessionKey::build(black_box(&group), &options);
            SessionKey::parse(key.as_str()).unwrap()
        })
    });
    group_bench.finish();
}

fn enrich_and_format(c: &mut Criterion) {
    let event = harness_test_event();
    c.bench_function("enrich+format harness test event", |b| {
        b.iter_batched(
            || event.clone(),
            |mut event| {
                enrich_event_routing(&mut event);
                format_gateway_process_notification(&event).unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// Benchmarks `name` in the `router` group: 1 000 completions put on `queue` and
/// delivered by `router` (one of 50 × 7 chats each), waiting for the router's count.
fn deliver_batches(
    c: &mut Criterion,
    name: &str,
    queue: &CompletionQueue,
    router: &DeliveryRouter,
) {
    const BATCH: usize = 1_000;
    let events: Vec<AsyncDelegationEvent> = (0..BATCH)
        .map(|n| match harness_test_event() {
            Event::AsyncDelegation(mut e) => {
                e.session_key = format!("agent:main:telegram:dm:{}:{}", n % 50, n % 7).into();
                e
            }
            _ => unreachable!(),
        })
        .collect();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(name, |b| {
        b.iter(|| {
            let target = router.stats().delivered + BATCH as u64;
            for event in &events {
                queue.put(event.clone());
            }
            while router.stats().delivered < target {
                std::thread::yield_now();
            }
        })
    });
    group.finish();
}

fn router_throughput(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, |message: &InternalMessage| {
            black_box(message);
            Ok(())
        })
        .start()
        .unwrap();
    deliver_batches(
        c,
        "deliver 1000 completions to a no-op adapter",
        &queue,
        &router,
    );
    router.stop();
}

/// On a SQLite ledger: a completion waits for its session's turn; the time from
/// `end_turn` to the adapter holding it (woken by the turn's end, no timer), beside a bare
/// two-thread hand-off measured the same way.
fn turn_end_to_adapter(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("gateway-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = process_registry::SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    let queue = CompletionQueue::builder(ledger)
        .config(
            process_registry::LedgerConfig::default()
                .with_sweep_interval(Duration::from_secs(3600)),
        )
        .open()
        .unwrap();
    let (arrived_tx, arrived) = crossbeam_channel::unbounded::<std::time::Instant>();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |_: &InternalMessage| {
            arrived_tx
                .send(std::time::Instant::now())
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .start()
        .unwrap();
    let key = "agent:main:telegram:dm:12345:678";
    let mut group = c.benchmark_group("sqlite");
    let mut n = 0_u64;
    group.bench_function("turn_end_to_adapter", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let turn = router.turn(key);
                queue.put(AsyncDelegationEvent {
                    delegation_id: Some(format!("deleg_{n:08x}").into()),
                    session_key: key.into(),
                    goal: "Investigate flaky test".into(),
                    summary: Some("Found it".into()),
                    ..AsyncDelegationEvent::default()
                });
                while router.waiting() == 0 {
                    std::thread::yield_now();
                }
                // Let the router go back to sleep on the queue.
                std::thread::sleep(Duration::from_micros(200));
                let ended = std::time::Instant::now();
                turn.end();
                let got = arrived.recv_timeout(Duration::from_secs(20)).unwrap();
                spent += got.saturating_duration_since(ended);
            }
            spent
        });
    });
    group.bench_function("floor/two_thread_hand_off", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = crossbeam_channel::bounded::<std::time::Instant>(1);
                let consumer = std::thread::spawn(move || {
                    let sent = rx.recv().unwrap();
                    std::time::Instant::now().saturating_duration_since(sent)
                });
                std::thread::sleep(Duration::from_micros(200));
                tx.send(std::time::Instant::now()).unwrap();
                spent += consumer.join().unwrap();
            }
            spent
        });
    });
    group.finish();
    router.stop();
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The router as tasks (feature `tokio`), on a two-worker runtime: 1 000 completions to a
/// no-op async adapter, as `router/deliver 1000` measures the thread router.
#[cfg(feature = "tokio")]
fn task_router_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Telegram, |message: InternalMessage| {
            black_box(&message);
            std::future::ready(Ok(()))
        })
        .start_on(runtime.handle())
        .unwrap();
    deliver_batches(
        c,
        "tasks: deliver 1000 completions to a no-op async adapter",
        &queue,
        &router,
    );
    runtime.block_on(router.stop_async());
}

#[cfg(not(feature = "tokio"))]
fn task_router_throughput(_: &mut Criterion) {}

criterion_group!(
    benches,
    session_keys,
    enrich_and_format,
    router_throughput,
    task_router_throughput,
    turn_end_to_adapter
);
criterion_main!(benches);
