//! The stall monitor's sweep over 1000 running watched delegations (their runners held),
//! at a moment when none is due: what the monitor thread pays each time it wakes. Beside
//! it, in the same run, its floor: reading the 1000 progress reports the sweep judges
//! (their time and tool flag), with nothing else.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use async_delegation::{Controls, DelegationEngine, DelegationResult, DelegationSpec, Progress};
use criterion::{criterion_group, criterion_main, Criterion};
use process_registry::{CompletionQueue, ManualClock};

const RUNNING: usize = 1000;

fn sweep(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let clock = Arc::new(ManualClock::new(1_000_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let mut releases: Vec<Sender<()>> = Vec::with_capacity(RUNNING);
    let mut reports: Vec<Progress> = Vec::with_capacity(RUNNING);
    for i in 0..RUNNING {
        let (release, held) = channel::<()>();
        releases.push(release);
        let progress = engine.progress();
        if i % 4 == 0 {
            progress.enter_tool();
        }
        reports.push(progress.clone());
        engine
            .try_dispatch_with(
                DelegationSpec::new(format!("task {i}")),
                move || {
                    held.recv().ok();
                    Ok(DelegationResult::completed("done"))
                },
                Controls::default()
                    .with_interrupt(Arc::new(|_: &str| {}))
                    .with_progress(progress),
                RUNNING,
            )
            .unwrap();
    }
    assert_eq!(engine.active_count(), RUNNING);
    let mut group = c.benchmark_group("stall_sweep");
    group.bench_function("sweep_1000_running_none_due", |b| {
        b.iter(|| assert_eq!(black_box(engine.sweep_stalls()), 0));
    });
    group.bench_function("floor/read_1000_progress_reports", |b| {
        b.iter(|| {
            let mut in_tool = 0;
            for report in &reports {
                in_tool += usize::from(black_box(report.in_tool()));
                black_box(report.token());
            }
            in_tool
        });
    });
    group.finish();
    drop(releases);
    while engine.active_count() > 0 {
        queue.take_timeout(std::time::Duration::from_secs(20));
    }
}

criterion_group!(benches, sweep);
criterion_main!(benches);
