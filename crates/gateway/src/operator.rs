//! The operator's view of background work — for a chat command such as `/agents`: what
//! runs (with its age and progress), what waits to be delivered, and what was given up on
//! (with its reason), as a typed snapshot and as a short text.

use std::fmt::Write as _;

use async_delegation::DelegationEngine;
use process_registry::{CompletionQueue, DeliveryState, LedgerError, LedgerRow, RowQuery};

/// At most this many entries of each kind are written by [`AgentsView::render`] (the
/// snapshot keeps them all).
pub const RENDERED_PER_SECTION: usize = 10;

/// What runs, waits and died, at one moment ([`agents_view`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentsView {
    /// Running delegations of the engine, in dispatch order.
    pub running: Vec<RunningAgent>,
    /// Completions recorded and not yet delivered (waiting, or claimed by a consumer),
    /// oldest first.
    pub waiting: Vec<WaitingCompletion>,
    /// Completions given up on, oldest first: the dead letters.
    pub dead: Vec<WaitingCompletion>,
}

/// A running delegation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunningAgent {
    /// Its id.
    pub delegation_id: String,
    /// Its goal.
    pub goal: String,
    /// The session it was dispatched from (`""`: the CLI).
    pub session_key: String,
    /// Seconds since its dispatch.
    pub running_seconds: f64,
    /// Seconds since its child last reported progress, for a child that reports.
    pub seconds_since_progress: Option<f64>,
    /// Whether its child is inside a tool call, for a child that reports.
    pub in_tool: Option<bool>,
}

/// A completion in the ledger that has not been delivered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WaitingCompletion {
    /// Its idempotency key (the delegation id, for a delegation).
    pub key: String,
    /// The event's wire type.
    pub kind: String,
    /// Its session (`""`: the CLI).
    pub session_key: String,
    /// Seconds since it was recorded.
    pub age_seconds: f64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Why its last attempt failed, or why it was given up on.
    pub reason: Option<String>,
}

/// The view of `engine`'s running delegations and of `queue`'s undelivered and dead
/// completions, now.
///
/// # Errors
/// When the ledger cannot be read.
///
/// ```
/// use async_delegation::DelegationEngine;
/// use process_registry::CompletionQueue;
///
/// let queue = CompletionQueue::new();
/// let engine = DelegationEngine::new(queue.clone());
/// let view = gateway::agents_view(&engine, &queue)?;
/// assert_eq!(view.render(), "Background agents: none running, none waiting, none dead.");
/// # Ok::<(), process_registry::LedgerError>(())
/// ```
pub fn agents_view(
    engine: &DelegationEngine,
    queue: &CompletionQueue,
) -> Result<AgentsView, LedgerError> {
    let now = unix_now();
    let running = engine
        .list()
        .into_iter()
        .filter(async_delegation::DelegationRecord::is_running)
        .map(|record| RunningAgent {
            delegation_id: record.delegation_id.to_string(),
            goal: record.goal.to_string(),
            session_key: record.session_key.to_string(),
            running_seconds: (now - record.dispatched_at).max(0.0),
            seconds_since_progress: record.seconds_since_progress,
            in_tool: record.in_tool,
        })
        .collect();
    let rows = |delivery| {
        queue.rows(&RowQuery {
            delivery: Some(delivery),
            ..RowQuery::default()
        })
    };
    let waiting_rows = {
        let mut rows_ = rows(DeliveryState::Pending)?;
        rows_.extend(rows(DeliveryState::Claimed)?);
        rows_.sort_by_key(|row| row.seq);
        rows_
    };
    let entry = |row: LedgerRow| WaitingCompletion {
        age_seconds: (now - row.completed_at.unwrap_or(row.created_at)).max(0.0),
        key: row.key,
        kind: row.kind,
        session_key: row.session_key,
        attempts: row.attempts,
        reason: row.reason,
    };
    Ok(AgentsView {
        running,
        waiting: waiting_rows.into_iter().map(entry).collect(),
        dead: rows(DeliveryState::Dead)?.into_iter().map(entry).collect(),
    })
}

