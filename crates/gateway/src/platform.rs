//! Chat platforms: the built-in ones and those registered at run time.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use once_cell::sync::Lazy;

use crate::GatewayError;

macro_rules! platforms {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// A chat platform a gateway serves.
        ///
        /// The built-in platforms are variants; a platform registered at run time (a
        /// plugin) is [`Platform::Custom`], obtained from a [`PlatformRegistry`]. Two
        /// platforms are equal when their names are equal.
        ///
        /// Names are normalized one way everywhere — trimmed, then lowercased with full
        /// Unicode rules: `" Telegram "` is [`Platform::Telegram`], and so is any
        /// spelling that lowercases to `telegram`.
        /// [`Platform::builtin`] knows only the built-ins; [`PlatformRegistry::parse`]
        /// also knows that registry's custom platforms; `str::parse` (`FromStr`) uses the
        /// process-wide [`PlatformRegistry::global`].
        ///
        /// ```
        /// use gateway::Platform;
        ///
        /// assert_eq!(Platform::builtin(" Telegram "), Some(Platform::Telegram));
        /// assert_eq!(Platform::Telegram.as_str(), "telegram");
        /// assert_eq!(Platform::builtin("myspace"), None);
        /// ```
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Platform {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )+
            /// A platform registered at run time; holds its normalized (trimmed,
            /// lowercase) name. Build it through [`PlatformRegistry::register`].
            Custom(CustomPlatform),
        }

        impl Platform {
            /// Every built-in platform, in the order of the contract.
            pub const BUILT_IN: &'static [Platform] = &[$(Platform::$variant),+];

            /// The platform's name as it appears in session keys and on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Platform::$variant => $name,)+
                    Platform::Custom(custom) => custom.as_str(),
                }
            }

            /// The built-in platform called `name`, if any. The name is normalized as
            /// everywhere else: trimmed, then lowercased with full Unicode rules (so
            /// `"WEBHOO\u{212A}"`, with a KELVIN SIGN, is [`Platform::Webhook`]).
            pub fn builtin(name: &str) -> Option<Platform> {
                match &*normalize(name) {
                    $($name => Some(Platform::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

platforms! {
    Local => "local",
    Telegram => "telegram",
    Discord => "discord",
    Whatsapp => "whatsapp",
    WhatsappCloud => "whatsapp_cloud",
    Slack => "slack",
    Signal => "signal",
    Mattermost => "mattermost",
    Matrix => "matrix",
    HomeAssistant => "homeassistant",
    Email => "email",
    Sms => "sms",
    Dingtalk => "dingtalk",
    ApiServer => "api_server",
    Webhook => "webhook",
    MsgraphWebhook => "msgraph_webhook",
    Feishu => "feishu",
    Wecom => "wecom",
    WecomCallback => "wecom_callback",
    Weixin => "weixin",
    Bluebubbles => "bluebubbles",
    Qqbot => "qqbot",
    Yuanbao => "yuanbao",
    Relay => "relay",
}

/// The one normalization of a platform name, used by [`Platform::builtin`] and every
/// [`PlatformRegistry`] method: trim (Unicode whitespace), then full Unicode lowercase.
///
/// A name normalized any other way in one place (say ASCII-only case folding) would let
/// a spelling such as `"WEBHOO\u{212A}"` register a custom `webhook` beside the
/// built-in, and route its completions to no adapter. ASCII names without capitals,
/// the common case, are borrowed as they are.
pub(crate) fn normalize(name: &str) -> Cow<'_, str> {
    let name = name.trim();
    if !name.is_ascii() {
        Cow::Owned(name.to_lowercase())
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Letters (`char::is_alphanumeric`) that print as nothing: the Hangul fillers, the only
/// alphanumeric default-ignorable code points. Every other invisible character (format
/// characters such as U+FEFF or U+200B, controls, variation selectors) is not
/// alphanumeric and is refused by the character rule already.
const INVISIBLE_LETTERS: [char; 4] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}'];

/// Why a normalized name cannot name a custom platform, if it cannot.
fn custom_name_problem(normalized: &str) -> Option<&'static str> {
    let printable = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    if normalized.is_empty() {
        Some("it is empty")
    } else if normalized.contains(':') {
        Some("it contains ':', the session key separator")
    } else if normalized.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if normalized.contains(INVISIBLE_LETTERS) {
        Some("it contains an invisible filler letter")
    } else if !normalized.chars().all(printable) {
        Some("it contains a character other than a letter, a digit, '_', '-' or '.'")
    } else {
        None
    }
}

impl Platform {
    /// `true` for a platform registered at run time.
    pub fn is_custom(&self) -> bool {
        matches!(self, Platform::Custom(_))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = GatewayError;

    /// Parses against the built-ins and the process-wide [`PlatformRegistry::global`].
    /// Code that owns a registry should call [`PlatformRegistry::parse`] instead.
    fn from_str(name: &str) -> Result<Platform, GatewayError> {
        PlatformRegistry::global().parse(name)
    }
}

/// The name of a platform registered at run time (normalized: trimmed, lowercase,
/// non-empty, made of Unicode letters and digits, `_`, `-` and `.` only).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomPlatform(Arc<str>);

impl CustomPlatform {
    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The set of platforms one gateway knows: the built-ins plus those registered at run
/// time (plugins).
///
/// A cloneable handle: clones share one set. Build one with [`PlatformRegistry::new`] and
/// pass it where platforms are parsed; [`PlatformRegistry::global`] is a process-wide
/// default for programs that want exactly one (it is what `str::parse::<Platform>` uses).
///
/// ```
/// use gateway::{GatewayError, Platform, PlatformRegistry};
///
/// let platforms = PlatformRegistry::new();
/// assert_eq!(platforms.parse("DISCORD")?, Platform::Discord);
/// assert!(matches!(platforms.parse("irc"), Err(GatewayError::UnknownPlatform { .. })));
///
/// let irc = platforms.register(" IRC ")?;
/// assert_eq!(irc.as_str(), "irc");
/// assert_eq!(platforms.parse("irc")?, irc);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct PlatformRegistry {
    custom: Arc<RwLock<BTreeSet<CustomPlatform>>>,
}

static GLOBAL_PLATFORMS: Lazy<PlatformRegistry> = Lazy::new(PlatformRegistry::new);

impl PlatformRegistry {
    /// A registry that knows the built-in platforms only.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide default registry, created on first use.
    pub fn global() -> &'static PlatformRegistry {
        &GLOBAL_PLATFORMS
    }

    /// Registers a platform by name and returns it. Idempotent; registering a built-in
    /// name returns the built-in. The name is normalized as [`Platform::builtin`] does
    /// (trimmed, then Unicode-lowercased), so a name that normalizes to a built-in's is
    /// that built-in, never a custom platform beside it.
    ///
    /// A custom name is made of printable characters only — Unicode letters and digits
    /// (`char::is_alphanumeric`), `_`, `-` and `.` — so it prints as what it is: no
    /// control or format character (a byte-order mark, a zero-width space or joiner, a
    /// direction mark) and no invisible filler letter can make a name that looks like a
    /// built-in's and is not.
    ///
    /// # Errors
    /// [`GatewayError::InvalidPlatformName`] when the trimmed name is empty, contains
    /// `:` (the session key separator) or whitespace, or contains any other character
    /// than a letter, a digit, `_`, `-` or `.`, or an invisible filler letter.
    pub fn register(&self, name: &str) -> Result<Platform, GatewayError> {
        if let Some(builtin) = Platform::builtin(name) {
            return Ok(builtin);
        }
        let normalized = normalize(name);
        if let Some(reason) = custom_name_problem(&normalized) {
            return Err(GatewayError::InvalidPlatformName {
                name: name.to_owned(),
                reason,
            });
        }
        let custom = CustomPlatform(Arc::from(&*normalized));
        self.custom
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(custom.clone());
        Ok(Platform::Custom(custom))
    }

    /// Makes `platform` known: a custom platform (registered in some registry, so its
    /// name is valid and normalized) joins this registry's set; a built-in is known
    /// already.
    pub(crate) fn know(&self, platform: &Platform) {
        if let Platform::Custom(custom) = platform {
            self.custom
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(custom.clone());
        }
    }

    /// Removes a run-time platform, the name normalized as [`Platform::builtin`] does.
    /// Returns `true` when it was registered. Built-ins cannot be removed.
    pub fn unregister(&self, name: &str) -> bool {
        let normalized = normalize(name);
        self.custom
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&*normalized)
    }

    /// Parses a platform name (trimmed and lowercased, as [`Platform::builtin`] does)
    /// against the built-ins and this registry's run-time platforms.
    ///
    /// # Errors
    /// [`GatewayError::UnknownPlatform`] for any other name.
    pub fn parse(&self, name: &str) -> Result<Platform, GatewayError> {
        if let Some(builtin) = Platform::builtin(name) {
            return Ok(builtin);
        }
        let normalized = normalize(name);
        let custom = self.custom.read().unwrap_or_else(PoisonError::into_inner);
        match custom.get(&*normalized) {
            Some(found) => Ok(Platform::Custom(found.clone())),
            None => Err(GatewayError::UnknownPlatform {
                name: name.to_owned(),
            }),
        }
    }

    /// `true` when `name` parses (see [`PlatformRegistry::parse`]).
    pub fn is_known(&self, name: &str) -> bool {
        self.parse(name).is_ok()
    }

    /// The platforms registered at run time, sorted by name.
    pub fn custom_platforms(&self) -> Vec<Platform> {
        self.custom
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .map(Platform::Custom)
            .collect()
    }
}

impl std::borrow::Borrow<str> for CustomPlatform {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_builtin_round_trips_through_its_name() {
        assert_eq!(Platform::BUILT_IN.len(), 24);
        for platform in Platform::BUILT_IN {
            assert_eq!(
                Platform::builtin(platform.as_str()).as_ref(),
                Some(platform)
            );
            let shouted = format!("  {}\t", platform.as_str().to_uppercase());
            assert_eq!(Platform::builtin(&shouted).as_ref(), Some(platform));
            assert_eq!(
                PlatformRegistry::new().parse(&shouted).as_ref(),
                Ok(platform)
            );
        }
        let names: Vec<&str> = Platform::BUILT_IN.iter().map(Platform::as_str).collect();
        assert_eq!(
            names.join(" "),
            "local telegram discord whatsapp whatsapp_cloud slack signal mattermost matrix \
             homeassistant email sms dingtalk api_server webhook msgraph_webhook feishu wecom \
             wecom_callback weixin bluebubbles qqbot yuanbao relay"
        );
    }

    #[test]
    fn unknown_platform_is_a_clear_error() {
        let registry = PlatformRegistry::new();
        let err = registry.parse(" MySpace ").unwrap_err();
        assert_eq!(
            err,
            GatewayError::UnknownPlatform {
                name: " MySpace ".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown platform \" MySpace \": not a built-in platform and not registered"
        );
        assert!(registry.parse("").is_err());
    }

    #[test]
    fn registration_is_per_registry_idempotent_and_case_insensitive() {
        let a = PlatformRegistry::new();
        let b = PlatformRegistry::new();
        let irc = a.register("IRC").unwrap();
        assert!(irc.is_custom());
        assert_eq!(a.register(" irc ").unwrap(), irc);
        assert_eq!(a.parse("Irc").unwrap(), irc);
        assert!(b.parse("irc").is_err(), "registries are independent");
        assert_eq!(a.clone().parse("irc").unwrap(), irc, "clones share the set");
        assert_eq!(a.custom_platforms(), vec![irc.clone()]);
        assert_eq!(a.register("Telegram").unwrap(), Platform::Telegram);
        assert!(a.custom_platforms().len() == 1);
        assert!(a.unregister("IRC"));
        assert!(!a.is_known("irc"));
        assert!(!a.unregister("irc"));
    }

    #[test]
    fn invalid_custom_names_are_rejected_with_a_reason() {
        let registry = PlatformRegistry::new();
        for (name, reason) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("a:b", "it contains ':', the session key separator"),
            ("my chat", "it contains whitespace"),
        ] {
            assert_eq!(
                registry.register(name),
                Err(GatewayError::InvalidPlatformName {
                    name: name.into(),
                    reason
                }),
                "{name:?}"
            );
        }
        assert!(registry.custom_platforms().is_empty());
    }

    /// A custom name prints as what it is: control and format characters (a byte-order
    /// mark from a config file, zero-width spaces and joiners, direction marks), marks,
    /// symbols and invisible filler letters are refused, so no name prints like a
    /// built-in's (or another custom platform's) and is a different platform.
    #[test]
    fn names_with_invisible_or_unprintable_characters_are_refused() {
        const OTHER: &str = "it contains a character other than a letter, a digit, '_', '-' or '.'";
        const FILLER: &str = "it contains an invisible filler letter";
        let registry = PlatformRegistry::new();
        for (name, reason) in [
            ("\u{FEFF}webhook", OTHER),     // byte-order mark
            ("web\u{200B}hook", OTHER),     // zero-width space
            ("irc\u{200D}", OTHER),         // zero-width joiner
            ("i\u{200C}rc", OTHER),         // zero-width non-joiner
            ("\u{200E}irc", OTHER),         // left-to-right mark
            ("\u{2066}irc\u{2069}", OTHER), // directional isolates
            ("ir\u{AD}c", OTHER),           // soft hyphen
            ("irc\u{2060}", OTHER),         // word joiner
            ("irc\u{FE0F}", OTHER),         // variation selector
            ("irc\u{E0001}", OTHER),        // language tag
            ("irc\u{7}", OTHER),            // a control character
            ("irc\u{0}", OTHER),
            ("\u{1B}[31mirc", OTHER), // a terminal escape
            ("İRC", OTHER),           // lowercases to `i` + U+0307 COMBINING DOT ABOVE, a mark
            ("irc/2", OTHER),
            ("irc🙂", OTHER),
            ("irc\u{3164}", FILLER), // HANGUL FILLER, a letter that prints as nothing
            ("\u{115F}webhook", FILLER),
            ("web\u{FFA0}hook", FILLER),
        ] {
            assert_eq!(
                registry.register(name),
                Err(GatewayError::InvalidPlatformName {
                    name: name.into(),
                    reason
                }),
                "{name:?}"
            );
        }
        assert!(registry.custom_platforms().is_empty());
        for name in ["zulip-v2.1", "team_chat", "ΣMS", "微信2", "Ⅻchat"] {
            assert!(registry.register(name).unwrap().is_custom(), "{name:?}");
        }
    }

    /// `builtin`, `register`, `parse` and `unregister` all normalize a name the same way
    /// (trim, then full Unicode lowercase), so no spelling can register a custom
    /// platform that shadows a built-in.
    #[test]
    fn one_normalization_rule_for_builtins_and_custom_platforms() {
        const KELVIN: char = '\u{212A}'; // KELVIN SIGN: lowercases to ASCII `k`
        let kelvin_webhook = format!("WEBHOO{KELVIN}");
        let registry = PlatformRegistry::new();
        assert_eq!(Platform::builtin(&kelvin_webhook), Some(Platform::Webhook));
        assert_eq!(registry.parse(&kelvin_webhook), Ok(Platform::Webhook));
        assert_eq!(registry.register(&kelvin_webhook), Ok(Platform::Webhook));
        assert!(
            registry.custom_platforms().is_empty(),
            "no shadow of `webhook`"
        );
        assert!(
            !registry.unregister(&kelvin_webhook),
            "built-ins cannot be removed"
        );
        assert_eq!(
            registry.parse(&format!("  MSGRAPH_WEBHOO{KELVIN}\u{3000}")),
            Ok(Platform::MsgraphWebhook)
        );

        for (name, expected) in [
            ("TELEGRAM", Platform::Telegram),
            (" \tTeLeGrAm\r\n", Platform::Telegram),
            ("\u{3000}telegram\u{2003}", Platform::Telegram),
            ("\u{a0}SLACK\u{85}", Platform::Slack),
        ] {
            assert_eq!(
                Platform::builtin(name).as_ref(),
                Some(&expected),
                "{name:?}"
            );
            assert_eq!(registry.parse(name).as_ref(), Ok(&expected), "{name:?}");
            assert_eq!(registry.register(name).as_ref(), Ok(&expected), "{name:?}");
        }
        assert!(registry.custom_platforms().is_empty());

        // Characters whose lowercase is longer, or not ASCII, never panic and name one
        // custom platform however they are spelled.
        let stroked = registry.register("ȺRC").unwrap();
        assert_eq!(stroked.as_str(), "\u{2C65}rc", "2 bytes lowercase to 3");
        assert_eq!(registry.parse(" \u{2C65}RC "), Ok(stroked.clone()));
        assert_eq!(Platform::builtin("ȺRC"), None);
        assert_eq!(Platform::builtin("İRC"), None);
        let sigma = registry.register("ΣMS").unwrap();
        assert_eq!(registry.parse("σms"), Ok(sigma.clone()));
        assert_eq!(
            registry.custom_platforms(),
            vec![sigma.clone(), stroked.clone()],
            "sorted by name"
        );
        assert!(registry.unregister("ȺRc"));
        assert!(registry.unregister(" ΣMS "));
        assert!(registry.custom_platforms().is_empty());
    }

    /// Names that stress the normalization: arbitrary text, capitals and look-alikes
    /// (KELVIN SIGN, dotted capital I, long s, capital sigma) around whitespace, and
    /// shouted built-in names with `K` written as a KELVIN SIGN.
    fn platform_name() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\s{0,2}[a-zA-Z_\u{212A}\u{130}\u{17F}\u{3A3}]{1,16}\\s{0,2}",
            proptest::sample::select(Platform::BUILT_IN.to_vec())
                .prop_map(|p| p.as_str().to_uppercase().replace('K', "\u{212A}")),
        ]
    }

    proptest! {
        #[test]
        fn no_name_registers_a_shadow_of_a_builtin(name in platform_name()) {
            let registry = PlatformRegistry::new();
            if let Ok(platform) = registry.register(&name) {
                prop_assert_eq!(registry.parse(&name), Ok(platform.clone()));
                if platform.is_custom() {
                    let name = platform.as_str();
                    prop_assert!(
                        name.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c))
                            && !name.contains(INVISIBLE_LETTERS),
                        "{:?} registered {:?}", name, platform
                    );
                }
                prop_assert_eq!(
                    platform.is_custom(),
                    Platform::builtin(platform.as_str()).is_none(),
                    "{:?} registered {:?}", name, platform
                );
                prop_assert_eq!(Platform::builtin(&name).is_some(), !platform.is_custom());
                prop_assert_eq!(registry.unregister(&name), platform.is_custom());
            }
        }
    }
}
