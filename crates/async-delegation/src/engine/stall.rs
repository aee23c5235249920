//! The stall monitor's sweep: interrupt what stopped making progress (or ran past its
//! deadline), finalize what is still running a grace later.

use std::sync::Arc;
use std::time::Duration;

use process_registry::{Event, StallReport, Status, Text, WireNumber};

use std::sync::atomic::Ordering;

use super::{call_hooks, Inner, Stall, StallPhase, Watched};
use crate::{DelegationResult, InterruptHook, Progress, StallPolicy};

/// How long a sweep waits for a clock that read a non-finite time.
const CLOCK_RETRY: Duration = Duration::from_secs(1);

/// The longest the monitor sleeps, in seconds (a day: a watched delegation's next check
/// is never later than its thresholds allow).
const MAX_SLEEP: f64 = 86_400.0;

/// What one watched delegation needs at a sweep.
enum Verdict {
    /// Nothing now; judged again at this time (on the engine's clock).
    WaitUntil(f64),
    /// Past its threshold or deadline: interrupt it.
    Interrupt(Stall),
    /// Interrupted, and still running past its grace: the engine writes its completion.
    Finalize(Stall),
    /// The monitor is writing its completion already.
    Done,
}

/// Judges one watched delegation at `now` (a finite time).
fn judge(watched: &Watched, policy: &StallPolicy, now: f64) -> Verdict {
    if watched.finalizing {
        return Verdict::Done;
    }
    let grace = policy.grace.as_secs_f64();
    if let Some(stall) = watched.stall {
        // Not before the ledger has its row (set right after the dispatch is recorded).
        return if now >= stall.interrupted_at + grace && watched.record.is_some() {
            Verdict::Finalize(stall)
        } else {
            Verdict::WaitUntil(stall.interrupted_at + grace)
        };
    }
    let last = watched
        .progress
        .as_ref()
        .map_or(watched.admitted_at, Progress::last_at);
    let idle = policy.idle.as_secs_f64();
    // (phase, threshold, when it is crossed, when to look again)
    let (mut phase, mut threshold, mut at, mut look) = (
        StallPhase::Deadline,
        f64::INFINITY,
        f64::INFINITY,
        f64::INFINITY,
    );
    if let Some(progress) = &watched.progress {
        if progress.in_tool() {
            threshold = policy.in_tool.as_secs_f64();
            phase = StallPhase::InTool;
            at = last + threshold;
            // A child may leave its tool call and then go quiet: the idle threshold is
            // looked at again within its own length, so it is never judged late.
            look = at.min(now.max(last) + idle);
        } else {
            threshold = idle;
            phase = StallPhase::Idle;
            at = last + threshold;
            look = at;
        }
    }
    if let Some((deadline, length)) = watched.deadline {
        if deadline < at {
            (phase, threshold, at) = (StallPhase::Deadline, length, deadline);
            look = look.min(deadline);
        }
    }
    if now < at {
        return Verdict::WaitUntil(look);
    }
    Verdict::Interrupt(Stall {
        interrupted_at: now,
        // A clock that stepped back reads no negative quiet time.
        quiet: (now - last).max(0.0),
        threshold,
        phase,
    })
}

impl Stall {
    /// The reason the interrupt hook is given.
    fn reason(&self) -> String {
        match self.phase {
            StallPhase::Deadline => "the delegation ran past its deadline".to_owned(),
            StallPhase::Idle | StallPhase::InTool => {
                format!("no progress for {} s", self.quiet.round())
            }
        }
    }
}

/// A delegation the sweep finalizes, taken out of the state under the lock.
struct Finalize {
    number: u32,
    stall: Stall,
}

impl Inner {
    /// The monitor thread's sweep: how long until the next one is due.
    pub(super) fn monitor_sweep(self: &Arc<Self>) -> Option<Duration> {
        self.sweep().1
    }

