//! The tool's schema: the free functions give the established JSON, byte for byte, and
//! every text in it is a [`ToolTexts`] field a context can replace, with the context's
//! settings filled in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

/// `tool_schema()` as it has always been: the whole definition, every text in it.
const ESTABLISHED_SCHEMA: &str = r#"{
  "description": "Delegate work to subagents that run with their own context and tools. Give either 'goal' (one task) or 'tasks' (a batch that runs in parallel). Subagents know nothing of this conversation: put everything they need in 'goal' and 'context'. By default the call waits and returns every subagent's result. With background=true (single task only) it returns a handle at once and the subagent keeps working while you and the user continue; its full task and result re-enter the conversation as a new message when it finishes, so do not wait or poll for it.",
  "name": "delegate_task",
  "parameters": {
    "properties": {
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
      "role": {
        "description": "'leaf' (default) does the work itself; 'orchestrator' may delegate further within the configured depth limit.",
        "enum": [
          "leaf",
          "orchestrator"
        ],
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
