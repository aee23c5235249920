//! The ledger's clock: seconds since the Unix epoch, injectable for tests.

use std::sync::Mutex;
use std::time::Duration;

/// A source of "now" for a ledger backend, in seconds since the Unix epoch.
///
/// Backends read every deadline (leases, backoffs, retention, the restore horizon) from
/// their clock, so a test can move time by hand with [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> f64;

    /// [`now`](Self::now), allowed to lag by a few milliseconds: for timestamps that
    /// only record when something happened (a row's `created_at`), never for a deadline.
    /// Cheaper on Linux, where [`SystemClock`] reads the kernel's coarse clock.
    fn recent(&self) -> f64 {
        self.now()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// `CLOCK_REALTIME` on Linux, read straight into seconds (`SystemTime`'s checked
    /// subtraction from the epoch costs more than the read); `SystemTime` elsewhere.
    fn now(&self) -> f64 {
        #[cfg(target_os = "linux")]
        {
            seconds(rustix::time::clock_gettime(rustix::time::ClockId::Realtime))
        }
        #[cfg(not(target_os = "linux"))]
        {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |elapsed| elapsed.as_secs_f64())
        }
    }

    /// `CLOCK_REALTIME_COARSE`: the time at the last scheduler tick (a few ms of lag at
    /// most), read without a clock-source access — a quarter of the cost of `now`.
    #[cfg(target_os = "linux")]
    fn recent(&self) -> f64 {
        seconds(rustix::time::clock_gettime(
            rustix::time::ClockId::RealtimeCoarse,
        ))
    }
}

/// A clock reading in seconds, as `Duration::as_secs_f64` computes them.
#[cfg(target_os = "linux")]
fn seconds(at: rustix::time::Timespec) -> f64 {
    at.tv_sec as f64 + at.tv_nsec as f64 / 1e9
}

/// A clock that only moves when told to: for tests of leases, backoffs and retention.
///
/// ```
/// use std::time::Duration;
/// use process_registry::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000.0);
/// clock.advance(Duration::from_secs(300));
/// assert_eq!(clock.now(), 1_300.0);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<f64>,
}

impl ManualClock {
    /// A clock standing at `now` (Unix seconds).
    pub fn new(now: f64) -> Self {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by.as_secs_f64();
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: f64) {
        *self.lock() = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        *self.lock()
    }
}
