//! The tool's schema: the free functions give the established JSON, byte for byte, and
//! every text in it is a [`ToolTexts`] field a context can replace, with the context's
//! settings filled in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{context, FakeBackend};
use delegate_tool::{DelegationConfig, ToolTexts};
use serde_json::{json, Value};

/// `tool_schema()` whole: the definition, every text in it (the control arguments
/// `action`, `subagent_id` and `message` joined the established ones).
const ESTABLISHED_SCHEMA: &str = r#"{
  "description": "Delegate work to subagents that run with their own context and tools. Give either 'goal' (one task) or 'tasks' (a batch that runs in parallel). Subagents know nothing of this conversation: put everything they need in 'goal' and 'context'. By default the call waits and returns every subagent's result. With background=true (single task only) it returns a handle at once and the subagent keeps working while you and the user continue; its full task and result re-enter the conversation as a new message when it finishes, so do not wait or poll for it.",
  "name": "delegate_task",
  "parameters": {
    "properties": {
      "action": {
        "description": "'spawn' (default) delegates work as described by the other arguments. 'list' shows the background subagents of this conversation that are still running. 'steer' sends a running background subagent a course correction ('subagent_id' and 'message'). 'stop' interrupts one ('subagent_id'); its partial result still arrives as a completion message.",
        "enum": [
          "spawn",
          "list",
          "steer",
          "stop"
        ],
        "type": "string"
      },
      "background": {
        "description": "false (default): wait for the subagents and get their results in this call. true: dispatch ONE subagent in the background and get a handle (delegation_id) immediately; keep working with the user, and the subagent's full task and result will arrive later as a new message. Do not wait or poll for it. Background calls take a single task ('goal', or 'tasks' with one entry); dispatch one call per background subagent.",
        "type": "boolean"
      },
      "context": {
        "description": "Background information for the single subagent: relevant files, what was tried, constraints.",
        "type": "string"
      },
      "goal": {
        "description": "The task for a single subagent. Be specific and self-contained: the subagent does not see this conversation.",
        "type": "string"
      },
      "max_iterations": {
        "description": "Accepted for compatibility and ignored: the iteration cap comes from the configuration.",
        "type": "integer"
      },
      "message": {
        "description": "For 'steer': the course correction, appended to the subagent's next tool result.",
        "type": "string"
      },
      "role": {
        "description": "'leaf' (default) does the work itself; 'orchestrator' may delegate further within the configured depth limit.",
        "enum": [
          "leaf",
          "orchestrator"
        ],
        "type": "string"
      },
      "subagent_id": {
        "description": "For 'steer' and 'stop': the delegation_id from the spawn dispatch response or from action='list'.",
        "type": "string"
      },
      "tasks": {
        "description": "A batch of independent tasks run in parallel, each with its own goal. Use instead of 'goal'. At most max_concurrent_children tasks (3 by default); not allowed with background=true.",
        "items": {
          "properties": {
            "context": {
              "description": "Background the subagent needs (files, findings, constraints).",
              "type": "string"
            },
            "goal": {
              "description": "What this subagent must achieve, self-contained.",
              "type": "string"
            },
            "role": {
              "description": "Overrides the call's role for this task.",
              "enum": [
                "leaf",
                "orchestrator"
              ],
              "type": "string"
            },
            "toolsets": {
              "description": "Toolsets this subagent may use.",
              "items": {
                "type": "string"
              },
              "type": "array"
            }
          },
          "required": [
            "goal"
          ],
          "type": "object"
        },
        "type": "array"
      },
      "toolsets": {
        "description": "Toolsets the single subagent may use (e.g. [\"web\", \"terminal\", \"file\"]). Omit for the default set.",
        "items": {
          "type": "string"
        },
        "type": "array"
      }
    },
    "type": "object"
  }
}"#;

fn established() -> Value {
    serde_json::from_str(ESTABLISHED_SCHEMA).unwrap()
}

#[test]
fn the_free_functions_give_the_established_schema_whole() {
    let schema = established();
    assert_eq!(delegate_tool::tool_schema(), schema);
    assert_eq!(
        delegate_tool::openai_tool(),
        json!({"type": "function", "function": schema.clone()})
    );
    assert_eq!(
        delegate_tool::anthropic_tool(),
        json!({
            "name": schema["name"],
            "description": schema["description"],
            "input_schema": schema["parameters"],
        })
    );
}

