//! Why a dispatch was not accepted.

/// Why [`dispatch`](crate::DelegationEngine::dispatch) rejected a delegation. Its
/// `Display` text is the `error` of [`DispatchOutcome::Rejected`](crate::DispatchOutcome),
/// written for the model that asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// `max_async_children` delegations are already running.
    #[error(
        "Async delegation capacity reached ({max} running). Wait for one to finish (its result \
         will re-enter the chat), or run this task synchronously (background=false). Raise \
         delegation.max_concurrent_children in config.yaml to allow more concurrent background \
         subagents."
    )]
    CapacityReached {
        /// The limit that was hit.
        max: usize,
    },
    /// The operating system refused to start a worker thread.
    #[error(
        "Async delegation could not start a background worker ({0}). Run this task \
         synchronously (background=false) or try again later."
    )]
    WorkerUnavailable(#[source] std::io::Error),
}
