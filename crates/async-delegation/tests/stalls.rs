//! The stall monitor: a watched delegation with no progress (or past its deadline) is
//! interrupted, and finalized by the engine itself when it still runs a grace later —
//! exactly one completion, whatever its runner does afterwards. Time is a `ManualClock`
//! moved by hand; no test waits for a real threshold (one proves the monitor thread runs
//! by itself, on thresholds of milliseconds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_delegation::{
    Controls, DelegationEngine, DelegationResult, DelegationSpec, InterruptHook, Progress,
    StallPolicy,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event, ManualClock, WireNumber};

const GUARD: Duration = Duration::from_secs(20);
const START: f64 = 1_000_000.0;

struct Setup {
    queue: CompletionQueue,
    engine: DelegationEngine,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let queue = CompletionQueue::new();
    let clock = Arc::new(ManualClock::new(START));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    Setup {
        queue,
        engine,
        clock,
    }
}

fn take(queue: &CompletionQueue) -> AsyncDelegationEvent {
    match queue.take_timeout(GUARD) {
        Some(Event::AsyncDelegation(event)) => event,
        other => panic!("expected a completion, got {other:?}"),
    }
}

/// A hook that records its reasons.
fn recording_hook() -> (InterruptHook, Arc<Mutex<Vec<String>>>) {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reasons);
    let hook: InterruptHook =
        Arc::new(move |reason: &str| seen.lock().unwrap().push(reason.to_owned()));
    (hook, reasons)
}

/// A runner blocked until `release` sends (or is dropped); it sets `returned` as it
/// returns.
fn held_runner(
    release: Receiver<()>,
    returned: Arc<AtomicBool>,
) -> impl FnOnce() -> Result<DelegationResult, async_delegation::RunnerError> + Send + 'static {
    move || {
        release.recv().ok();
        returned.store(true, Ordering::SeqCst);
        Ok(DelegationResult::completed("late result"))
    }
}

fn seconds(value: f64) -> Option<WireNumber> {
    WireNumber::from_f64(value)
}

fn advance(clock: &ManualClock, seconds: u64) {
    clock.advance(Duration::from_secs(seconds));
}

#[test]
fn no_progress_interrupts_then_the_engine_finalizes_it_stalled_once() {
    let Setup {
        queue,
        engine,
        clock,
    } = setup();
    let (hook, reasons) = recording_hook();
    let (release, held) = channel();
    let returned = Arc::new(AtomicBool::new(false));
    let progress = engine.progress();
    let id = engine
        .try_dispatch_with(
            DelegationSpec::new("Summarise the logs").with_session_key("agent:main:telegram:dm:1"),
            held_runner(held, Arc::clone(&returned)),
            Controls::default()
                .with_interrupt(hook)
                .with_progress(progress.clone()),
            4,
        )
        .unwrap();

    advance(&clock, 449);
    assert_eq!(engine.sweep_stalls(), 0);
    assert!(reasons.lock().unwrap().is_empty());
    advance(&clock, 2);
    assert_eq!(engine.sweep_stalls(), 1, "interrupted at 451 s of quiet");
    assert_eq!(*reasons.lock().unwrap(), ["no progress for 451 s"]);
    // Progress after the interrupt does not save it: it was asked to stop.
    progress.touch();
    advance(&clock, 119);
    assert_eq!(engine.sweep_stalls(), 0, "still inside the grace");
    assert_eq!(engine.active_count(), 1);
    advance(&clock, 2);
    assert_eq!(engine.sweep_stalls(), 1, "finalized past the grace");
    assert_eq!(engine.active_count(), 0, "the slot is free");
    // The ledger records the row as stalled.
    let rows = queue
        .rows(&process_registry::RowQuery {
            delegation_id: Some(id.to_string()),
            ..process_registry::RowQuery::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].run_state,
        Some(process_registry::RunState::Finished("stalled".into()))
    );

    let event = take(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()));
    assert_eq!(event.status.as_deref(), Some("stalled"));
    assert_eq!(event.exit_reason.as_deref(), Some("stalled"));
    assert_eq!(event.summary, None);
    assert_eq!(
        event.error.as_deref(),
        Some("Background task \"Summarise the logs\" stopped responding after 7 min of no progress and was cancelled. Nothing else was affected; ask me to run it again if you still need it.")
    );
    assert_eq!(
        event.stall.as_ref().unwrap().stalled_after_quiet_seconds,
        seconds(451.0)
    );
    assert_eq!(
        event.stall.as_ref().unwrap().stall_threshold_seconds,
        seconds(450.0)
    );
    assert_eq!(
        event.stall.as_ref().and_then(|s| s.stall_phase.as_deref()),
        Some("idle")
    );
    assert_eq!(
        event.stall.as_ref().unwrap().stall_grace_seconds,
        seconds(120.0)
    );
    assert_eq!(event.session_key, "agent:main:telegram:dm:1");
    let listed = engine.list();
    assert_eq!(listed[0].status, "stalled");
    // On the wire the report's fields are flat, and read back into the report.
    let wire = serde_json::to_value(Event::AsyncDelegation(event.clone())).unwrap();
    assert_eq!(wire["stall_phase"], "idle");
    assert_eq!(wire["stalled_after_quiet_seconds"], 451.0);
    assert_eq!(wire["stall_grace_seconds"], 120.0);
    let back: Event = serde_json::from_value(wire).unwrap();
    assert_eq!(back, Event::AsyncDelegation(event));

    // The runner comes back: logged and discarded, never a second completion.
    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + GUARD;
    while !returned.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert!(queue.take_timeout(Duration::from_millis(300)).is_none());
    assert_eq!(engine.sweep_stalls(), 0);
}

