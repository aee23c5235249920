//! The tool's JSON Schema for function-calling APIs.

use serde_json::{json, Value};

/// The tool's name.
pub const TOOL_NAME: &str = "delegate_task";

/// The tool's description, as the model reads it.
pub const TOOL_DESCRIPTION: &str = "Delegate work to subagents that run with their own context and tools. \
Give either 'goal' (one task) or 'tasks' (a batch that runs in parallel). Subagents know nothing of this \
conversation: put everything they need in 'goal' and 'context'. By default the call waits and returns every \
subagent's result. With background=true (single task only) it returns a handle at once and the subagent keeps \
working while you and the user continue; its full task and result re-enter the conversation as a new message \
when it finishes, so do not wait or poll for it.";

/// The tool definition: `{"name": "delegate_task", "description": …, "parameters": {…}}`,
/// where `parameters` is a JSON Schema object describing every argument
/// `delegate_task` reads.
///
/// ```
/// let schema = delegate_tool::tool_schema();
/// assert_eq!(schema["name"], "delegate_task");
/// assert_eq!(schema["parameters"]["properties"]["background"]["type"], "boolean");
/// ```
pub fn tool_schema() -> Value {
    let task = json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string", "description": "What this subagent must achieve, self-contained."},
            "context": {"type": "string", "description": "Background the subagent needs (files, findings, constraints)."},
            "toolsets": {"type": "array", "items": {"type": "string"}, "description": "Toolsets this subagent may use."},
            "role": {"type": "string", "enum": ["leaf", "orchestrator"], "description": "Overrides the call's role for this task."}
        },
        "required": ["goal"]
    });
    json!({
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "parameters": {
            "type": "object",
            "properties": {
                "goal": {
                    "type": "string",
                    "description": "The task for a single subagent. Be specific and self-contained: the subagent does not see this conversation."
                },
                "context": {
                    "type": "string",
                    "description": "Background information for the single subagent: relevant files, what was tried, constraints."
                },
                "toolsets": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Toolsets the single subagent may use (e.g. [\"web\", \"terminal\", \"file\"]). Omit for the default set."
                },
                "tasks": {
                    "type": "array",
                    "items": task,
                    "description": "A batch of independent tasks run in parallel, each with its own goal. Use instead of 'goal'. At most max_concurrent_children tasks (3 by default); not allowed with background=true."
                },
                "role": {
                    "type": "string",
                    "enum": ["leaf", "orchestrator"],
                    "description": "'leaf' (default) does the work itself; 'orchestrator' may delegate further within the configured depth limit."
                },
                "background": {
                    "type": "boolean",
                    "description": "false (default): wait for the subagents and get their results in this call. true: dispatch ONE subagent in the background and get a handle (delegation_id) immediately; keep working with the user, and the subagent's full task and result will arrive later as a new message. Do not wait or poll for it. Background calls take a single task ('goal', or 'tasks' with one entry); dispatch one call per background subagent."
                },
                "max_iterations": {
                    "type": "integer",
                    "description": "Accepted for compatibility and ignored: the iteration cap comes from the configuration."
                }
            }
        }
    })
}

/// The tool as an OpenAI-style chat-completions API takes it (OpenAI and the many
/// compatible servers): `{"type": "function", "function": {"name", "description",
/// "parameters"}}`, the same schema as [`tool_schema`].
///
/// ```
/// let tool = delegate_tool::openai_tool();
/// assert_eq!(tool["type"], "function");
/// assert_eq!(tool["function"], delegate_tool::tool_schema());
/// ```
pub fn openai_tool() -> Value {
    json!({"type": "function", "function": tool_schema()})
}

/// The tool as an Anthropic-style messages API takes it: `{"name", "description",
/// "input_schema"}`, where `input_schema` is [`tool_schema`]'s `parameters`.
///
/// ```
/// let tool = delegate_tool::anthropic_tool();
/// assert_eq!(tool["name"], "delegate_task");
/// assert_eq!(tool["input_schema"], delegate_tool::tool_schema()["parameters"]);
/// ```
pub fn anthropic_tool() -> Value {
    let Value::Object(mut schema) = tool_schema() else {
        // `tool_schema` always builds an object.
        return Value::Null;
    };
    let parameters = schema.remove("parameters").unwrap_or(Value::Null);
    json!({
        "name": schema.remove("name").unwrap_or(Value::Null),
        "description": schema.remove("description").unwrap_or(Value::Null),
        "input_schema": parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_the_tool_and_every_argument() {
        let schema = tool_schema();
        assert_eq!(schema["name"], TOOL_NAME);
        assert_eq!(schema["description"], TOOL_DESCRIPTION);
        assert_eq!(schema["parameters"]["type"], "object");
        let props = schema["parameters"]["properties"].as_object().unwrap();
        let mut names: Vec<_> = props.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "background",
                "context",
                "goal",
                "max_iterations",
                "role",
                "tasks",
                "toolsets"
            ]
        );
        assert_eq!(props["tasks"]["items"]["required"][0], "goal");
        let background = props["background"]["description"].as_str().unwrap();
        assert!(background.contains("immediately") && background.contains("ONE subagent"));
        assert!(TOOL_DESCRIPTION.contains("background=true"));
    }

    #[test]
    fn api_shapes_wrap_the_same_schema() {
        let schema = tool_schema();
        assert_eq!(
            openai_tool(),
            json!({"type": "function", "function": schema.clone()})
        );
        assert_eq!(
            anthropic_tool(),
            json!({"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": schema["parameters"]})
        );
    }
}
