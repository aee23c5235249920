//! The bounded back-off a thread spends before it parks.

/// Spins, then yields, for a few microseconds until `ready` says so; `true` when it did.
///
/// A hand-off that completes while the waiting thread is still on its core then costs no
/// sleep and no wake-up through the kernel, which cost more than the whole hand-off. The
/// bound: 63 spin hints in six doubling rounds, then 16 yields of the core; `ready` is
/// asked before each round, with `true` once the spinning is over (a check that reads the
/// clock is cheap enough from then on). The completion queue's waits spend it before they
/// park, and so do the engine's idle workers. (With the 4 yields `crossbeam-channel`
/// backs off with, a worker's completion still missed the window on this project's
/// machines: one park and wake per round trip.)
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// let flag = AtomicBool::new(true);
/// assert!(process_registry::spin_then_yield(|_| flag.load(Ordering::Acquire)));
/// flag.store(false, Ordering::Release);
/// assert!(!process_registry::spin_then_yield(|_| flag.load(Ordering::Acquire)));
/// ```
pub fn spin_then_yield(mut ready: impl FnMut(bool) -> bool) -> bool {
    const SPIN_ROUNDS: u32 = 6;
    const YIELD_ROUNDS: u32 = 16;
    for round in 0..SPIN_ROUNDS + YIELD_ROUNDS {
        let yielding = round >= SPIN_ROUNDS;
        if ready(yielding) {
            return true;
        }
        if yielding {
            std::thread::yield_now();
        } else {
            for _ in 0..1_u32 << round {
                std::hint::spin_loop();
            }
        }
    }
    false
}
