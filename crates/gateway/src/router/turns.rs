//! Turn tracking: how many turns each session has open, and the guard that holds one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Shared;

/// The open turns of every session. A session is busy from its first open turn until
/// the last one ends: turns are counted, not flagged, so two overlapping turns (two
/// guards, or `begin_turn` twice) keep it busy until both have ended.
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// Open turns per session; a session with none has no entry.
    open: Mutex<HashMap<String, usize>>,
}

/// What [`Turns::end`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnEnded {
    /// No turn was open: nothing changed.
    NoneOpen,
    /// One turn ended; others are still open.
    StillBusy,
    /// The last open turn ended: the session is idle.
    NowIdle,
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a turn; `true` when the session went from idle to busy.
    pub(super) fn begin(&self, session_key: String) -> bool {
        let mut open = self.lock();
        let count = open.entry(session_key).or_insert(0);
        *count = count.saturating_add(1);
        *count == 1
    }

    /// Ends one open turn, if there is one (never below zero).
    pub(super) fn end(&self, session_key: &str) -> TurnEnded {
        let mut open = self.lock();
        let Some(count) = open.get_mut(session_key) else {
            return TurnEnded::NoneOpen;
        };
        *count -= 1;
        if *count > 0 {
            return TurnEnded::StillBusy;
        }
        open.remove(session_key);
        TurnEnded::NowIdle
    }

    /// `true` while the session has an open turn.
    pub(super) fn is_busy(&self, session_key: &str) -> bool {
        self.lock().contains_key(session_key)
    }

    /// The sessions among `session_keys` with no open turn.
    pub(super) fn idle<'k>(&self, session_keys: impl Iterator<Item = &'k String>) -> Vec<String> {
        let open = self.lock();
        session_keys
            .filter(|key| !open.contains_key(*key))
            .cloned()
            .collect()
    }
}

/// One open turn of a session, ended when this guard is dropped (or
/// [`end`](TurnGuard::end) is called); from
/// [`DeliveryRouter::turn`](super::DeliveryRouter::turn).
///
/// A guard ends exactly its own turn: other turns open on the same session — other
/// guards, or [`begin_turn`](super::DeliveryRouter::begin_turn) — keep it busy.
#[must_use = "the turn ends when the guard is dropped"]
pub struct TurnGuard {
    shared: Arc<Shared>,
    session_key: String,
}

impl TurnGuard {
    /// Opens a turn of `session_key` held by the new guard.
    pub(super) fn begin(shared: Arc<Shared>, session_key: String) -> TurnGuard {
        shared.turns.begin(session_key.clone());
        TurnGuard {
            shared,
            session_key,
        }
    }

    /// The session this guard keeps busy.
    pub fn session_key(&self) -> &str {
        &self.session_key
    }

    /// Ends this guard's turn now.
    pub fn end(self) {}
}

impl std::fmt::Debug for TurnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnGuard")
            .field("session_key", &self.session_key)
            .finish()
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.shared.end_turn(&self.session_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_session_and_never_goes_below_zero() {
        let turns = Turns::default();
        assert_eq!(turns.end("a"), TurnEnded::NoneOpen);
        assert!(turns.begin("a".into()));
        assert!(!turns.begin("a".into()));
        assert!(turns.begin("b".into()));
        let keys = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(turns.idle(keys.iter()), ["c"]);
        assert_eq!(turns.end("a"), TurnEnded::StillBusy);
        assert!(turns.is_busy("a"));
        assert_eq!(turns.end("a"), TurnEnded::NowIdle);
        assert_eq!(turns.end("a"), TurnEnded::NoneOpen);
        assert!(!turns.is_busy("a"));
        assert_eq!(turns.idle(keys.iter()), ["a", "c"]);
        assert!(
            turns.lock().get("a").is_none(),
            "an idle session leaves no entry"
        );
    }
}