    /// One sweep at the clock's now: how many delegations it acted on (interrupted or
    /// finalized), and how long until a watched one can next need acting on (`None`: none
    /// is watched).
    pub(super) fn sweep(self: &Arc<Self>) -> (usize, Option<Duration>) {
        let now = self.clock.now();
        if !now.is_finite() {
            // A clock that cannot tell the time judges nothing; looked at again soon.
            if !self.clock_failed.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    now,
                    "the engine's clock read a non-finite time; stall checks wait for it"
                );
            }
            return (0, Some(CLOCK_RETRY));
        }
        self.clock_failed.store(false, Ordering::Relaxed);
        let mut hooks: Vec<(InterruptHook, String)> = Vec::new();
        let mut finalize = Vec::new();
        let mut interrupted = 0;
        let mut next_due: Option<f64> = None;
        {
            let mut state = self.lock_state();
            for (number, running) in &mut state.running {
                let Some(watched) = running.watched.as_deref_mut() else {
                    continue;
                };
                let at = match judge(watched, &self.stall, now) {
                    Verdict::Done => continue,
                    Verdict::WaitUntil(at) => at,
                    Verdict::Interrupt(stall) => {
                        watched.stall = Some(stall);
                        interrupted += 1;
                        if let Some(hook) = &running.interrupt {
                            hooks.push((Arc::clone(hook), stall.reason()));
                        }
                        now + self.stall.grace.as_secs_f64()
                    }
                    Verdict::Finalize(stall) => {
                        watched.finalizing = true;
                        finalize.push(Finalize {
                            number: *number,
                            stall,
                        });
                        continue;
                    }
                };
                next_due = Some(next_due.map_or(at, |next| next.min(at)));
            }
        }
        let acted = interrupted + finalize.len();
        for (hook, reason) in hooks {
            call_hooks(vec![hook], &reason);
        }
        for one in finalize {
            self.finalize(one);
        }
        let wait = next_due.map(|at| {
            Duration::try_from_secs_f64((at - now).clamp(0.0, MAX_SLEEP)).unwrap_or(Duration::ZERO)
        });
        (acted, wait)
    }

    /// Writes the engine's own completion of a delegation still running past its grace.
    fn finalize(self: &Arc<Self>, Finalize { number, stall }: Finalize) {
        let (dispatched, record, dispatched_at) = {
            let state = self.lock_state();
            let Some(running) = state.running.get(&number) else {
                return;
            };
            let Some(watched) = running.watched.as_deref() else {
                return;
            };
            let Some(record) = watched.record else {
                return;
            };
            (running.dispatched.clone(), record, watched.dispatched_at)
        };
        let delegation_id = dispatched.id().to_owned();
        let status = if stall.phase == StallPhase::Deadline {
            Status::Timeout
        } else {
            Status::Stalled
        };
        let result = DelegationResult {
            status: Some(status.clone()),
            error: Some(Text::from(self.stall.error_text(
                stall.phase,
                &dispatched.spec().goal,
                stall.quiet,
            ))),
            exit_reason: Some(Text::from(status.as_str())),
            ..DelegationResult::default()
        };
        let mut finished = self.finished(&dispatched, dispatched_at, result);
        if let Some(Event::AsyncDelegation(event)) = Arc::get_mut(&mut finished.event) {
            let seconds = |value: f64| WireNumber::from_f64(crate::round_seconds(value));
            event.stall = Some(Box::new(StallReport {
                stalled_after_quiet_seconds: seconds(stall.quiet),
                stall_threshold_seconds: seconds(stall.threshold),
                stall_phase: Some(Text::from(stall.phase.as_str())),
                stall_grace_seconds: seconds(self.stall.grace.as_secs_f64()),
            }));
        }
        let completion = crate::trace::completion(&delegation_id, status.as_str(), true);
        let _completing = completion.enter();
        #[allow(unused_mut)]
        let mut ended = self.complete(record, &delegation_id, finished);
        #[cfg(feature = "tokio")]
        if !ended.is_discarded() {
            ended.abort_runner();
        }
        if ended.is_discarded() {
            tracing::info!(
                delegation_id,
                "the runner finished before its stalled delegation was finalized"
            );
        } else {
            tracing::warn!(
                delegation_id,
                status = status.as_str(),
                quiet_seconds = stall.quiet,
                "a delegation was finalized by the engine: its runner did not end after the interrupt"
            );
        }
        ended.publish();
    }
}
