//! [`Text`]: the shared, immutable strings of an event.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use smol_str::SmolStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is shared rather than copied: cloning a `Text` allocates nothing —
/// a longer text is one shared allocation, and a clone counts a reference (dropping one
/// frees nothing while another holds it); a short one (up to 23 bytes: an id, a status,
/// a role, a toolset's or a model's name) is kept inline, with no allocation at all.
///
/// The text fields of an [`AsyncDelegationEvent`](crate::AsyncDelegationEvent) are
/// `Text`, so an event is cheap to clone and to hand between threads: the engine restates
/// a delegation's spec in its completion without copying it, and a consumer that keeps a
/// completion shares its strings with the ledger's row. It reads as a `&str` (it derefs to
/// one and compares with one), builds from a `&str` or a `String` with `into()`, and
/// serializes as the JSON string it holds.
///
/// ```
/// use process_registry::Text;
///
/// let goal = Text::from("Summarise the logs");
/// let shared = goal.clone(); // no allocation
/// assert_eq!(shared, "Summarise the logs");
/// assert!(goal.starts_with("Summarise"));
/// assert_eq!(serde_json::to_string(&goal)?, r#""Summarise the logs""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(SmolStr);

impl Hash for Text {
    // As the `str` it borrows as, so maps keyed by `Text` are looked up by `&str`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(SmolStr::from(text))
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Self {
        Text(SmolStr::from(text.as_str()))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(SmolStr::from(text))
    }
}

impl From<Box<str>> for Text {
    fn from(text: Box<str>) -> Self {
        Text(SmolStr::from(text))
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(text: Cow<'_, str>) -> Self {
        match text {
            Cow::Borrowed(text) => Text::from(text),
            Cow::Owned(text) => Text::from(text),
        }
    }
}

impl From<Arc<str>> for Text {
    fn from(text: Arc<str>) -> Self {
        Text(SmolStr::from(text))
    }
}

impl From<Text> for Arc<str> {
    fn from(text: Text) -> Self {
        Arc::from(text.0)
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        String::from(text.as_str())
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Cow::<'de, str>::deserialize(deserializer).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_reads_and_round_trips_as_a_string() {
        let text = Text::from(String::from("déjà vu \"quoted\""));
        assert_eq!(text, "déjà vu \"quoted\"");
        assert_eq!("déjà vu \"quoted\"", text);
        assert_eq!(text, String::from("déjà vu \"quoted\""));
        assert_eq!(text.len(), "déjà vu \"quoted\"".len());
        assert_eq!(
            format!("{text}|{text:?}"),
            "déjà vu \"quoted\"|\"déjà vu \\\"quoted\\\"\""
        );
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#""déjà vu \"quoted\"""#);
        assert_eq!(serde_json::from_str::<Text>(&json).unwrap(), text);
        assert!(serde_json::from_str::<Text>("7").is_err());
        assert_eq!(Text::default(), "");
        assert_eq!(String::from(text.clone()), text.as_str());
    }

    #[test]
    fn a_clone_shares_the_text() {
        let text = Text::from("shared: longer than the 23 bytes kept inline");
        let clone = text.clone();
        assert!(std::ptr::eq(text.as_str(), clone.as_str()));
        let short = Text::from("deleg_0123abcd");
        assert_eq!(short.clone(), "deleg_0123abcd");
    }

    #[test]
    fn hashes_as_the_str_it_borrows_as() {
        use std::collections::HashSet;
        let set: HashSet<Text> = ["deleg_0123abcd", "a text longer than 23 bytes, on the heap"]
            .into_iter()
            .map(Text::from)
            .collect();
        assert!(set.contains("deleg_0123abcd"));
        assert!(set.contains("a text longer than 23 bytes, on the heap"));
        assert!(!set.contains("deleg_"));
    }
}
