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

/// The deadline a spin's yielding rounds ask about, reading the clock only while the
/// deadline is near: on a busy core a yield can give the core away for a scheduler slice,
/// so a near deadline is checked at every yielding round, but one at least [`FAR`] away
/// when the yielding begins cannot pass during its 16 yields (the armed wait that follows
/// keeps it to the microsecond) and is not read again.
pub(crate) struct SpinDeadline {
    deadline: Option<std::time::Instant>,
}

/// How far a deadline must be for a spin not to watch it.
const FAR: std::time::Duration = std::time::Duration::from_secs(1);

impl SpinDeadline {
    pub(crate) fn new(deadline: Option<std::time::Instant>) -> Self {
        SpinDeadline { deadline }
    }

    /// Whether the deadline has passed (never, once it was found far).
    pub(crate) fn passed(&mut self) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let now = std::time::Instant::now();
        if deadline.saturating_duration_since(now) >= FAR {
            self.deadline = None;
        }
        now >= deadline
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::SpinDeadline;

    #[test]
    fn a_near_deadline_is_watched_and_a_far_one_is_not() {
        assert!(!SpinDeadline::new(None).passed());
        assert!(SpinDeadline::new(Some(Instant::now())).passed());
        let mut near = SpinDeadline::new(Some(Instant::now() + Duration::from_millis(900)));
        assert!(!near.passed());
        assert!(near.deadline.is_some(), "a near deadline is read again");
        let mut far = SpinDeadline::new(Some(Instant::now() + Duration::from_secs(30)));
        assert!(!far.passed());
        assert!(far.deadline.is_none(), "a far deadline is not read again");
    }
}
