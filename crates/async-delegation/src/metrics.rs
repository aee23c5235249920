//! The engine's metrics, through the `metrics` facade: no-ops until the program installs a
//! recorder (the library never does). Names and units are listed in the crate docs.
//!
//! The handles are registered once, when the engine is built (so install the recorder
//! before building the engines it should see): a dispatch then pays an increment on a
//! handle, not a key's construction and lookup — nothing at all without a recorder.

use metrics::{Counter, Gauge, Histogram};
use process_registry::{Event, Status};

use crate::DispatchError;

/// Accepted dispatches (counter).
pub const DISPATCHED: &str = "delegation_dispatched_total";
/// Refused dispatches, labelled `reason` (counter).
pub const REJECTED: &str = "delegation_rejected_total";
/// Recorded completions, labelled `status` (counter).
pub const COMPLETED: &str = "delegation_completed_total";
/// Delegations running now (gauge).
pub const RUNNING: &str = "delegation_running";
/// Seconds from dispatch to completion (histogram).
pub const RUN_SECONDS: &str = "delegation_run_seconds";

/// The statuses whose counter is registered up front (others are registered when seen).
const KNOWN: [Status; 9] = [
    Status::Completed,
    Status::Success,
    Status::Error,
    Status::Failed,
    Status::Interrupted,
    Status::Timeout,
    Status::Stalled,
    Status::Unknown,
    Status::Cancelled,
];

/// `status`'s place in [`KNOWN`].
fn known_index(status: &Status) -> Option<usize> {
    Some(match status {
        Status::Completed => 0,
        Status::Success => 1,
        Status::Error => 2,
        Status::Failed => 3,
        Status::Interrupted => 4,
        Status::Timeout => 5,
        Status::Stalled => 6,
        Status::Unknown => 7,
        Status::Cancelled => 8,
        Status::Running | Status::Other(_) => return None,
    })
}

/// An engine's registered metrics.
pub(crate) struct EngineMetrics {
    dispatched: Counter,
    rejected: [Counter; 4],
    completed: [Counter; KNOWN.len()],
    running: Gauge,
    run_seconds: Histogram,
}

impl EngineMetrics {
    pub(crate) fn register() -> Self {
        let rejected = [
            "capacity",
            "shut_down",
            "worker_unavailable",
            "ledger_unavailable",
        ]
        .map(|reason| metrics::counter!(REJECTED, "reason" => reason));
        let completed = KNOWN.map(|status| {
            metrics::counter!(COMPLETED, "status" => status.known_str().unwrap_or_default())
        });
        EngineMetrics {
            dispatched: metrics::counter!(DISPATCHED),
            rejected,
            completed,
            running: metrics::gauge!(RUNNING),
            run_seconds: metrics::histogram!(RUN_SECONDS),
        }
    }

    /// A dispatch was accepted: one more runs.
    #[inline]
    pub(crate) fn dispatched(&self) {
        self.dispatched.increment(1);
        self.running.increment(1.0);
    }

    /// A dispatch was refused.
    pub(crate) fn rejected(&self, error: &DispatchError) {
        let index = match error {
            DispatchError::CapacityReached { .. } => 0,
            DispatchError::ShutDown => 1,
            DispatchError::WorkerUnavailable(_) => 2,
            DispatchError::LedgerUnavailable(_) => 3,
        };
        self.rejected[index].increment(1);
    }

    /// A completion was recorded (the one of its delegation): one fewer runs.
    pub(crate) fn completed(&self, event: &Event) {
        let Event::AsyncDelegation(event) = event else {
            return;
        };
        let status = event.status.as_ref().unwrap_or(&Status::Completed);
        match known_index(status) {
            Some(index) => self.completed[index].increment(1),
            None => {
                metrics::counter!(COMPLETED, "status" => status.as_str().to_owned()).increment(1)
            }
        }
        self.running.decrement(1.0);
        let at = |time: &Option<process_registry::WireNumber>| time.as_ref().map(|t| t.as_f64());
        if let (Some(dispatched), Some(completed)) =
            (at(&event.dispatched_at), at(&event.completed_at))
        {
            self.run_seconds.record((completed - dispatched).max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_status_has_its_own_counter() {
        for (index, status) in KNOWN.iter().enumerate() {
            assert_eq!(known_index(status), Some(index), "{status}");
        }
        assert_eq!(known_index(&Status::from("paused")), None);
    }
}
