//! What the benchmarks of this crate share: the spec they dispatch, a scratch SQLite
//! ledger, the two timed SQLite operations (measured by criterion in `dispatch.rs`,
//! one by one in `sqlite_percentiles.rs`), and the percentile report of the benchmarks
//! that are not criterion's.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use process_registry::{ClaimFilter, CompletionQueue, Event, LedgerConfig, SqliteLedger};

/// Prints the percentiles of `micros` (microseconds), one line for `name`: what the
/// benchmarks that are not criterion's report.
pub(crate) fn report(name: &str, mut micros: Vec<f64>) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<36} p50 {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs   max {:>9.1} µs   (n = {})",
        at(0.5),
        at(0.9),
        at(0.99),
        micros[micros.len() - 1],
        micros.len()
    );
}

/// How long any wait of a benchmark may take before it is a failure.
pub(crate) const GUARD: Duration = Duration::from_secs(20);

pub(crate) fn spec() -> DelegationSpec {
    DelegationSpec::new("Summarise the logs")
        .with_context("Only the last hour matters")
        .with_toolsets(["terminal"])
        .with_role("leaf")
        .with_session_key("agent:main:telegram:dm:12345")
}

pub(crate) fn take(queue: &CompletionQueue) -> Event {
    queue.take_timeout(GUARD).expect("completion")
}

/// A scratch directory, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh SQLite ledger (process durability) in its own scratch directory, its sweep
/// out of the way.
pub(crate) fn sqlite_queue(name: &str) -> (CompletionQueue, Scratch) {
    let dir = std::env::temp_dir().join(format!("bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    let queue = CompletionQueue::builder(ledger)
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600)))
        .open()
        .unwrap();
    (queue, Scratch(dir))
}

/// The `dispatch` call alone (its runner held at a gate until the call returned); then
/// the slot is freed and the completion taken, outside the measurement.
pub(crate) fn timed_dispatch(engine: &DelegationEngine, queue: &CompletionQueue) -> Duration {
    let (open, closed) = crossbeam_channel::bounded::<()>(0);
    let runner = move || {
        let _ = closed.recv_timeout(GUARD);
        Ok(DelegationResult::completed("done"))
    };
    let spec = spec();
    let started = Instant::now();
    let outcome = engine.dispatch(spec, runner, None, 1);
    let spent = started.elapsed();
    assert!(outcome.is_dispatched(), "{outcome:?}");
    drop(open);
    take(queue);
    spent
}

/// From a runner's return to a consumer — already waiting in `claim_timeout` on another
/// thread — holding the claim.
pub(crate) fn runner_return_to_claim(
    engine: &DelegationEngine,
    queue: &CompletionQueue,
) -> Duration {
    let (returned_tx, returned) = crossbeam_channel::bounded::<Instant>(1);
    let consumer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let claim = queue
                .claim_timeout(&ClaimFilter::routed(), GUARD)
                .unwrap()
                .expect("claimed");
            let held = Instant::now();
            claim.ack().unwrap();
            held
        })
    };
    // Let the consumer reach its wait.
    std::thread::sleep(Duration::from_micros(200));
    let runner = move || {
        let _ = returned_tx.send(Instant::now());
        Ok(DelegationResult::completed("done"))
    };
    assert!(engine.dispatch(spec(), runner, None, 1).is_dispatched());
    let held = consumer.join().unwrap();
    held.saturating_duration_since(returned.recv().unwrap())
}
