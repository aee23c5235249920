//! Admission: the capacity check, the id draw and the dispatch's record in the ledger.

use std::sync::Arc;

use process_registry::{DispatchRecord, Event, Recorded, Text};

use super::{drop_fenced, unix_now, Dispatched, Inner, Running, Watched};
use crate::handle::Watch;
use crate::{Controls, DelegationSpec, DispatchError, InterruptHook, Steering};

impl Inner {
    /// Checks capacity, draws an id no live record has, and inserts the running record
    /// (taking the hook), in one critical section. Refused at capacity or after a
    /// shutdown.
    fn admit(
        &self,
        mut spec: Arc<Event>,
        interrupt: &mut Option<InterruptHook>,
        controls: (Option<&Steering>, Option<&Watched>),
        max_async_children: usize,
    ) -> Result<(Text, Dispatched), DispatchError> {
        // Drawn before the lock; drawn again under it only on a collision.
        let (mut number, mut candidate) = new_delegation_id();
        let mut state = self.lock_state();
        if state.shut_down {
            return Err(DispatchError::ShutDown);
        }
        if state.running.len() >= max_async_children {
            return Err(DispatchError::CapacityReached {
                max: max_async_children,
            });
        }
        while state.running.contains_key(&number) || state.retained.holds(number) {
            (number, candidate) = new_delegation_id();
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        // Unshared (a refused draw's copy in `running` was taken back): set in place.
        if let Event::AsyncDelegation(spec) = Arc::make_mut(&mut spec) {
            spec.delegation_id = Some(candidate.clone());
        }
        let dispatched = Dispatched {
            event: spec,
            number,
        };
        state.running.insert(
            number,
            Running {
                seq,
                dispatched: dispatched.clone(),
                interrupt: interrupt.take(),
                steering: controls.0.cloned(),
                watch: None,
                watched: controls.1.map(|watched| Box::new(watched.clone())),
                #[cfg(feature = "tokio")]
                abort: None,
            },
        );
        Ok((candidate, dispatched))
    }

    /// Admits a dispatch and records it in the ledger: capacity check, id draw and insert
    /// are one critical section (two racing dispatches for the last slot cannot both see
    /// it free), then the ledger records the dispatch before any handle is returned; an id
    /// the ledger already holds is drawn again, and a failed write gives the slot back at
    /// once. On a refusal the hook has been dropped (fenced); the runner is the caller's.
    pub(crate) fn admit_recorded(
        &self,
        spec: DelegationSpec,
        controls: Controls,
        max_async_children: usize,
    ) -> Result<Admitted, DispatchError> {
        let dispatched_at = unix_now();
        let mut spec = Dispatched::restate(spec, dispatched_at);
        let Controls {
            mut interrupt,
            steering,
            progress,
            deadline,
        } = controls;
        let watched = (progress.is_some() || deadline.is_some()).then(|| {
            let now = self.clock.now();
            // Quiet time counts from the dispatch at the earliest.
            if let Some(progress) = &progress {
                progress.not_before(now);
            }
            if deadline.is_some() && !now.is_finite() {
                tracing::error!(now, "the engine's clock read a non-finite time; the delegation runs without its deadline");
            }
            Watched {
                progress,
                deadline: deadline.filter(|_| now.is_finite()).map(|deadline| {
                    let length = deadline.as_secs_f64();
                    (now + length, length)
                }),
                admitted_at: if now.is_finite() { now } else { 0.0 },
                record: None,
                dispatched_at,
                stall: None,
                finalizing: false,
            }
        });
        let mut draws = 0_u32;
        loop {
            let admitted = self.admit(
                spec,
                &mut interrupt,
                (steering.as_ref(), watched.as_ref()),
                max_async_children,
            );
            let Ok((delegation_id, dispatched)) = admitted else {
                // The hook is the caller's code; its drop runs after the lock is released
                // and cannot make a refusal a panic (the runner's, likewise, is dropped
                // by the caller, after this one: a panic in one drop must not unwind
                // through the other's).
                drop_fenced(interrupt);
                return Err(admitted.err().unwrap_or(DispatchError::ShutDown));
            };
            let recorded = self.queue.record_dispatch(
                &delegation_id,
                &dispatched.spec().session_key,
                Arc::clone(&dispatched.event),
            );
            match recorded {
                Ok(Recorded::Dispatch(record)) => {
                    if watched.is_some() {
                        let mut state = self.lock_state();
                        let running = state.running.get_mut(&dispatched.number);
                        if let Some(watched) = running.and_then(|r| r.watched.as_mut()) {
                            watched.record = Some(record);
                        }
                    }
                    return Ok(Admitted {
                        delegation_id,
                        dispatched,
                        record,
                        dispatched_at,
                    });
                }
                Ok(Recorded::IdTaken) if draws < MAX_ID_DRAWS => {
                    draws += 1;
                    interrupt = self.unadmit(&delegation_id);
                    spec = dispatched.into_spec();
                }
                Ok(Recorded::IdTaken) => {
                    let hook = self.unadmit(&delegation_id);
                    drop_fenced(hook);
                    return Err(DispatchError::LedgerUnavailable(
                        process_registry::LedgerError::Unwritable {
                            reason: format!("no free delegation id after {MAX_ID_DRAWS} draws"),
                        },
                    ));
                }
                Err(error) => {
                    let hook = self.unadmit(&delegation_id);
                    drop_fenced(hook);
                    tracing::warn!(%error, "an async delegation could not be recorded; rejected");
                    return Err(DispatchError::LedgerUnavailable(error));
                }
            }
        }
    }

    /// Gives an admitted delegation (its runner not yet started) a handle's watch.
    pub(crate) fn watch(&self, delegation_id: &str, watch: Arc<Watch>) {
        let Some(number) = id_number(delegation_id) else {
            return;
        };
        if let Some(running) = self.lock_state().running.get_mut(&number) {
            running.watch = Some(watch);
        }
    }

    /// Takes an admitted delegation back (its dispatch did not go through) and returns
    /// its hook, to be dropped outside the lock.
    pub(super) fn unadmit(&self, delegation_id: &str) -> Option<InterruptHook> {
        let (removed, drained) = {
            let mut state = self.lock_state();
            let removed = id_number(delegation_id).and_then(|n| state.running.remove(&n));
            (removed, state.running.is_empty())
        };
        if drained {
            // A shutdown may be waiting for the last delegation: this was it.
            self.drained.notify(usize::MAX);
        }
        removed.and_then(|running| running.interrupt)
    }

    /// The ledger's row of a dispatch whose worker never started: retracted, so the
    /// delegation that was never accepted leaves no trace and no completion.
    pub(super) fn abandon(
        &self,
        record: DispatchRecord,
        delegation_id: &str,
        why: &std::io::Error,
    ) {
        if let Err(error) = self.queue.retract_dispatch(record, delegation_id) {
            tracing::error!(%error, delegation_id, %why, "a rejected dispatch's ledger row could not be retracted");
        }
    }
}

/// A dispatch the engine admitted and the ledger recorded: what starting it needs.
pub(crate) struct Admitted {
    pub(super) delegation_id: Text,
    pub(super) dispatched: Dispatched,
    pub(super) record: DispatchRecord,
    pub(super) dispatched_at: f64,
}

#[cfg(feature = "tokio")]
impl Admitted {
    pub(crate) fn delegation_id(&self) -> &Text {
        &self.delegation_id
    }

