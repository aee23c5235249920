//! Completion queue throughput: events put by one or several producer threads and taken
//! by one consumer, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use process_registry::{CompletionQueue, Event, WatchOverflow};

const EVENTS: u64 = 10_000;

fn event(n: u64) -> Event {
    Event::WatchOverflowReleased(WatchOverflow {
        suppressed: Some(process_registry::WireNumber::from(n)),
        ..Default::default()
    })
}

/// `producers` threads put `EVENTS` events in total while this thread takes them all.
fn put_take(queue: &CompletionQueue, producers: u64) {
    thread::scope(|scope| {
        for p in 0..producers {
            let queue = queue.clone();
            scope.spawn(move || {
                for n in 0..EVENTS / producers {
                    queue.put(event(p * EVENTS + n));
                }
            });
        }
        let mut taken = 0;
        while taken < EVENTS {
            if let Some(event) = queue.try_take() {
                black_box(event);
                taken += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
}

fn queue_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_put_take");
    group.throughput(Throughput::Elements(EVENTS));
    let queue = CompletionQueue::new();
    group.bench_function("same_thread_10k", |b| {
        b.iter(|| {
            for n in 0..EVENTS {
                queue.put(event(n));
            }
            while let Some(event) = queue.try_take() {
                black_box(event);
            }
        });
    });
    group.bench_function("1_producer_10k", |b| b.iter(|| put_take(&queue, 1)));
    group.bench_function("4_producers_10k", |b| b.iter(|| put_take(&queue, 4)));
    group.finish();
}

criterion_group!(benches, queue_throughput);
criterion_main!(benches);
