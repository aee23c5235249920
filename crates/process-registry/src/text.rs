//! [`Text`]: the shared, immutable strings of an event.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is shared rather than copied: cloning a `Text` counts a reference, and
/// dropping one frees nothing while another holds it.
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
/// let shared = goal.clone(); // no copy of the text
/// assert_eq!(shared, "Summarise the logs");
/// assert!(goal.starts_with("Summarise"));
/// assert_eq!(serde_json::to_string(&goal)?, r#""Summarise the logs""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Arc<str>);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Text {
    fn default() -> Self {
        static EMPTY: std::sync::OnceLock<Text> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| Text(Arc::from(""))).clone()
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
        Text(Arc::from(text))
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Self {
        Text(Arc::from(text.as_str()))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(Arc::from(text))
    }
}

impl From<Box<str>> for Text {
    fn from(text: Box<str>) -> Self {
        Text(Arc::from(text))
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
        Text(text)
    }
}

impl From<Text> for Arc<str> {
    fn from(text: Text) -> Self {
        text.0
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        String::from(&*text.0)
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
        let text = Text::from("shared");
        let clone = text.clone();
        assert!(std::ptr::eq(text.as_str(), clone.as_str()));
    }
}
