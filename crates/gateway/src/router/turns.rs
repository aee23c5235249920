//! Turn tracking: the open turns of each session, and the guard that holds one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Shared;

/// The open turns of every session. A session is busy from its first open turn until
/// the last one ends, so two overlapping turns keep it busy until both have ended.
///
/// A turn opened by `begin_turn` is anonymous: any `end_turn` may end it, so they are
/// counted. A turn opened by a [`TurnGuard`] has a token of its own, and the guard ends
/// that turn only — or nothing, when an `end_turn` already ended it.
#[derive(Debug, Default)]
pub(super) struct Turns {
    table: Mutex<TurnTable>,
}

#[derive(Debug, Default)]
struct TurnTable {
    /// Sessions with at least one open turn; a session with none has no entry.
    open: HashMap<String, OpenTurns>,
    /// The token of the next guard turn (tokens grow, so the smallest is the oldest).
    next_token: u64,
}

#[derive(Debug, Default)]
struct OpenTurns {
    /// Open `begin_turn` turns.
    anonymous: usize,
    /// Open guard turns, by token.
    guards: BTreeSet<TurnToken>,
}

impl OpenTurns {
    fn is_empty(&self) -> bool {
        self.anonymous == 0 && self.guards.is_empty()
    }
}

/// The identity of a guard's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TurnToken(u64);

/// What ending a turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnEnded {
    /// The turn was not open (no turn at all, or the guard's turn was already ended):
    /// nothing changed.
    NoneOpen,
    /// One turn ended; others are still open.
    StillBusy,
    /// The last open turn ended: the session is idle.
    NowIdle,
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, TurnTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens an anonymous turn; `true` when the session went from idle to busy.
    pub(super) fn begin(&self, session_key: String) -> bool {
        let mut table = self.lock();
        let turns = table.open.entry(session_key).or_default();
        let was_idle = turns.is_empty();
        turns.anonymous = turns.anonymous.saturating_add(1);
        was_idle
    }

    /// Opens a guard's turn and returns its token.
    pub(super) fn begin_guarded(&self, session_key: String) -> TurnToken {
        let mut table = self.lock();
        let token = TurnToken(table.next_token);
        table.next_token += 1;
        table
            .open
            .entry(session_key)
            .or_default()
            .guards
            .insert(token);
        token
    }

    /// Ends one open turn: the oldest anonymous one, else — a stray end, with only guard
    /// turns open — the oldest guard's turn (that guard's drop then changes nothing).
    ///
    /// Anonymous turns go first so that an `end_turn` paired with a `begin_turn` never
    /// takes a guard's turn while the anonymous one stays open with no end left to
    /// close it.
    pub(super) fn end(&self, session_key: &str) -> TurnEnded {
        self.end_where(session_key, |turns| {
            if turns.anonymous > 0 {
                turns.anonymous -= 1;
                true
            } else {
                turns.guards.pop_first().is_some()
            }
        })
    }

    /// Ends the guard turn `token`, if it is still open.
    pub(super) fn end_guarded(&self, session_key: &str, token: TurnToken) -> TurnEnded {
        self.end_where(session_key, |turns| turns.guards.remove(&token))
    }

    fn end_where(&self, session_key: &str, end: impl FnOnce(&mut OpenTurns) -> bool) -> TurnEnded {
        let mut table = self.lock();
        let Some(turns) = table.open.get_mut(session_key) else {
            return TurnEnded::NoneOpen;
        };
        if !end(turns) {
            return TurnEnded::NoneOpen;
        }
        if !turns.is_empty() {
            return TurnEnded::StillBusy;
        }
        table.open.remove(session_key);
        TurnEnded::NowIdle
    }

    /// `true` while the session has an open turn.
    pub(super) fn is_busy(&self, session_key: &str) -> bool {
        self.lock().open.contains_key(session_key)
    }

    /// The sessions with an open turn right now.
    pub(super) fn busy_sessions(&self) -> HashSet<String> {
        self.lock().open.keys().cloned().collect()
    }
}

/// One open turn of a session, ended when this guard is dropped (or
/// [`end`](TurnGuard::end) is called); from
/// [`DeliveryRouter::turn`](super::DeliveryRouter::turn).
///
/// A guard ends exactly its own turn, and only while it is open: other turns open on the
/// same session — other guards, or [`begin_turn`](super::DeliveryRouter::begin_turn) —
/// keep it busy, and when a stray [`end_turn`](super::DeliveryRouter::end_turn) already
/// ended the guard's turn (it ends a guard's turn only when no `begin_turn` turn is
/// open), dropping the guard changes nothing — in particular it never ends a turn opened
/// after it.
#[must_use = "the turn ends when the guard is dropped"]
pub struct TurnGuard {
    shared: Arc<Shared>,
    session_key: String,
    token: TurnToken,
}

impl TurnGuard {
    /// Opens a turn of `session_key` held by the new guard.
    pub(super) fn begin(shared: Arc<Shared>, session_key: String) -> TurnGuard {
        let token = shared.turns.begin_guarded(session_key.clone());
        TurnGuard {
            shared,
            session_key,
            token,
        }
    }

    /// The session this guard keeps busy.
    pub fn session_key(&self) -> &str {
        &self.session_key
    }

    /// Ends this guard's turn now (if it is still open).
    pub fn end(self) {}
}

impl std::fmt::Debug for TurnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnGuard")
            .field("session_key", &self.session_key)
            .finish_non_exhaustive()
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.shared.end_guarded_turn(&self.session_key, self.token);
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
        assert!(turns.is_busy("a") && turns.is_busy("b") && !turns.is_busy("c"));
        assert_eq!(turns.end("a"), TurnEnded::StillBusy);
        assert!(turns.is_busy("a"));
        assert_eq!(turns.end("a"), TurnEnded::NowIdle);
        assert_eq!(turns.end("a"), TurnEnded::NoneOpen);
        assert!(!turns.is_busy("a"));
        assert!(turns.is_busy("b"));
        assert!(
            !turns.lock().open.contains_key("a"),
            "an idle session leaves no entry"
        );
    }

    #[test]
    fn a_guard_turn_ends_once_and_only_its_own() {
        let turns = Turns::default();
        let first = turns.begin_guarded("a".into());
        let second = turns.begin_guarded("a".into());
        assert_eq!(turns.end_guarded("a", second), TurnEnded::StillBusy);
        assert_eq!(turns.end_guarded("a", second), TurnEnded::NoneOpen);
        // A stray end with only guard turns open ends the oldest guard's turn …
        assert_eq!(turns.end("a"), TurnEnded::NowIdle);
        // … and a turn opened later is not that guard's to end.
        assert!(turns.begin("a".into()));
        assert_eq!(turns.end_guarded("a", first), TurnEnded::NoneOpen);
        assert!(turns.is_busy("a"));
        assert_eq!(turns.end("a"), TurnEnded::NowIdle);
    }

    #[test]
    fn end_turn_ends_an_anonymous_turn_before_a_guard_turn() {
        let turns = Turns::default();
        let guard = turns.begin_guarded("a".into());
        assert!(
            !turns.begin("a".into()),
            "already busy with the guard's turn"
        );
        assert_eq!(turns.end("a"), TurnEnded::StillBusy);
        // The `begin_turn`/`end_turn` pair is closed; the guard's turn is still its own.
        assert_eq!(turns.end_guarded("a", guard), TurnEnded::NowIdle);
        assert!(!turns.is_busy("a"));
    }
}
