//! Formatting the blocks a parent reads: one single-delegation block and one 3-task
//! batch block.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use process_registry::{format_process_notification, format_process_notification_in, Event};
use serde_json::json;

fn single() -> Event {
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

fn batch() -> Event {
    Event::from_value(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0001",
        "session_key": "",
        "goal": "",
        "context": "monorepo at /src",
        "toolsets": ["terminal", "file"],
        "role": "orchestrator",
        "model": "big-model",
        "status": "completed",
        "dispatched_at": 1000.0,
        "completed_at": 1125.0,
        "is_batch": true,
        "goals": ["Fix lint", "Run tests", "Write docs"],
        "results": [
            {"task_index": 2, "status": "completed", "summary": "Docs written.", "api_calls": 0,
             "duration_seconds": 0.25, "exit_reason": "max_iterations", "truncated": true},
            {"task_index": 0, "status": "completed", "summary": "Lint clean.", "api_calls": 3,
             "duration_seconds": 12.0, "exit_reason": "completed", "truncated": false},
            {"task_index": 1, "status": "failed", "summary": "", "error": "tests hung",
             "api_calls": 9, "duration_seconds": 120, "exit_reason": null, "truncated": false},
        ],
        "total_duration_seconds": 125.5,
    }))
    .unwrap()
}

fn formatting(c: &mut Criterion) {
    let mut group = c.benchmark_group("format");
    let (single, batch) = (single(), batch());
    let tz = TimeZone::fixed(jiff::tz::offset(2));
    let now = Timestamp::from_second(2000).unwrap();
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
