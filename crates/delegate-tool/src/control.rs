//! The control actions of `delegate_task` — `list`, `steer`, `stop` — answered at once,
//! for the background delegations of the caller's own session.

use async_delegation::{DelegationEngine, DelegationRecord, SteerOutcome};
use process_registry::{Event, RowQuery, Status};
use serde_json::{Map, Value};

use crate::{ToolError, ToolTexts};

/// What a call asks for (its `action` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Delegate work (the default).
    Spawn,
    /// The caller's running background delegations.
    List,
    /// A course correction for one of them.
    Steer,
    /// Interrupt one of them.
    Stop,
}

impl Action {
    /// Reads `action`: absent, `null` or blank is `spawn`; the names are matched
    /// ignoring case and surrounding space.
    pub(crate) fn read(value: Option<&Value>) -> Result<Action, ToolError> {
        let given = match value {
            None | Some(Value::Null) => return Ok(Action::Spawn),
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(ToolError::UnknownAction {
                    action: other.to_string(),
                })
            }
        };
        let name = given.trim();
        let known = [
            ("", Action::Spawn),
            ("spawn", Action::Spawn),
            ("list", Action::List),
            ("steer", Action::Steer),
            ("stop", Action::Stop),
        ];
        known
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, action)| *action)
            .ok_or_else(|| ToolError::UnknownAction {
                action: given.clone(),
            })
    }

    fn name(self) -> &'static str {
        match self {
            Action::Spawn => "spawn",
            Action::List => "list",
            Action::Steer => "steer",
            Action::Stop => "stop",
        }
    }
}

/// Answers a control action (not [`Action::Spawn`]) for the caller serving
/// `session_key`: the tool result, or why it was refused.
pub(crate) fn answer(
    action: Action,
    arguments: &Map<String, Value>,
    session_key: &str,
    engine: &DelegationEngine,
    texts: &ToolTexts,
) -> Result<String, ToolError> {
    let live = || live(engine, session_key).into_iter();
    if action == Action::List {
        return Ok(list_result(live(), texts));
    }
    let subagent_id = non_blank(arguments.get("subagent_id"))
        .ok_or(ToolError::ControlRequiresId {
            action: action.name(),
        })?
        .to_owned();
    let message = match action {
        Action::Steer => {
            Some(non_blank(arguments.get("message")).ok_or(ToolError::SteerRequiresMessage)?)
        }
        _ => None,
    };
    // Knowing an id is not authority: only this session's running delegations answer.
    if !live().any(|record| *record.delegation_id == *subagent_id) {
        return Err(ToolError::NoLiveSubagent { subagent_id });
    }
    // A delegation another process runs (listed from the shared ledger) cannot be
    // reached from here: it reads as one that just finished, or takes no steering.
    match message {
        None => {
            if !engine.interrupt(&subagent_id, &texts.async_cancel_reason) {
                return Err(ToolError::StopTooLate { subagent_id });
            }
            Ok(ordered_object(&[
                ("action", Value::from("stop")),
                ("subagent_id", Value::from(subagent_id)),
                ("status", Value::from("interrupt_requested")),
                ("note", Value::from(&*texts.stop_note)),
            ]))
        }
        Some(message) => match engine.steer(&subagent_id, message) {
            SteerOutcome::Queued => Ok(ordered_object(&[
                ("action", Value::from("steer")),
                ("subagent_id", Value::from(subagent_id)),
                ("status", Value::from("queued")),
                ("note", Value::from(&*texts.steer_note)),
            ])),
            SteerOutcome::Closed | SteerOutcome::NotRunning => {
                Err(ToolError::SteerClosed { subagent_id })
            }
        },
    }
}

