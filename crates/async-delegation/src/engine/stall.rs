//! The stall monitor's sweep: interrupt what stopped making progress (or ran past its
//! deadline), finalize what is still running a grace later.

use std::sync::Arc;
use std::time::Duration;

use process_registry::{Event, StallReport, Status, Text, WireNumber};

use super::{call_hooks, Inner, Stall, StallPhase};
use crate::{DelegationResult, InterruptHook};

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

    /// One sweep at the clock's now: how many delegations it acted on, and how long until
    /// a watched one can next need acting on (`None`: none is watched).
    pub(super) fn sweep(self: &Arc<Self>) -> (usize, Option<Duration>) {
        let now = self.clock.now();
        let grace = self.stall.grace.as_secs_f64();
        let mut hooks: Vec<(InterruptHook, String)> = Vec::new();
        let mut finalize = Vec::new();
        let mut next_due: Option<f64> = None;
        let mut due = |at: f64| next_due = Some(next_due.map_or(at, |next| next.min(at)));
        {
            let mut state = self.lock_state();
            for (number, running) in &mut state.running {
                let Some(watched) = running.watched.as_deref_mut() else {
                    continue;
                };
                if watched.finalizing {
                    continue;
                }
                if let Some(stall) = watched.stall {
                    if now >= stall.interrupted_at + grace && watched.record.is_some() {
                        watched.finalizing = true;
                        finalize.push(Finalize {
                            number: *number,
                            stall,
                        });
                    } else {
                        due(stall.interrupted_at + grace);
                    }
                    continue;
                }
                let quiet_since = watched.progress.as_ref().map(crate::Progress::last_at);
                let (phase, threshold, at) = match &watched.progress {
                    Some(progress) => {
                        let (phase, threshold) = if progress.in_tool() {
                            (StallPhase::InTool, self.stall.in_tool)
                        } else {
                            (StallPhase::Idle, self.stall.idle)
                        };
                        let threshold = threshold.as_secs_f64();
                        let last = quiet_since.unwrap_or(now);
                        (phase, threshold, last + threshold)
                    }
                    None => (StallPhase::Deadline, f64::INFINITY, f64::INFINITY),
                };
                let (phase, threshold, at) = match watched.deadline {
                    Some((deadline, length)) if deadline < at => {
                        (StallPhase::Deadline, length, deadline)
                    }
                    _ => (phase, threshold, at),
                };
                if now < at {
                    due(at);
                    continue;
                }
                let quiet = now - quiet_since.unwrap_or(now - threshold);
                watched.stall = Some(Stall {
                    interrupted_at: now,
                    quiet,
                    threshold,
                    phase,
                });
                due(now + grace);
                if let Some(hook) = &running.interrupt {
                    let reason = match phase {
                        StallPhase::Deadline => "the delegation ran past its deadline".to_owned(),
                        _ => format!("no progress for {} s", quiet.round()),
                    };
                    hooks.push((Arc::clone(hook), reason));
                }
            }
        }
        let acted = hooks.len() + finalize.len();
        for (hook, reason) in hooks {
            call_hooks(vec![hook], &reason);
        }
        for one in finalize {
            self.finalize(one);
        }
        let wait = next_due.map(|at| Duration::from_secs_f64((at - now).clamp(0.0, 86_400.0)));
        (acted, wait)
    }

    /// Writes the engine's own completion of a delegation still running past its grace.
    fn finalize(self: &Arc<Self>, Finalize { number, stall }: Finalize) {
        let (dispatched, record, dispatched_at, steering) = {
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
            (
                running.dispatched.clone(),
                record,
                watched.dispatched_at,
                running.steering.clone(),
            )
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
        let result = super::with_missed_steer(result, steering.as_ref());
        let mut finished = self.finished(&delegation_id, &dispatched, dispatched_at, result);
        if let Some(Event::AsyncDelegation(event)) = Arc::get_mut(&mut finished.event) {
            let seconds = |value: f64| WireNumber::from_f64(crate::round_seconds(value));
            event.stall = Some(Box::new(StallReport {
                stalled_after_quiet_seconds: seconds(stall.quiet),
                stall_threshold_seconds: seconds(stall.threshold),
                stall_phase: Some(Text::from(stall.phase.as_str())),
                stall_grace_seconds: seconds(self.stall.grace.as_secs_f64()),
            }));
        }
        let ended = self.complete(record, &delegation_id, finished);
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