/// Every `description` in the schema — the model reads them on every request — is a
/// default of a `ToolTexts` field.
#[test]
fn every_schema_description_is_a_tool_text() {
    fn descriptions(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    if key == "description" {
                        out.push(value.as_str().unwrap_or_default().to_owned());
                    }
                    descriptions(value, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| descriptions(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    descriptions(&delegate_tool::tool_schema(), &mut found);
    let texts = format!("{:?}", delegate_tool::ToolTexts::default());
    let missing: Vec<&String> = found
        .iter()
        // A field prints as its whole text in `Debug` quotes (`escape_debug` would also
        // escape the apostrophes `Debug` leaves alone).
        .filter(|d| !texts.contains(&format!("{d:?}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} model-facing schema texts are not in ToolTexts: {missing:#?}",
        missing.len()
    );
}

/// Every schema text replaced by a marker naming its field, with the settings
/// placeholders (and one unknown, which stays as written).
fn marked() -> ToolTexts {
    let mut t = ToolTexts::default();
    t.tool_description = "<tool {max_spawn_depth}>".into();
    t.goal_description = "<goal {max_concurrent_children}>".into();
    t.context_description = "<context {max_async_children}>".into();
    t.toolsets_description = "<toolsets {max_iterations}>".into();
    t.tasks_description = "<tasks at most {max_concurrent_children}>".into();
    t.role_description = "<role {max_spawn_depth}>".into();
    t.background_description = "<background {max_async_children}>".into();
    t.max_iterations_description = "<max_iterations {max_iterations} {unknown}>".into();
    t.task_goal_description = "<task_goal>".into();
    t.task_context_description = "<task_context>".into();
    t.task_toolsets_description = "<task_toolsets>".into();
    t.task_role_description = "<task_role>".into();
    t.action_description = "<action {max_async_children}>".into();
    t.subagent_id_description = "<subagent_id>".into();
    t.message_description = "<message>".into();
    t
}

/// A context's schema is rendered from its texts and settings: the established schema
/// with exactly its descriptions changed, in every shape.
#[test]
fn a_context_renders_the_schema_from_its_texts_and_settings() {
    let config = DelegationConfig {
        max_spawn_depth: 2,
        max_concurrent_children: 5,
        max_async_children: 7,
        max_iterations: 11,
    };
    let (ctx, _queue) = context(FakeBackend::instant(), config);
    let ctx = ctx.with_texts(marked());

    let mut expected = established();
    expected["description"] = json!("<tool 2>");
    let props = &mut expected["parameters"]["properties"];
    props["goal"]["description"] = json!("<goal 5>");
    props["context"]["description"] = json!("<context 7>");
    props["toolsets"]["description"] = json!("<toolsets 11>");
    props["tasks"]["description"] = json!("<tasks at most 5>");
    props["role"]["description"] = json!("<role 2>");
    props["background"]["description"] = json!("<background 7>");
    props["max_iterations"]["description"] = json!("<max_iterations 11 {unknown}>");
    props["action"]["description"] = json!("<action 7>");
    props["subagent_id"]["description"] = json!("<subagent_id>");
    props["message"]["description"] = json!("<message>");
    let task = &mut props["tasks"]["items"]["properties"];
    task["goal"]["description"] = json!("<task_goal>");
    task["context"]["description"] = json!("<task_context>");
    task["toolsets"]["description"] = json!("<task_toolsets>");
    task["role"]["description"] = json!("<task_role>");

    assert_eq!(ctx.tool_schema(), expected);
    assert_eq!(
        delegate_tool::tool_schema_with(&ctx.texts, &ctx.config),
        expected
    );
    assert_eq!(
        ctx.openai_tool(),
        json!({"type": "function", "function": expected.clone()})
    );
    assert_eq!(
        ctx.anthropic_tool(),
        json!({
            "name": "delegate_task",
            "description": "<tool 2>",
            "input_schema": expected["parameters"],
        })
    );

    // The default texts under other settings: the established schema, unchanged (the
    // `tasks` default names the setting, not a value — see `ToolTexts::tasks_description`).
    let (ctx, _queue) = context(FakeBackend::instant(), config);
    assert_eq!(ctx.tool_schema(), established());
    assert_eq!(ctx.openai_tool(), delegate_tool::openai_tool());
    assert_eq!(ctx.anthropic_tool(), delegate_tool::anthropic_tool());
}
