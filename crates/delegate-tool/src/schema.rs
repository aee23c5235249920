//! The tool's JSON Schema for function-calling APIs.

use serde_json::{json, Value};

use crate::texts::fill;
use crate::{DelegationConfig, ToolTexts};

/// The tool's name.
pub const TOOL_NAME: &str = "delegate_task";

/// The tool's default description, as the model reads it
/// ([`ToolTexts::tool_description`]).
pub const TOOL_DESCRIPTION: &str = "Delegate work to subagents that run with their own context and tools. \
Give either 'goal' (one task) or 'tasks' (a batch that runs in parallel). Subagents know nothing of this \
conversation: put everything they need in 'goal' and 'context'. By default the call waits and returns every \
subagent's result. With background=true (single task only) it returns a handle at once and the subagent keeps \
working while you and the user continue; its full task and result re-enter the conversation as a new message \
when it finishes, so do not wait or poll for it.";

/// The tool definition with the default texts and settings:
/// `{"name": "delegate_task", "description": …, "parameters": {…}}`, where `parameters`
/// is a JSON Schema object describing every argument `delegate_task` reads. Hand a
/// function-calling API [`DelegateContext::tool_schema`](crate::DelegateContext::tool_schema)
/// instead when the context's texts or settings are not the defaults.
///
/// ```
/// let schema = delegate_tool::tool_schema();
/// assert_eq!(schema["name"], "delegate_task");
/// assert_eq!(schema["parameters"]["properties"]["background"]["type"], "boolean");
/// ```
pub fn tool_schema() -> Value {
    tool_schema_with(&ToolTexts::default(), &DelegationConfig::default())
}

/// The tool definition, as [`tool_schema`], with the schema texts of `texts` (its
/// `*_description` fields) and their settings placeholders (`{max_spawn_depth}`,
/// `{max_concurrent_children}`, `{max_async_children}`, `{max_iterations}`) filled from
/// `config`. [`DelegateContext::tool_schema`](crate::DelegateContext::tool_schema) is
/// this with the context's texts and settings.
///
/// ```
/// use delegate_tool::{tool_schema_with, DelegationConfig, ToolTexts};
///
/// let mut texts = ToolTexts::default();
/// texts.role_description = "'orchestrator' may delegate {max_spawn_depth} levels deep.".into();
/// let config = DelegationConfig { max_spawn_depth: 2, ..DelegationConfig::default() };
/// let schema = tool_schema_with(&texts, &config);
/// assert_eq!(
///     schema["parameters"]["properties"]["role"]["description"],
///     "'orchestrator' may delegate 2 levels deep."
/// );
/// ```
pub fn tool_schema_with(texts: &ToolTexts, config: &DelegationConfig) -> Value {
    let max_spawn_depth = config.max_spawn_depth.to_string();
    let max_concurrent_children = config.max_concurrent_children.to_string();
    let max_async_children = config.max_async_children.to_string();
    let max_iterations = config.max_iterations.to_string();
    let settings = [
        ("max_spawn_depth", max_spawn_depth.as_str()),
        ("max_concurrent_children", max_concurrent_children.as_str()),
        ("max_async_children", max_async_children.as_str()),
        ("max_iterations", max_iterations.as_str()),
    ];
    let text = |template: &str| fill(template, &settings);
    let task = json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string", "description": text(&texts.task_goal_description)},
            "context": {"type": "string", "description": text(&texts.task_context_description)},
            "toolsets": {"type": "array", "items": {"type": "string"}, "description": text(&texts.task_toolsets_description)},
            "role": {"type": "string", "enum": ["leaf", "orchestrator"], "description": text(&texts.task_role_description)}
        },
        "required": ["goal"]
    });
    json!({
        "name": TOOL_NAME,
        "description": text(&texts.tool_description),
        "parameters": {
            "type": "object",
            "properties": {
                "goal": {"type": "string", "description": text(&texts.goal_description)},
                "context": {"type": "string", "description": text(&texts.context_description)},
                "toolsets": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": text(&texts.toolsets_description)
                },
                "tasks": {"type": "array", "items": task, "description": text(&texts.tasks_description)},
                "role": {
                    "type": "string",
                    "enum": ["leaf", "orchestrator"],
                    "description": text(&texts.role_description)
                },
                "background": {"type": "boolean", "description": text(&texts.background_description)},
                "max_iterations": {"type": "integer", "description": text(&texts.max_iterations_description)},
                "action": {
                    "type": "string",
                    "enum": ["spawn", "list", "steer", "stop"],
                    "description": text(&texts.action_description)
                },
                "subagent_id": {"type": "string", "description": text(&texts.subagent_id_description)},
                "message": {"type": "string", "description": text(&texts.message_description)}
            }
        }
    })
}

/// The tool as an OpenAI-style chat-completions API takes it (OpenAI and the many
/// compatible servers): `{"type": "function", "function": {"name", "description",
/// "parameters"}}`, the same schema as [`tool_schema`] (default texts and settings; see
/// [`DelegateContext::openai_tool`](crate::DelegateContext::openai_tool)).
///
/// ```
/// let tool = delegate_tool::openai_tool();
/// assert_eq!(tool["type"], "function");
/// assert_eq!(tool["function"], delegate_tool::tool_schema());
/// ```
pub fn openai_tool() -> Value {
    openai_shape(tool_schema())
}

/// The tool as an Anthropic-style messages API takes it: `{"name", "description",
/// "input_schema"}`, where `input_schema` is [`tool_schema`]'s `parameters` (default texts
/// and settings; see [`DelegateContext::anthropic_tool`](crate::DelegateContext::anthropic_tool)).
///
/// ```
/// let tool = delegate_tool::anthropic_tool();
/// assert_eq!(tool["name"], "delegate_task");
/// assert_eq!(tool["input_schema"], delegate_tool::tool_schema()["parameters"]);
/// ```
pub fn anthropic_tool() -> Value {
    anthropic_shape(tool_schema())
}

/// `schema` (a [`tool_schema_with`] value) in the OpenAI-style shape.
pub(crate) fn openai_shape(schema: Value) -> Value {
    json!({"type": "function", "function": schema})
}

/// `schema` (a [`tool_schema_with`] value) in the Anthropic-style shape.
pub(crate) fn anthropic_shape(schema: Value) -> Value {
    let Value::Object(mut schema) = schema else {
        // `tool_schema_with` always builds an object.
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
                "action",
                "background",
                "context",
                "goal",
                "max_iterations",
                "message",
                "role",
                "subagent_id",
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
