//! The ledger's rules, as numbers.

use std::time::Duration;

/// How long claims last, how often a failing delivery is retried, and how long rows are
/// kept. The defaults are the contract's; tests shorten them or move a
/// [`ManualClock`](crate::ManualClock) instead of sleeping.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LedgerConfig {
    /// A claim's lease: after it, an undecided claim is claimable again, as a possible
    /// redelivery (default 300 s).
    pub lease: Duration,
    /// Claims after which a release makes the row dead (default 8).
    pub max_attempts: u32,
    /// Backoff after the first failed attempt; it doubles with every attempt (default 1 s).
    pub backoff_base: Duration,
    /// The longest backoff (default 5 min).
    pub backoff_cap: Duration,
    /// Restored completions older than this are not replayed after a restart: they
    /// become dead (default 48 h).
    pub restore_horizon: Duration,
    /// Delivered rows are kept this long, then pruned (default 7 days), by backends that
    /// keep them.
    pub retention: Duration,
    /// How often a background sweep recovers the rows of instances that died, prunes,
    /// and retries writes that failed (default 30 s).
    pub sweep_interval: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            lease: Duration::from_secs(300),
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            restore_horizon: Duration::from_secs(48 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

impl LedgerConfig {
    /// Sets the lease.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the attempts after which a release makes the row dead (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the backoff's base and cap.
    pub fn with_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap.max(base);
        self
    }

    /// Sets the restore horizon.
    pub fn with_restore_horizon(mut self, horizon: Duration) -> Self {
        self.restore_horizon = horizon;
        self
    }

    /// Sets how long delivered rows are kept.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the sweep interval (at least 10 ms).
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The backoff after failed attempt number `attempt` (1-based): `base · 2^(attempt−1)`,
    /// at most the cap.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = LedgerConfig::default();
        let seconds: Vec<u64> = (1..=12).map(|n| config.backoff(n).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(300));
    }
}