#[test]
fn progress_and_tool_calls_move_the_threshold() {
    let Setup {
        queue,
        engine,
        clock,
    } = setup();
    let (hook, reasons) = recording_hook();
    let (release, held) = channel();
    let progress = engine.progress();
    engine
        .try_dispatch_with(
            DelegationSpec::new(""),
            held_runner(held, Arc::new(AtomicBool::new(false))),
            Controls::default()
                .with_interrupt(hook)
                .with_progress(progress.clone()),
            4,
        )
        .unwrap();
    advance(&clock, 400);
    progress.touch();
    advance(&clock, 449);
    assert_eq!(engine.sweep_stalls(), 0, "quiet since the touch: 449 s");
    progress.enter_tool();
    advance(&clock, 1199);
    assert_eq!(
        engine.sweep_stalls(),
        0,
        "inside a tool the threshold is 1200 s"
    );
    advance(&clock, 2);
    assert_eq!(engine.sweep_stalls(), 1);
    assert_eq!(reasons.lock().unwrap().len(), 1);
    advance(&clock, 121);
    assert_eq!(engine.sweep_stalls(), 1);
    let event = take(&queue);
    assert_eq!(
        event.stall.as_ref().and_then(|s| s.stall_phase.as_deref()),
        Some("in_tool")
    );
    assert_eq!(
        event.stall.as_ref().unwrap().stall_threshold_seconds,
        seconds(1200.0)
    );
    assert_eq!(
        event.error.as_deref(),
        Some("The background task stopped responding after 20 min of no progress and was cancelled. Nothing else was affected; ask me to run it again if you still need it.")
    );
    drop(release);
}

#[test]
fn a_runner_that_ends_within_the_grace_is_its_own_completion() {
    let Setup {
        queue,
        engine,
        clock,
    } = setup();
    let (release, held) = channel::<()>();
    // The hook releases the runner, which then reports itself interrupted.
    let release = Mutex::new(Some(release));
    let hook: InterruptHook = Arc::new(move |_: &str| {
        if let Some(release) = release.lock().unwrap().take() {
            release.send(()).ok();
        }
    });
    engine
        .try_dispatch_with(
            DelegationSpec::new("stops when asked"),
            move || {
                held.recv().ok();
                Ok(DelegationResult::interrupted("asked to stop"))
            },
            Controls::default()
                .with_interrupt(hook)
                .with_progress(engine.progress()),
            4,
        )
        .unwrap();
    advance(&clock, 451);
    assert_eq!(engine.sweep_stalls(), 1);
    let event = take(&queue);
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.stall, None);
    advance(&clock, 500);
    assert_eq!(engine.sweep_stalls(), 0, "nothing left to finalize");
    assert!(queue.is_empty());
}

#[test]
fn a_deadline_interrupts_then_finalizes_as_timeout() {
    let Setup {
        queue,
        engine,
        clock,
    } = setup();
    let (hook, reasons) = recording_hook();
    let (release, held) = channel();
    engine
        .try_dispatch_with(
            DelegationSpec::new("bounded"),
            held_runner(held, Arc::new(AtomicBool::new(false))),
            Controls::default()
                .with_interrupt(hook)
                .with_deadline(Duration::from_secs(60)),
            4,
        )
        .unwrap();
    advance(&clock, 59);
    assert_eq!(engine.sweep_stalls(), 0);
    advance(&clock, 2);
    assert_eq!(engine.sweep_stalls(), 1);
    assert_eq!(
        *reasons.lock().unwrap(),
        ["the delegation ran past its deadline"]
    );
    advance(&clock, 121);
    assert_eq!(engine.sweep_stalls(), 1);
    let event = take(&queue);
    assert_eq!(event.status.as_deref(), Some("timeout"));
    assert_eq!(event.exit_reason.as_deref(), Some("timeout"));
    assert_eq!(
        event.stall.as_ref().and_then(|s| s.stall_phase.as_deref()),
        Some("deadline")
    );
    assert_eq!(
        event.stall.as_ref().unwrap().stall_threshold_seconds,
        seconds(60.0)
    );
    assert_eq!(
        event.error.as_deref(),
        Some("Background task \"bounded\" did not finish within its deadline and was cancelled. Nothing else was affected; ask me to run it again if you still need it.")
    );
    drop(release);
}

