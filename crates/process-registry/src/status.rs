//! [`Status`]: how a delegation (or one task of a batch) ended, typed, written on the
//! wire as the open string it always was.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a delegation ended: the `status` of a completion. The wire value is an open
/// string; the statuses this workspace and the reference harness write are variants, and
/// any other text is [`Other`](Self::Other), kept byte for byte (`"Completed"` is not
/// `completed`, and `""` stays `""`), so every event round-trips unchanged.
///
/// It reads as the `&str` it is written as (`Deref<Target = str>`), so
/// `event.status.as_deref() == Some("completed")` keeps working, and compares with text.
///
/// ```
/// use process_registry::Status;
///
/// assert_eq!(Status::from("stalled"), Status::Stalled);
/// assert_eq!(Status::from("Completed"), Status::Other("Completed".into()));
/// assert_eq!(Status::Interrupted, "interrupted");
/// assert!(Status::from("success").is_success());
/// assert_eq!(serde_json::to_string(&Status::Timeout)?, r#""timeout""#);
/// assert_eq!(serde_json::from_str::<Status>(r#""paused""#)?, Status::Other("paused".into()));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// Two statuses are equal when their texts are (`Status::Other("completed".into())` is
/// `Status::Completed`: it is written the same), and they hash and order as their texts.
#[derive(Clone)]
pub enum Status {
    /// `completed`: the subagent finished its task.
    Completed,
    /// `success`: finished (another producer's word for it).
    Success,
    /// `error`: the subagent (or its runner) failed.
    Error,
    /// `failed`: failed (another producer's word for it).
    Failed,
    /// `interrupted`: stopped through its interrupt (a stop, a shutdown, a stall).
    Interrupted,
    /// `timeout`: ran past its deadline.
    Timeout,
    /// `stalled`: made no progress and was finalized by the engine.
    Stalled,
    /// `unknown`: its process died while it ran (the completion ledger's recovery).
    Unknown,
    /// `cancelled`: cancelled before it finished.
    Cancelled,
    /// `running`: a delegation's record while its runner has not finished (never a
    /// completion's status).
    Running,
    /// Any other text, as written.
    Other(String),
}

impl Status {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Other(text) => text,
            known => known.known_str().unwrap_or_default(),
        }
    }

    /// The wire text of a known status, as a `'static` string (`None` for
    /// [`Other`](Self::Other)): a label or key that needs no allocation.
    pub fn known_str(&self) -> Option<&'static str> {
        Some(match self {
            Status::Completed => "completed",
            Status::Success => "success",
            Status::Error => "error",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Timeout => "timeout",
            Status::Stalled => "stalled",
            Status::Unknown => "unknown",
            Status::Cancelled => "cancelled",
            Status::Running => "running",
            Status::Other(_) => return None,
        })
    }

    /// `true` for the statuses whose summary renders as a success (`completed`,
    /// `success`).
    pub fn is_success(&self) -> bool {
        matches!(self.as_str(), "completed" | "success")
    }
}

impl PartialEq for Status {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Status {}

impl std::hash::Hash for Status {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Status {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Status {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// The empty status, `""`: what an absent status reads as with `unwrap_or_default` (the
/// engine writes such a result as `completed`).
impl Default for Status {
    fn default() -> Self {
        Status::Other(String::new())
    }
}

impl From<&str> for Status {
    fn from(text: &str) -> Self {
        match text {
            "completed" => Status::Completed,
            "success" => Status::Success,
            "error" => Status::Error,
            "failed" => Status::Failed,
            "interrupted" => Status::Interrupted,
            "timeout" => Status::Timeout,
            "stalled" => Status::Stalled,
            "unknown" => Status::Unknown,
            "cancelled" => Status::Cancelled,
            "running" => Status::Running,
            other => Status::Other(other.to_owned()),
        }
    }
}

impl From<String> for Status {
    fn from(text: String) -> Self {
        match Status::from(text.as_str()) {
            Status::Other(_) => Status::Other(text),
            known => known,
        }
    }
}

impl From<&String> for Status {
    fn from(text: &String) -> Self {
        Status::from(text.as_str())
    }
}

impl From<crate::Text> for Status {
    fn from(text: crate::Text) -> Self {
        Status::from(text.as_str())
    }
}

impl From<Status> for String {
    fn from(status: Status) -> Self {
        match status {
            Status::Other(text) => text,
            known => known.as_str().to_owned(),
        }
    }
}

impl Deref for Status {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Status {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Status> for str {
    fn eq(&self, other: &Status) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Status> for &str {
    fn eq(&self, other: &Status) -> bool {
        *self == other.as_str()
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Status, E> {
                Ok(Status::from(text))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Status, E> {
                Ok(Status::from(text))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_text_built_as_other_is_that_status() {
        use std::collections::HashSet;
        let other = Status::Other("completed".into());
        assert_eq!(other, Status::Completed);
        assert!(other.is_success());
        assert!(Status::Other("success".into()).is_success());
        assert!(!Status::Other("Completed".into()).is_success());
        let set: HashSet<Status> = [Status::Completed].into_iter().collect();
        assert!(set.contains(&other));
        assert_eq!(
            Status::Other("error".into()).cmp(&Status::Error),
            std::cmp::Ordering::Equal
        );
        assert!(Status::Completed < Status::Error);
    }

    #[test]
    fn every_known_status_round_trips_and_other_text_is_kept() {
        for text in [
            "completed",
            "success",
            "error",
            "failed",
            "interrupted",
            "timeout",
            "stalled",
            "unknown",
            "cancelled",
            "running",
            "",
            "Completed",
            " completed",
            "paused",
            "ünïcode",
        ] {
            let status = Status::from(text);
            assert_eq!(status.as_str(), text);
            assert_eq!(String::from(status.clone()), text);
            let wire = serde_json::to_string(&status).unwrap();
            assert_eq!(serde_json::from_str::<Status>(&wire).unwrap(), status);
            let known = [
                "completed",
                "success",
                "error",
                "failed",
                "interrupted",
                "timeout",
                "stalled",
                "unknown",
                "cancelled",
                "running",
            ];
            assert_eq!(
                !matches!(status, Status::Other(_)),
                known.contains(&text),
                "{text}"
            );
        }
    }
}
