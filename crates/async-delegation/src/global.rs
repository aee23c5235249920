//! The process-wide default engine and its convenience functions.

use once_cell::sync::Lazy;

use crate::{
    DelegationEngine, DelegationRecord, DelegationResult, DelegationSpec, DispatchOutcome,
    InterruptHook, RunnerError,
};

static GLOBAL: Lazy<DelegationEngine> =
    Lazy::new(|| DelegationEngine::new(process_registry::global().completion_queue().clone()));

/// The process-wide default engine, created on first use. Its completion events land on
/// [`process_registry::global()`]'s shared completion queue.
///
/// Libraries should take a [`DelegationEngine`] handle instead; this is a convenience
/// for programs that want exactly one.
pub fn global() -> &'static DelegationEngine {
    &GLOBAL
}

/// [`DelegationEngine::dispatch`] on the [`global`] engine.
pub fn dispatch_async_delegation<R>(
    spec: DelegationSpec,
    runner: R,
    interrupt: Option<InterruptHook>,
    max_async_children: usize,
) -> DispatchOutcome
where
    R: FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
{
    global().dispatch(spec, runner, interrupt, max_async_children)
}

/// [`DelegationEngine::active_count`] of the [`global`] engine.
pub fn active_count() -> usize {
    global().active_count()
}

/// [`DelegationEngine::list`] of the [`global`] engine.
pub fn list_async_delegations() -> Vec<DelegationRecord> {
    global().list()
}

/// [`DelegationEngine::interrupt_all`] on the [`global`] engine.
pub fn interrupt_all(reason: &str) -> usize {
    global().interrupt_all(reason)
}
