//! The router's metrics, through the `metrics` facade: no-ops until the program installs
//! a recorder (the library never does). Names and units are listed in the crate docs.

use metrics::{Counter, Histogram};
use process_registry::Event;

/// Completions an adapter accepted (counter).
pub const DELIVERED: &str = "delegation_delivered_total";
/// Claims put back because their session was busy, no attempt spent (counter).
pub const DEFERRED: &str = "delegation_deferred_total";
/// Failed delivery attempts, to be retried (counter).
pub const RELEASED: &str = "delegation_released_total";
/// Completions given up on: unroutable, or failed on their last attempt (counter).
pub const DEAD: &str = "delegation_dead_total";
/// Seconds from a completion to its delivery (histogram).
pub const TIME_TO_DELIVERY_SECONDS: &str = "delegation_time_to_delivery_seconds";
/// Seconds a completion waited in the ledger before the router claimed it — for a busy
/// session, until its turn ended (histogram).
pub const QUEUE_WAIT_SECONDS: &str = "delegation_queue_wait_seconds";

/// How a claim was settled.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Delivered,
    Deferred,
    Released,
    Dead,
}

/// A router's registered metrics: the handles are registered once, when the router is
/// built (install the recorder before), so a delivery pays an increment on a handle, not
/// a key's construction and lookup.
pub(crate) struct RouterMetrics {
    delivered: Counter,
    deferred: Counter,
    released: Counter,
    dead: Counter,
    time_to_delivery: Histogram,
    queue_wait: Histogram,
}

impl RouterMetrics {
    pub(crate) fn register() -> Self {
        RouterMetrics {
            delivered: metrics::counter!(DELIVERED),
            deferred: metrics::counter!(DEFERRED),
            released: metrics::counter!(RELEASED),
            dead: metrics::counter!(DEAD),
            time_to_delivery: metrics::histogram!(TIME_TO_DELIVERY_SECONDS),
            queue_wait: metrics::histogram!(QUEUE_WAIT_SECONDS),
        }
    }

    /// A claim was settled.
    pub(crate) fn settled(&self, outcome: Outcome, event: &Event) {
        let counter = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Deferred => &self.deferred,
            Outcome::Released => &self.released,
            Outcome::Dead => &self.dead,
        };
        counter.increment(1);
        if let (Outcome::Delivered, Some(age)) = (outcome, seconds_since_completion(event)) {
            self.time_to_delivery.record(age);
        }
    }

    /// A completion was claimed.
    pub(crate) fn claimed(&self, event: &Event) {
        if let Some(age) = seconds_since_completion(event) {
            self.queue_wait.record(age);
        }
    }
}

/// Seconds since the event's `completed_at` (a delegation's; `None` for other events).
fn seconds_since_completion(event: &Event) -> Option<f64> {
    let Event::AsyncDelegation(event) = event else {
        return None;
    };
    let completed = event.completed_at.as_ref()?.as_f64();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some((now - completed).max(0.0))
}