impl AgentsView {
    /// A short text for a chat: one line of counts, then up to
    /// [`RENDERED_PER_SECTION`] lines per kind.
    ///
    /// ```text
    /// Background agents: 1 running, 1 waiting, 1 dead.
    /// running  deleg_0a1b2c3d  4m 05s  "Summarise the logs" (quiet 40s, in a tool)
    /// waiting  deleg_9f8e7d6c  12s  for agent:main:telegram:dm:12345 (2 attempts: the chat API is down)
    /// dead     deleg_11223344  3h 02m  for agent:main:discord:dm:7 (8 attempts: no adapter for platform 'discord')
    /// ```
    pub fn render(&self) -> String {
        let count = |n: usize, word: &str| match n {
            0 => format!("none {word}"),
            n => format!("{n} {word}"),
        };
        let mut out = format!(
            "Background agents: {}, {}, {}.",
            count(self.running.len(), "running"),
            count(self.waiting.len(), "waiting"),
            count(self.dead.len(), "dead")
        );
        for agent in self.running.iter().take(RENDERED_PER_SECTION) {
            let goal: String = agent.goal.chars().take(60).collect();
            let _ = write!(
                out,
                "\nrunning  {}  {}  \"{goal}\"",
                agent.delegation_id,
                duration(agent.running_seconds)
            );
            if let Some(quiet) = agent.seconds_since_progress {
                let place = if agent.in_tool == Some(true) {
                    ", in a tool"
                } else {
                    ""
                };
                let _ = write!(out, " (quiet {}{place})", duration(quiet));
            }
        }
        more(&mut out, self.running.len());
        for (word, entries) in [("waiting", &self.waiting), ("dead   ", &self.dead)] {
            for entry in entries.iter().take(RENDERED_PER_SECTION) {
                let session = if entry.session_key.is_empty() {
                    "the CLI"
                } else {
                    entry.session_key.as_str()
                };
                let _ = write!(
                    out,
                    "\n{word}  {}  {}  for {session}",
                    entry.key,
                    duration(entry.age_seconds)
                );
                match (&entry.reason, entry.attempts) {
                    (Some(reason), attempts) => {
                        let _ =
                            write!(out, " ({} attempt{}: {reason})", attempts, plural(attempts));
                    }
                    (None, 0) => {}
                    (None, attempts) => {
                        let _ = write!(out, " ({attempts} attempt{})", plural(attempts));
                    }
                }
            }
            more(&mut out, entries.len());
        }
        out
    }
}

fn more(out: &mut String, total: usize) {
    if total > RENDERED_PER_SECTION {
        let _ = write!(out, "\n… and {} more", total - RENDERED_PER_SECTION);
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `45s`, `4m 05s`, `3h 02m`.
fn duration(seconds: f64) -> String {
    // Non-negative and finite by construction; whole seconds are enough for a person.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total = if seconds.is_finite() {
        seconds.max(0.0) as u64
    } else {
        0
    };
    match total {
        0..=59 => format!("{total}s"),
        60..=3599 => format!("{}m {:02}s", total / 60, total % 60),
        _ => format!("{}h {:02}m", total / 3600, (total % 3600) / 60),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(59.9), "59s");
        assert_eq!(duration(245.0), "4m 05s");
        assert_eq!(duration(10_920.0), "3h 02m");
        assert_eq!(duration(f64::NAN), "0s");
        assert_eq!(duration(-3.0), "0s");
    }

    #[test]
    fn a_view_renders_each_kind_with_its_details() {
        let view = AgentsView {
            running: vec![RunningAgent {
                delegation_id: "deleg_0a1b2c3d".into(),
                goal: "Summarise the logs".into(),
                session_key: "agent:main:telegram:dm:12345".into(),
                running_seconds: 245.0,
                seconds_since_progress: Some(40.0),
                in_tool: Some(true),
            }],
            waiting: vec![WaitingCompletion {
                key: "deleg_9f8e7d6c".into(),
                kind: "async_delegation".into(),
                session_key: "agent:main:telegram:dm:12345".into(),
                age_seconds: 12.0,
                attempts: 2,
                reason: Some("the chat API is down".into()),
            }],
            dead: vec![WaitingCompletion {
                key: "deleg_11223344".into(),
                kind: "async_delegation".into(),
                session_key: String::new(),
                age_seconds: 10_920.0,
                attempts: 1,
                reason: Some("no adapter".into()),
            }],
        };
        assert_eq!(
            view.render(),
            "Background agents: 1 running, 1 waiting, 1 dead.\n\
             running  deleg_0a1b2c3d  4m 05s  \"Summarise the logs\" (quiet 40s, in a tool)\n\
             waiting  deleg_9f8e7d6c  12s  for agent:main:telegram:dm:12345 (2 attempts: the chat API is down)\n\
             dead     deleg_11223344  3h 02m  for the CLI (1 attempt: no adapter)"
        );
    }
}
