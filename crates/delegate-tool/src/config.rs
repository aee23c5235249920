//! The `delegation:` settings the tool obeys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nesting::nests_deeper_than;
use crate::{ConfigError, MAX_ARGUMENT_NESTING};

/// The `delegation:` section of an agent's config.
///
/// Deserializes from any serde format (YAML, TOML, JSON) through
/// [`serde_json::Value`]: missing or `null` settings take their defaults, settings this
/// crate does not know (the Python harness keeps `model`, `provider`, … in the same section for
/// credential resolution) are ignored, and a wrong type or value is a [`ConfigError`]
/// naming the setting. Integers may also be given as strings holding one (`"3"`).
///
/// ```
/// use delegate_tool::DelegationConfig;
///
/// let config = DelegationConfig::from_json_str(r#"{"max_concurrent_children": 5, "model": "x"}"#)?;
/// assert_eq!(config.max_concurrent_children, 5);
/// assert_eq!(config.max_spawn_depth, 1);
///
/// let err = DelegationConfig::from_json_str(r#"{"max_spawn_depth": -1}"#).unwrap_err();
/// assert_eq!(err.to_string(), "delegation.max_spawn_depth must be a non-negative integer, got -1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct DelegationConfig {
    /// A parent at this delegation depth or deeper may not delegate (default 1: only
    /// the top-level agent delegates; 0 disables delegation).
    pub max_spawn_depth: u32,
    /// Most tasks one call may run (synchronously, in parallel); at least 1 (default 3).
    pub max_concurrent_children: usize,
    /// Most background delegations running at once (default 3; 0 refuses every
    /// background call).
    pub max_async_children: usize,
    /// Iteration cap given to every child; at least 1 (default 50). The model's own
    /// `max_iterations` argument is accepted and ignored.
    pub max_iterations: u32,
}

impl DelegationConfig {
    /// Default `max_spawn_depth`.
    pub const DEFAULT_MAX_SPAWN_DEPTH: u32 = 1;
    /// Default `max_concurrent_children`.
    pub const DEFAULT_MAX_CONCURRENT_CHILDREN: usize = 3;
    /// Default `max_async_children`.
    pub const DEFAULT_MAX_ASYNC_CHILDREN: usize = async_delegation::DEFAULT_MAX_ASYNC_CHILDREN;
    /// Default `max_iterations`.
    pub const DEFAULT_MAX_ITERATIONS: u32 = 50;

    /// Reads the section from JSON text.
    ///
    /// # Errors
    /// [`ConfigError::Json`] for text that is not JSON, otherwise as
    /// [`from_value`](Self::from_value).
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_value(&value)
    }

    /// Reads the section from an already parsed value (`null` means all defaults).
    ///
    /// # Errors
    /// [`ConfigError::NotAMap`] when `value` is not an object or null;
    /// [`ConfigError::InvalidSetting`] when a setting is not a non-negative integer, or
    /// `max_concurrent_children` / `max_iterations` is 0. The error quotes the value's JSON
    /// text, or names its kind when it nests too deeply to write out safely; any value,
    /// however deep, is read without recursion.
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        let map = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(map) => map,
            other => {
                return Err(ConfigError::NotAMap {
                    kind: process_registry::json_kind(other),
                })
            }
        };
        let defaults = Self::default();
        let read = |field: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            let Some(raw) = map.get(field).filter(|v| !v.is_null()) else {
                return Ok(default);
            };
            let parsed = match raw {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match parsed {
                Some(n) if n >= min => Ok(n),
                Some(_) => Err(ConfigError::InvalidSetting {
                    field,
                    expected: "at least 1",
                    got: describe(raw),
                }),
                None => Err(ConfigError::InvalidSetting {
                    field,
                    expected: "a non-negative integer",
                    got: describe(raw),
                }),
            }
        };
        let to_u32 = |field: &'static str, n: u64| {
            u32::try_from(n).map_err(|_| ConfigError::InvalidSetting {
                field,
                expected: "at most 4294967295",
                got: n.to_string(),
            })
        };
        let to_usize = |field: &'static str, n: u64| {
            usize::try_from(n).map_err(|_| ConfigError::InvalidSetting {
                field,
                expected: "a representable count",
                got: n.to_string(),
            })
        };
        Ok(DelegationConfig {
            max_spawn_depth: to_u32(
                "max_spawn_depth",
                read("max_spawn_depth", u64::from(defaults.max_spawn_depth), 0)?,
            )?,
            max_concurrent_children: to_usize(
                "max_concurrent_children",
                read(
                    "max_concurrent_children",
                    defaults.max_concurrent_children as u64,
                    1,
                )?,
            )?,
            max_async_children: to_usize(
                "max_async_children",
                read("max_async_children", defaults.max_async_children as u64, 0)?,
            )?,
            max_iterations: to_u32(
                "max_iterations",
                read("max_iterations", u64::from(defaults.max_iterations), 1)?,
            )?,
        })
    }
}