#[test]
fn a_runner_racing_its_finalization_still_yields_one_completion() {
    let Setup {
        queue,
        engine,
        clock,
    } = setup();
    let mut by_runner = 0;
    for round in 0..300 {
        let (release, held) = channel();
        let id = engine
            .try_dispatch_with(
                DelegationSpec::new("race"),
                move || {
                    held.recv().ok();
                    Ok(DelegationResult::completed("finished in time"))
                },
                Controls::default().with_progress(engine.progress()),
                4,
            )
            .unwrap();
        advance(&clock, 451);
        engine.sweep_stalls();
        advance(&clock, 121);
        let racer = std::thread::spawn(move || {
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            release.send(()).ok();
        });
        engine.sweep_stalls();
        racer.join().unwrap();
        let event = take(&queue);
        assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()));
        if event.status.as_deref() == Some("completed") {
            by_runner += 1;
        } else {
            assert_eq!(event.status.as_deref(), Some("stalled"), "round {round}");
        }
        // Whichever won, the other is discarded.
        let deadline = std::time::Instant::now() + GUARD;
        while engine.active_count() > 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert!(
            queue.take_timeout(Duration::from_millis(5)).is_none(),
            "round {round}"
        );
    }
    // Not a timing: with 300 rounds, both sides of the race have been exercised.
    let _ = by_runner;
}

#[test]
fn the_monitor_sweeps_a_thousand_watched_delegations() {
    let queue = CompletionQueue::new();
    let clock = Arc::new(ManualClock::new(START));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    const N: usize = 1000;
    let interrupted = Arc::new(AtomicUsize::new(0));
    for i in 0..N {
        let (release, held) = channel::<()>();
        let release = Mutex::new(Some(release));
        let count = Arc::clone(&interrupted);
        let hook: InterruptHook = Arc::new(move |_: &str| {
            count.fetch_add(1, Ordering::SeqCst);
            if let Some(release) = release.lock().unwrap().take() {
                release.send(()).ok();
            }
        });
        let progress: Progress = engine.progress();
        if i % 2 == 0 {
            progress.enter_tool();
        }
        engine
            .try_dispatch_with(
                DelegationSpec::new(format!("task {i}")),
                move || {
                    held.recv().ok();
                    Ok(DelegationResult::interrupted("stopped"))
                },
                Controls::default()
                    .with_interrupt(hook)
                    .with_progress(progress),
                N,
            )
            .unwrap();
    }
    advance(&clock, 451);
    assert_eq!(engine.sweep_stalls(), N / 2, "the idle half");
    // Each interrupted runner ends by itself, well inside its grace.
    for _ in 0..N / 2 {
        assert_eq!(take(&queue).status.as_deref(), Some("interrupted"));
    }
    advance(&clock, 750);
    assert_eq!(engine.sweep_stalls(), N / 2, "the half inside a tool");
    for _ in 0..N / 2 {
        assert_eq!(take(&queue).status.as_deref(), Some("interrupted"));
    }
    assert_eq!(interrupted.load(Ordering::SeqCst), N);
    assert!(queue.is_empty());
}

#[test]
fn the_monitor_thread_acts_by_itself() {
    // Real time, thresholds of milliseconds: the thread sleeps until one is due.
    let queue = CompletionQueue::new();
    let policy = StallPolicy::default()
        .with_idle(Duration::from_millis(20))
        .with_grace(Duration::from_millis(20));
    let engine = DelegationEngine::builder(queue.clone())
        .stall_policy(policy)
        .build();
    let (release, held) = channel();
    engine
        .try_dispatch_with(
            DelegationSpec::new("wedged"),
            held_runner(held, Arc::new(AtomicBool::new(false))),
            Controls::default().with_progress(engine.progress()),
            4,
        )
        .unwrap();
    let event = take(&queue);
    assert_eq!(event.status.as_deref(), Some("stalled"));
    assert_eq!(engine.active_count(), 0);
    drop(release);
}
