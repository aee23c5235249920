//! Why a dispatch was not accepted, and the texts that say so.

/// The text of [`DispatchError::CapacityReached`], with `{max}` standing for the limit
/// that was hit.
///
/// It is written for the model that asked. Its last sentence names the setting of the
/// Python agent harness these texts come from, `delegation.max_concurrent_children in
/// config.yaml`; here the limit is the `max_async_children` argument of
/// [`dispatch`](crate::DelegationEngine::dispatch) (delegate-tool's
/// `DelegationConfig::max_async_children`). Layers above can render their own text from
/// the typed error instead.
pub const CAPACITY_REACHED_TEXT: &str = "Async delegation capacity reached ({max} running). Wait for one to finish (its result will re-enter the chat), or run this task synchronously (background=false). Raise delegation.max_concurrent_children in config.yaml to allow more concurrent background subagents.";

/// The text of [`DispatchError::WorkerUnavailable`], with `{reason}` standing for the
/// operating system's error.
pub const WORKER_UNAVAILABLE_TEXT: &str = "Async delegation could not start a background worker ({reason}). Run this task synchronously (background=false) or try again later.";

/// The text of [`DispatchError::LedgerUnavailable`], with `{reason}` standing for the
/// ledger's error (a full disk, a read-only file, a lost connection).
pub const LEDGER_UNAVAILABLE_TEXT: &str = "Async delegation could not be recorded ({reason}), so it was not started. Run this task synchronously (background=false) or try again later.";

/// The text of [`DispatchError::ShutDown`].
pub const SHUT_DOWN_TEXT: &str = "Async delegation is shutting down, so this task was not started. Run it synchronously (background=false) or try again after the restart.";

/// Why [`dispatch`](crate::DelegationEngine::dispatch) rejected a delegation. Its
/// `Display` text is the `error` of [`DispatchOutcome::Rejected`](crate::DispatchOutcome),
/// written for the model that asked: [`CAPACITY_REACHED_TEXT`],
/// [`WORKER_UNAVAILABLE_TEXT`], [`LEDGER_UNAVAILABLE_TEXT`] (with the placeholder filled
/// in) or [`SHUT_DOWN_TEXT`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// `max_async_children` delegations are already running.
    #[error("{}", CAPACITY_REACHED_TEXT.replace("{max}", &.max.to_string()))]
    CapacityReached {
        /// The limit that was hit.
        max: usize,
    },
    /// The operating system refused to start a worker thread.
    #[error("{}", WORKER_UNAVAILABLE_TEXT.replace("{reason}", &.0.to_string()))]
    WorkerUnavailable(#[source] std::io::Error),
    /// The completion ledger could not record the dispatch (it must be recorded before
    /// the handle is returned, or a crash could lose the delegation): nothing was
    /// started and no slot is held.
    #[error("{}", LEDGER_UNAVAILABLE_TEXT.replace("{reason}", &.0.to_string()))]
    LedgerUnavailable(#[source] process_registry::LedgerError),
    /// The engine was shut down ([`DelegationEngine::shutdown`](crate::DelegationEngine::shutdown)):
    /// it accepts no new delegations.
    #[error("{}", SHUT_DOWN_TEXT)]
    ShutDown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_fill_their_placeholder() {
        assert_eq!(
            DispatchError::CapacityReached { max: 3 }.to_string(),
            "Async delegation capacity reached (3 running). Wait for one to finish (its result will re-enter the chat), or run this task synchronously (background=false). Raise delegation.max_concurrent_children in config.yaml to allow more concurrent background subagents."
        );
        let refused = std::io::Error::other("no threads left");
        assert_eq!(
            DispatchError::WorkerUnavailable(refused).to_string(),
            "Async delegation could not start a background worker (no threads left). Run this task synchronously (background=false) or try again later."
        );
        assert_eq!(
            DispatchError::ShutDown.to_string(),
            "Async delegation is shutting down, so this task was not started. Run it synchronously (background=false) or try again after the restart."
        );
    }
}
