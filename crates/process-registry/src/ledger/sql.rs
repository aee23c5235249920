//! What the SQL backends (`sqlite`, `postgres`) share: the columns a claim and an
//! inspection read, how a row's run state reads back, the inspection filter, and the
//! event's JSON. Each writes its own placeholders (`?1` or `$1`).

use std::fmt::Write as _;

use super::backend::{CandidateQuery, Capabilities, ClaimToken, RowQuery, RunState, SessionMatch};
use crate::{Event, LedgerError, Status};

/// What both SQL stores can do: rows survive the process, delivered ones are kept for the
/// retention, and other processes write to the same store; a call waits on the file's
/// lock or the server.
pub(crate) const CAPABILITIES: Capabilities = Capabilities {
    durable: true,
    retains_delivered: true,
    shared_between_processes: true,
    may_block: true,
};

/// Every row, restored ones too: the query of a claim by `seq` alone (its conditions come
/// down to `seq > 0`, which every row is).
pub(crate) const EVERY_ROW: CandidateQuery<'static> = CandidateQuery {
    kinds: &[],
    except_kinds: &[],
    sessions: SessionMatch::Any,
    restored: true,
    after_seq: 0,
};

/// What a claim returns: `seq, delegation_id, event, attempts, possible_redelivery,
/// restored`.
pub(crate) const CLAIMED_COLUMNS: &str =
    "seq, delegation_id, event, attempts, possible_redelivery, restored";

/// What an inspection returns, in the order the backends read it (the event last, at
/// index 19).
pub(crate) const ROW_COLUMNS: &str = "seq, COALESCE(key, 'event-' || seq), delegation_id, kind, session_key, \
     run_state, status, delivery, attempts, reason, owner, claimed_by, restored, possible_redelivery, \
     created_at, completed_at, delivered_at, not_before, lease_until, event";

/// The run state of a row's `run_state` and `status` columns.
pub(crate) fn run_state(run_state: Option<&str>, status: Option<String>) -> Option<RunState> {
    match run_state {
        None => None,
        Some("running") => Some(RunState::Running),
        Some("unknown") => Some(RunState::Unknown),
        Some(_) => Some(RunState::Finished(Status::from(status.unwrap_or_default()))),
    }
}

/// What follows `WHERE {always}` in an inspection of `query` — its conditions, the order
/// and the limit — and the values of its parameters; `placeholder(n)` writes the `n`-th
/// (from 1).
pub(crate) fn row_filter(
    query: &RowQuery,
    placeholder: fn(usize) -> String,
) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut values: Vec<String> = Vec::new();
    let mut equals = |sql: &mut String, column: &str, value: String| {
        values.push(value);
        let _ = write!(sql, " AND {column} = {}", placeholder(values.len()));
    };
    if query.running_only {
        sql.push_str(" AND run_state = 'running'");
    }
    if let Some(delivery) = query.delivery {
        equals(&mut sql, "delivery", delivery.as_str().to_owned());
    }
    if let Some(owner) = &query.owner {
        equals(&mut sql, "owner", owner.clone());
    }
    if let Some(session_key) = &query.session_key {
        equals(&mut sql, "session_key", session_key.clone());
    }
    if let Some(delegation_id) = &query.delegation_id {
        equals(&mut sql, "delegation_id", delegation_id.clone());
    }
    sql.push_str(" ORDER BY seq");
    if query.limit > 0 {
        let _ = write!(sql, " LIMIT {}", query.limit.min(i64::MAX as usize));
    }
    (sql, values)
}

/// The event as the ledger stores it.
pub(crate) fn to_json(event: &Event) -> Result<String, LedgerError> {
    serde_json::to_string(event).map_err(|error| LedgerError::Unwritable {
        reason: format!("the event does not serialize: {error}"),
    })
}

/// A claim number as the stores keep it (the bits of the `u64`, in a signed column).
pub(crate) fn token_id(token: ClaimToken<'_>) -> i64 {
    token.id as i64
}

/// A `seq` as a parameter (the stores' integers are signed).
pub(crate) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A `seq` as read back.
pub(crate) fn row_seq(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}