    pub(crate) fn dispatched(&self) -> &Dispatched {
        &self.dispatched
    }

    pub(crate) fn dispatched_at(&self) -> f64 {
        self.dispatched_at
    }

    pub(crate) fn record(&self) -> DispatchRecord {
        self.record
    }
}

/// The most ids one dispatch draws when the ledger keeps answering that an id is taken.
const MAX_ID_DRAWS: u32 = 64;

/// A random number and its id, `deleg_` + its 8 lowercase hex digits (written by hand:
/// `format!` costs more than the rest of the draw; the 14 bytes are kept inline in the
/// `Text`, so the id allocates nothing).
fn new_delegation_id() -> (u32, Text) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// The id's 14 bytes and two of padding, aligned: the UTF-8 check of 16 aligned
    /// bytes takes its word-at-a-time ASCII path (one step), where 14 bytes went through
    /// its byte-by-byte one (≈ 100 instructions).
    #[repr(align(16))]
    struct Padded([u8; 16]);
    let number = rand::random::<u32>();
    let mut id = Padded(*b"deleg_00000000\0\0");
    for (digit, shift) in id.0[6..14].iter_mut().zip((0..8).rev()) {
        *digit = HEX[(number >> (shift * 4)) as usize & 0xf];
    }
    // Every byte is ASCII: the check passes (and costs less than the allocation of a
    // `String` it replaces).
    let id = std::str::from_utf8(&id.0).map_or("", |id| &id[..14]);
    (number, Text::from(id))
}

/// The number of an id drawn by [`new_delegation_id`]; `None` for any other text.
pub(super) fn id_number(delegation_id: &str) -> Option<u32> {
    let hex = delegation_id.strip_prefix("deleg_")?;
    if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id is `deleg_` and its number's 8 lowercase hex digits, nothing of the
    /// padding, and it reads back as that number.
    #[test]
    fn a_drawn_id_is_its_number_in_eight_lowercase_hex_digits() {
        for _ in 0..20_000 {
            let (number, id) = new_delegation_id();
            assert_eq!(&*id, format!("deleg_{number:08x}"));
            assert_eq!(id_number(&id), Some(number));
        }
    }
}
