//! [`Steering`]: course corrections for a running delegation, consumed by its child or
//! returned in its completion — never lost, never both.

use std::sync::Arc;

use parking_lot::Mutex;
use process_registry::Text;

/// The default note a summary ends with when steering text was never read
/// ([`Steering::with_missed_note`]); `{text}` is the missed text.
pub const MISSED_STEER_NOTE: &str =
    "[steer did not land — the subagent finished before it could be delivered: {text}]";

/// A running delegation's steering inbox, shared by whoever steers it (the engine's
/// [`steer`](crate::DelegationEngine::steer)) and the child that reads it.
///
/// Give one to the engine with [`Controls::with_steering`](crate::Controls::with_steering)
/// and a clone to the child. The child calls [`take`](Self::take) at each point where it
/// can deliver text to its model (the `delegate_task` tool's children: appended to the
/// next tool result). When the runner returns, the engine [closes](Self::close) the
/// inbox and takes what is still pending in one step: that text goes into the completion
/// as `missed_steer`, and the summary ends with the [missed note](Self::with_missed_note).
/// A text queued is therefore either taken by the child or reported back, exactly once;
/// after the close every [`push`](Self::push) is refused.
///
/// ```
/// use async_delegation::Steering;
///
/// let steering = Steering::new();
/// assert!(steering.push("Only the last hour").is_ok());
/// assert_eq!(steering.take(), ["Only the last hour"]); // the child read it
/// assert!(steering.push("Skip the tests").is_ok());
/// assert_eq!(steering.close(), ["Skip the tests"]); // never read: reported back
/// assert!(steering.push("Too late").is_err());
/// assert!(steering.take().is_empty());
/// ```
#[derive(Clone)]
pub struct Steering(Arc<Shared>);

struct Shared {
    inbox: Mutex<Inbox>,
    missed_note: Text,
}

#[derive(Default)]
struct Inbox {
    closed: bool,
    pending: Vec<Text>,
}

impl Default for Steering {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inbox = self.0.inbox.lock();
        f.debug_struct("Steering")
            .field("closed", &inbox.closed)
            .field("pending", &inbox.pending.len())
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// An open, empty inbox with the default [missed note](MISSED_STEER_NOTE).
    pub fn new() -> Self {
        Self::with_missed_note(MISSED_STEER_NOTE)
    }

    /// An open, empty inbox whose missed note is `note` (`{text}` stands for the missed
    /// text; filled in one pass, so text substituted in is not scanned again).
    pub fn with_missed_note(note: impl Into<Text>) -> Self {
        Steering(Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            missed_note: note.into(),
        }))
    }

    /// Queues `text` for the child. Refused (the text handed back) once the inbox is
    /// closed: the runner has returned or is returning.
    ///
    /// # Errors
    /// The text, when the inbox is closed.
    pub fn push(&self, text: impl Into<Text>) -> Result<(), Text> {
        let text = text.into();
        let mut inbox = self.0.inbox.lock();
        if inbox.closed {
            return Err(text);
        }
        inbox.pending.push(text);
        Ok(())
    }

    /// The child's side: every text queued since its last take, oldest first. What this
    /// returns is the child's to deliver; it is no longer pending.
    pub fn take(&self) -> Vec<Text> {
        std::mem::take(&mut self.0.inbox.lock().pending)
    }

    /// `true` until the inbox is closed.
    pub fn is_open(&self) -> bool {
        !self.0.inbox.lock().closed
    }

    /// Closes the inbox and returns what was queued and never taken, in one step: a
    /// [`push`](Self::push) either lands before (and is returned here) or is refused.
    /// The engine calls this when the runner returns; a later call returns nothing.
    pub fn close(&self) -> Vec<Text> {
        let mut inbox = self.0.inbox.lock();
        inbox.closed = true;
        std::mem::take(&mut inbox.pending)
    }

    /// Closes the inbox and returns a copy of what is pending, leaving it there: the
    /// completion that reports it takes it away with [`forget_pending`](Self::forget_pending)
    /// once it is recorded, so a completion whose write fails leaves it to the next.
    pub(crate) fn close_keeping(&self) -> Vec<Text> {
        let mut inbox = self.0.inbox.lock();
        inbox.closed = true;
        inbox.pending.clone()
    }

    /// Drops what is pending (a recorded completion reported it).
    pub(crate) fn forget_pending(&self) {
        self.0.inbox.lock().pending.clear();
    }

    /// The summary with the missed note appended (after a blank line), or the note
    /// alone when there is no summary; `missed` is the text it names.
    pub(crate) fn note_missed(&self, summary: Option<&str>, missed: &str) -> Text {
        let note = self.0.missed_note.replacen("{text}", missed, 1);
        match summary {
            Some(summary) if !summary.is_empty() => Text::from(format!("{summary}\n\n{note}")),
            _ => Text::from(note),
        }
    }
}

/// What the engine can do to a running delegation besides waiting for it: interrupt it
/// (its hook) and steer it (its [`Steering`]). Both optional; the default has neither.
///
/// ```
/// use std::sync::Arc;
/// use async_delegation::{Controls, Steering};
///
/// let controls = Controls::default()
///     .with_interrupt(Arc::new(|reason: &str| println!("stop: {reason}")))
///     .with_steering(Steering::new());
/// assert!(controls.steering.is_some());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Controls {
    /// Called by the engine's interrupts while the delegation runs.
    pub interrupt: Option<crate::InterruptHook>,
    /// Where [`DelegationEngine::steer`](crate::DelegationEngine::steer) queues text.
    pub steering: Option<Steering>,
    /// The child's progress reports: with one, the engine's stall monitor watches the
    /// delegation ([`StallPolicy`](crate::StallPolicy)).
    pub progress: Option<crate::Progress>,
    /// How long the delegation may run, from its dispatch: past it, it is interrupted
    /// and then finalized as `timeout`, as a stall is ([`StallPolicy`](crate::StallPolicy)).
    pub deadline: Option<std::time::Duration>,
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls")
            .field("interrupt", &self.interrupt.is_some())
            .field("steering", &self.steering)
            .field("progress", &self.progress)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Controls {
    /// These controls with `hook` as the interrupt hook.
    pub fn with_interrupt(mut self, hook: crate::InterruptHook) -> Self {
        self.interrupt = Some(hook);
        self
    }

    /// These controls with `steering` as the steering inbox.
    pub fn with_steering(mut self, steering: Steering) -> Self {
        self.steering = Some(steering);
        self
    }

    /// These controls with `progress` as the child's progress reports (the delegation
    /// is then watched for stalls).
    pub fn with_progress(mut self, progress: crate::Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// These controls with a deadline, `deadline` after the dispatch.
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

impl From<Option<crate::InterruptHook>> for Controls {
    fn from(interrupt: Option<crate::InterruptHook>) -> Self {
        Controls {
            interrupt,
            ..Controls::default()
        }
    }
}

/// How [`DelegationEngine::steer`](crate::DelegationEngine::steer) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerOutcome {
    /// Queued: the child reads it, or it comes back in the completion as
    /// `missed_steer`.
    Queued,
    /// The delegation runs but takes no more steering: it has none, or its runner is
    /// returning.
    Closed,
    /// No running delegation has this id.
    NotRunning,
}
