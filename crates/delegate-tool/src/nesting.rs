//! The nesting limit of the arguments, checked without recursion.

use serde_json::Value;

/// How deeply `delegate_task` arguments may nest: 128 levels.
///
/// The arguments object is level 1, and whatever an array or object holds sits one level
/// below it; an array or object whose contents would sit below level 128 is refused, even
/// when it is empty. Put differently, at most 127 arrays and objects may nest in one
/// another (the arguments object counting as one). That is exactly what `serde_json`'s
/// parser accepts as text, so argument text and parsed arguments are refused alike, with
/// [`ToolError::ArgumentsTooDeep`](crate::ToolError::ArgumentsTooDeep).
///
/// The limit keeps every later step (reading a non-string `context` as JSON text,
/// dropping values parsed from a `tasks` string) within a small, fixed stack depth.
pub const MAX_ARGUMENT_NESTING: usize = 128;

/// `true` when some array or object in `value` puts its contents below level `max`
/// (`value` being level 1). Walks with an explicit stack, so any depth is safe.
pub(crate) fn nests_deeper_than(value: &Value, max: usize) -> bool {
    // Only containers are pushed, each with the level of its contents.
    fn push<'v>(containers: &mut Vec<(&'v Value, usize)>, value: &'v Value, level: usize) {
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            containers.push((value, level));
        }
    }
    let mut containers = Vec::new();
    push(&mut containers, value, 2);
    while let Some((container, contents_level)) = containers.pop() {
        if contents_level > max {
            return true;
        }
        let next = contents_level + 1;
        match container {
            Value::Array(items) => items.iter().for_each(|v| push(&mut containers, v, next)),
            Value::Object(map) => map.values().for_each(|v| push(&mut containers, v, next)),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_levels_of_contents() {
        assert!(!nests_deeper_than(&json!("flat"), 1));
        assert!(!nests_deeper_than(&json!({}), 2));
        assert!(nests_deeper_than(&json!({}), 1));
        assert!(!nests_deeper_than(&json!({"a": [1, {"b": 2}]}), 4));
        assert!(nests_deeper_than(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(nests_deeper_than(&json!([1, [2, [[]]]]), 4));
    }
}
