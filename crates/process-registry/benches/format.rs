//! Formatting the blocks a parent reads: one single-delegation block and one 3-task
//! batch block.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use format_events::{batch, now, single, time_zone};
use process_registry::{format_process_notification, format_process_notification_in};

mod format_events;

fn formatting(c: &mut Criterion) {
    let mut group = c.benchmark_group("format");
    let (single, batch) = (single(), batch());
    let (tz, now) = (time_zone(), now());
    group.bench_function("single_block", |b| {
        b.iter(|| format_process_notification_in(black_box(&single), &tz, now))
    });
    group.bench_function("batch_3_tasks", |b| {
        b.iter(|| format_process_notification_in(black_box(&batch), &tz, now))
    });
    group.bench_function("single_block_system_tz", |b| {
        b.iter(|| format_process_notification(black_box(&single)))
    });
    // The floor: building the same text when it is already made — one allocation of its
    // length and a copy (what any formatter pays at least).
    let single_text = format_process_notification_in(&single, &tz, now).unwrap();
    let batch_text = format_process_notification_in(&batch, &tz, now).unwrap();
    group.bench_function("floor/copy_single_block_text", |b| {
        b.iter(|| String::from(black_box(single_text.as_str())))
    });
    group.bench_function("floor/copy_batch_text", |b| {
        b.iter(|| String::from(black_box(batch_text.as_str())))
    });
    group.finish();
}

criterion_group!(benches, formatting);
criterion_main!(benches);