/// How an invalid setting's value reads in its error: its JSON text, or — when it nests
/// deeper than [`MAX_ARGUMENT_NESTING`] levels, where writing the text would recurse that
/// deep — its kind (`a deeply nested array`). Checked without recursion.
fn describe(value: &Value) -> String {
    if nests_deeper_than(value, MAX_ARGUMENT_NESTING) {
        format!("a deeply nested {}", process_registry::json_kind(value))
    } else {
        value.to_string()
    }
}

impl Default for DelegationConfig {
    fn default() -> Self {
        DelegationConfig {
            max_spawn_depth: Self::DEFAULT_MAX_SPAWN_DEPTH,
            max_concurrent_children: Self::DEFAULT_MAX_CONCURRENT_CHILDREN,
            max_async_children: Self::DEFAULT_MAX_ASYNC_CHILDREN,
            max_iterations: Self::DEFAULT_MAX_ITERATIONS,
        }
    }
}

impl TryFrom<Value> for DelegationConfig {
    type Error = ConfigError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = DelegationConfig::default();
        assert_eq!(
            (
                config.max_spawn_depth,
                config.max_concurrent_children,
                config.max_async_children,
                config.max_iterations
            ),
            (1, 3, 3, 50)
        );
        assert_eq!(DelegationConfig::from_value(&json!({})).unwrap(), config);
        assert_eq!(DelegationConfig::from_value(&Value::Null).unwrap(), config);
    }

    #[test]
    fn reads_settings_ignores_unknown_keys_and_accepts_integer_strings() {
        let config = DelegationConfig::from_value(&json!({
            "max_spawn_depth": 2, "max_concurrent_children": "5", "max_async_children": 0,
            "max_iterations": 10, "model": "gpt", "provider": null,
        }))
        .unwrap();
        assert_eq!(
            config,
            DelegationConfig {
                max_spawn_depth: 2,
                max_concurrent_children: 5,
                max_async_children: 0,
                max_iterations: 10
            }
        );
    }

    #[test]
    fn deserialize_goes_through_the_same_checks() {
        let config: DelegationConfig =
            serde_json::from_str(r#"{"max_async_children": 7}"#).unwrap();
        assert_eq!(config.max_async_children, 7);
        let err = serde_json::from_str::<DelegationConfig>(r#"{"max_iterations": "lots"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("delegation.max_iterations must be a non-negative integer, got \"lots\""),
            "{err}"
        );
    }

    #[test]
    fn clear_errors_name_the_setting() {
        let cases = [
            (
                json!({"max_spawn_depth": -1}),
                "delegation.max_spawn_depth must be a non-negative integer, got -1",
            ),
            (
                json!({"max_concurrent_children": 0}),
                "delegation.max_concurrent_children must be at least 1, got 0",
            ),
            (
                json!({"max_iterations": 1.5}),
                "delegation.max_iterations must be a non-negative integer, got 1.5",
            ),
            (
                json!({"max_async_children": [3]}),
                "delegation.max_async_children must be a non-negative integer, got [3]",
            ),
            (
                json!({"max_spawn_depth": 5_000_000_000_u64}),
                "delegation.max_spawn_depth must be at most 4294967295, got 5000000000",
            ),
            (
                json!([1]),
                "delegation config must be a map of settings, got array",
            ),
            (
                json!({"max_iterations": {"a": [[[]]]}}),
                "delegation.max_iterations must be a non-negative integer, got {\"a\":[[[]]]}",
            ),
        ];
        for (value, text) in cases {
            let err = DelegationConfig::from_value(&value).unwrap_err();
            assert_eq!(err.to_string(), text, "{value}");
        }
        assert!(matches!(
            DelegationConfig::from_json_str("{"),
            Err(ConfigError::Json(_))
        ));
    }

    /// A value nested deeper than the arguments may be is named by its kind: writing its
    /// text would recurse once per level. Up to the limit it is still the text.
    #[test]
    fn a_deeply_nested_setting_is_named_by_its_kind() {
        fn nested(levels: usize, array: bool) -> Value {
            let mut value = json!(1);
            for _ in 0..levels {
                value = if array {
                    Value::Array(vec![value])
                } else {
                    json!({ "a": value })
                };
            }
            value
        }
        let err = |value: Value| {
            let config = json!({ "max_concurrent_children": value });
            DelegationConfig::from_value(&config).unwrap_err()
        };
        let shallow = nested(MAX_ARGUMENT_NESTING - 1, true);
        let text = shallow.to_string();
        assert_eq!(
            err(shallow).to_string(),
            format!(
                "delegation.max_concurrent_children must be a non-negative integer, got {text}"
            )
        );
        for (array, kind) in [(true, "array"), (false, "object")] {
            assert_eq!(
                err(nested(MAX_ARGUMENT_NESTING, array)).to_string(),
                format!("delegation.max_concurrent_children must be a non-negative integer, got a deeply nested {kind}")
            );
        }
    }
}
