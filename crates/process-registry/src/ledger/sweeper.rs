//! The `ledger-sweep` thread: recovery, expiry, pruning and retries, on a schedule.

use std::sync::Weak;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::queue::Core;

/// The name of the sweep thread.
pub const SWEEP_THREAD_NAME: &str = "ledger-sweep";

/// The handle of a running sweep thread: dropping it (with the queue's last handle)
/// stops the thread at its next wake-up, which is at once.
pub(crate) struct Sweeper {
    _stop: Sender<()>,
}

impl Sweeper {
    /// Starts the thread. It holds only a weak reference to the queue, so it never keeps
    /// the queue (or the process) alive; it exits when the queue is dropped.
    pub(crate) fn start(core: Weak<Core>, interval: Duration) -> std::io::Result<Sweeper> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        std::thread::Builder::new()
            .name(SWEEP_THREAD_NAME.to_owned())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    // The queue is gone.
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let Some(core) = core.upgrade() else {
                    return;
                };
                if let Err(error) = core.sweep() {
                    tracing::warn!(%error, "the ledger sweep failed; trying again at the next one");
                }
            })?;
        Ok(Sweeper { _stop: stop })
    }
}