/// The running delegations of `session_key`: this engine's, then those the completion
/// ledger records as running for the session in other processes (a shared ledger), in
/// the order they were dispatched. A ledger that cannot be read leaves the engine's own
/// (logged).
fn live(engine: &DelegationEngine, session_key: &str) -> Vec<DelegationRecord> {
    let mut live: Vec<DelegationRecord> = engine
        .list()
        .into_iter()
        .filter(|record| record.is_running() && *record.session_key == *session_key)
        .collect();
    let queue = engine.completion_queue();
    let query = RowQuery {
        running_only: true,
        session_key: Some(session_key.to_owned()),
        ..RowQuery::default()
    };
    let rows = match queue.rows(&query) {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "the ledger's running rows could not be read; listing this process's delegations only");
            return live;
        }
    };
    for row in rows {
        let Some(id) = row.delegation_id.as_deref() else {
            continue;
        };
        if row.owner == queue.instance() || live.iter().any(|known| *known.delegation_id == *id) {
            continue;
        }
        if let Event::AsyncDelegation(spec) = &*row.event {
            live.push(DelegationRecord {
                delegation_id: id.into(),
                goal: spec.goal.clone(),
                context: spec.context.clone(),
                toolsets: spec.toolsets.clone(),
                role: spec.role.clone(),
                model: spec.model.clone(),
                session_key: spec.session_key.clone(),
                status: Status::Running,
                dispatched_at: row.created_at,
                completed_at: None,
                accepting_steer: false,
                seconds_since_progress: None,
                in_tool: None,
            });
        }
    }
    live
}

/// `{"action":"list","count":N,"subagents":[…]}`, with the empty `note` when there are
/// none.
fn list_result(live: impl Iterator<Item = DelegationRecord>, texts: &ToolTexts) -> String {
    let now = unix_now();
    let entries: Vec<String> = live
        .map(|record| {
            let running = (now - record.dispatched_at).max(0.0);
            let model = record.model.as_deref().map_or(Value::Null, Value::from);
            let mut fields = vec![
                ("subagent_id", Value::from(&*record.delegation_id)),
                ("goal", Value::from(&*record.goal)),
                ("model", model),
                ("status", Value::from(record.status.as_str())),
                ("running_seconds", seconds(running)),
                ("accepting_steer", Value::from(record.accepting_steer)),
            ];
            // A child that reports progress: how long it has been quiet, and where.
            if let (Some(quiet), Some(in_tool)) = (record.seconds_since_progress, record.in_tool) {
                fields.push(("seconds_since_progress", seconds(quiet)));
                fields.push(("in_tool", Value::from(in_tool)));
            }
            ordered_object(&fields)
        })
        .collect();
    let mut out = format!(
        "{{\"action\":\"list\",\"count\":{},\"subagents\":[{}]",
        entries.len(),
        entries.join(",")
    );
    if entries.is_empty() {
        out.push_str(",\"note\":");
        out.push_str(&Value::from(&*texts.list_empty_note).to_string());
    }
    out.push('}');
    out
}

/// A JSON object with its keys in the order given (serde_json's map would sort them).
pub(crate) fn ordered_object(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// Seconds rounded as every duration of a completion is
/// ([`round_seconds`](async_delegation::round_seconds)), as a JSON number.
fn seconds(value: f64) -> Value {
    Value::from(async_delegation::round_seconds(value))
}

/// A string argument that is not blank.
fn non_blank(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
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
    fn actions_are_read_loosely_and_refused_verbatim() {
        let read = |value: Value| Action::read(Some(&value));
        assert_eq!(Action::read(None), Ok(Action::Spawn));
        assert_eq!(read(Value::Null), Ok(Action::Spawn));
        assert_eq!(read(" ".into()), Ok(Action::Spawn));
        assert_eq!(read(" LIST ".into()), Ok(Action::List));
        assert_eq!(read("Steer".into()), Ok(Action::Steer));
        assert_eq!(read("stop".into()), Ok(Action::Stop));
        assert_eq!(
            read("kill".into()),
            Err(ToolError::UnknownAction {
                action: "kill".into()
            })
        );
        assert_eq!(
            read(serde_json::json!(["stop"])),
            Err(ToolError::UnknownAction {
                action: r#"["stop"]"#.into()
            })
        );
    }

    #[test]
    fn an_ordered_object_keeps_its_keys_in_order() {
        assert_eq!(
            ordered_object(&[("z", Value::from(1)), ("a", Value::from("\"q\""))]),
            r#"{"z":1,"a":"\"q\""}"#
        );
    }
}
