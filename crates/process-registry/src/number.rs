//! `WireNumber`: a JSON number that survives the wire the way a Python producer meant it.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON number from an event, kept so that it round-trips and prints as it came.
///
/// Python's `json` reads an integer of any size exactly and a float as a double; so does
/// this type. An integer stays an integer (`17` is not `17.0`), an integer beyond 64 bits
/// keeps every digit (`18446744073709551616` does not become `1.8446744073709552e+19`),
/// and a float is the double the text denotes.
///
/// `Display` is how the notification formatter prints it: an integer as its digits, a
/// float like Python's `repr` — the shortest digits that round-trip, with `.0` on whole
/// values (`12.0`) and a signed two-digit exponent outside `[1e-4, 1e16)` (`1e+16`,
/// `1.5e-05`).
///
/// Integers beyond 64 bits keep their digits when the event is read with `serde_json`
/// (from text, bytes, a reader or a `serde_json::Value`); a `serde_json::Value` itself can
/// only hold them as floats.
///
/// ```
/// use process_registry::WireNumber;
///
/// let big: WireNumber = "18446744073709551616".parse()?;
/// assert_eq!(big.to_string(), "18446744073709551616");
/// assert_eq!(serde_json::to_string(&big)?, "18446744073709551616");
/// assert_eq!(WireNumber::from(17_u64).to_string(), "17");
/// assert_eq!(WireNumber::from_f64(12.0).map(|n| n.to_string()).as_deref(), Some("12.0"));
/// assert_eq!(WireNumber::from_f64(1.5e-5).map(|n| n.to_string()).as_deref(), Some("1.5e-05"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WireNumber(Repr);

#[derive(Debug, Clone, PartialEq)]
enum Repr {
    PosInt(u64),
    NegInt(i64),
    Float(f64),
    /// A number no machine type holds, kept as the text it came as: an integer outside
    /// the 64-bit range (canonical digits: an optional `-`, no leading zeros), or a float
    /// outside the `f64` range (`1e400`, which Python reads as `inf`). Behind a thin
    /// pointer: the rare arm keeps every number — and every event — 8 bytes smaller.
    Exact {
        // A thin pointer on purpose (a `String` or `Box<str>` is 16 bytes or more here).
        #[allow(clippy::box_collection)]
        text: Box<String>,
        integer: bool,
    },
}

/// Why a text is not a JSON number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a JSON number: {text:?}")]
pub struct ParseWireNumberError {
    text: String,
}

impl WireNumber {
    /// A float, or `None` when it is not finite (JSON has no NaN or infinities).
    pub fn from_f64(value: f64) -> Option<WireNumber> {
        value.is_finite().then_some(WireNumber(Repr::Float(value)))
    }

    /// `true` for an integer (of any size), `false` for a float.
    pub fn is_integer(&self) -> bool {
        match &self.0 {
            Repr::PosInt(_) | Repr::NegInt(_) => true,
            Repr::Float(_) => false,
            Repr::Exact { integer, .. } => *integer,
        }
    }

    /// The value as a `u64`, when it is an integer in range.
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            Repr::PosInt(n) => Some(n),
            _ => None,
        }
    }

    /// The value as an `i64`, when it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Repr::PosInt(n) => i64::try_from(n).ok(),
            Repr::NegInt(n) => Some(n),
            _ => None,
        }
    }

    /// The value as an `f64`: exact for floats, the nearest double for integers, `±inf`
    /// beyond the `f64` range (as Python reads `1e400`).
    pub fn as_f64(&self) -> f64 {
        match &self.0 {
            Repr::PosInt(n) => *n as f64,
            Repr::NegInt(n) => *n as f64,
            Repr::Float(f) => *f,
            // JSON number text always parses; out of range it saturates to ±inf.
            Repr::Exact { text, .. } => text.parse().unwrap_or(f64::NAN),
        }
    }

    /// `true` when the value is zero (`0`, `-0`, `0.0`).
    pub fn is_zero(&self) -> bool {
        match self.0 {
            Repr::PosInt(n) => n == 0,
            Repr::NegInt(n) => n == 0,
            Repr::Float(f) => f == 0.0,
            Repr::Exact { .. } => false,
        }
    }

    /// `true` when the value is greater than zero.
    pub fn is_positive(&self) -> bool {
        match &self.0 {
            Repr::PosInt(n) => *n > 0,
            Repr::NegInt(_) => false,
            Repr::Float(f) => *f > 0.0,
            Repr::Exact { text, .. } => !text.starts_with('-'),
        }
    }

    /// The number one greater, as Python's `n + 1` computes it: exact for integers of
    /// any size, a float for a float.
    pub fn plus_one(&self) -> WireNumber {
        match &self.0 {
            Repr::PosInt(n) => match n.checked_add(1) {
                Some(next) => WireNumber(Repr::PosInt(next)),
                None => WireNumber(Repr::Exact {
                    text: Box::new("18446744073709551616".to_owned()),
                    integer: true,
                }),
            },
            Repr::NegInt(n) => WireNumber::from(n + 1),
            Repr::Float(f) => WireNumber::from_f64(f + 1.0).unwrap_or_else(|| self.clone()),
            Repr::Exact {
                text,
                integer: true,
            } => {
                let next = match text.strip_prefix('-') {
                    // -(m) + 1 = -(m - 1); m has at least 19 digits, so m - 1 > 0.
                    Some(magnitude) => format!("-{}", decrement(magnitude)),
                    None => increment(text),
                };
                WireNumber::parse_json(&next).unwrap_or_else(|| self.clone())
            }
            // Beyond the f64 range: `inf + 1` is the same infinity.
            Repr::Exact { integer: false, .. } => self.clone(),
        }
    }

    /// Orders numbers by value: integers exactly (of any size), anything else by the
    /// `f64` values (`total_cmp`).
    pub fn cmp_value(&self, other: &WireNumber) -> std::cmp::Ordering {
        // The common case (task indices), without building an `ExactInt` for each side.
        if let (Repr::PosInt(a), Repr::PosInt(b)) = (&self.0, &other.0) {
            return a.cmp(b);
        }
        match (self.as_exact_int(), other.as_exact_int()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.as_f64().total_cmp(&other.as_f64()),
        }
    }

    fn as_exact_int(&self) -> Option<ExactInt> {
        Some(match &self.0 {
            Repr::PosInt(n) => ExactInt::Small(i128::from(*n)),
            Repr::NegInt(n) => ExactInt::Small(i128::from(*n)),
            Repr::Exact {
                text,
                integer: true,
            } => match text.strip_prefix('-') {
                Some(digits) => ExactInt::NegativeBig(digits.to_owned()),
                None => ExactInt::PositiveBig(text.to_string()),
            },
            _ => return None,
        })
    }

    /// Reads the text of one JSON number.
    fn parse_json(text: &str) -> Option<WireNumber> {
        if !is_json_number(text) {
            return None;
        }
        let integer = !text.contains(['.', 'e', 'E']);
        if integer {
            if let Ok(n) = text.parse::<u64>() {
                return Some(WireNumber(Repr::PosInt(n)));
            }
            if let Ok(n) = text.parse::<i64>() {
                return Some(WireNumber(if n == 0 {
                    // `-0` is an integer zero; keep it an integer.
                    Repr::PosInt(0)
                } else {
                    Repr::NegInt(n)
                }));
            }
            return Some(WireNumber(Repr::Exact {
                text: Box::new(text.to_owned()),
                integer: true,
            }));
        }
        // `f64::from_str` is correctly rounded. Beyond the f64 range (`1e400`, which
        // Python reads as `inf`) the text is kept: it round-trips and prints as it came.
        let value = text.parse::<f64>().ok()?;
        Some(match WireNumber::from_f64(value) {
            Some(number) => number,
            None => WireNumber(Repr::Exact {
                text: Box::new(text.to_owned()),
                integer: false,
            }),
        })
    }
}

/// The JSON number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if bytes.first() == Some(&b'-') {
        i += 1;
    }
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == bytes.len()
}

impl FromStr for WireNumber {
    type Err = ParseWireNumberError;

    /// Parses one JSON number (`17`, `-3`, `18446744073709551616`, `2.5e-3`).
    fn from_str(text: &str) -> Result<WireNumber, ParseWireNumberError> {
        WireNumber::parse_json(text).ok_or_else(|| ParseWireNumberError {
            text: text.to_owned(),
        })
    }
}

macro_rules! from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for WireNumber {
            fn from(n: $t) -> Self {
                WireNumber(Repr::PosInt(n as u64))
            }
        }
    )*};
}
macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for WireNumber {
            fn from(n: $t) -> Self {
                match u64::try_from(n) {
                    Ok(n) => WireNumber(Repr::PosInt(n)),
                    Err(_) => WireNumber(Repr::NegInt(n as i64)),
                }
            }
        }
    )*};
}
from_unsigned!(u8, u16, u32, u64, usize);
from_signed!(i8, i16, i32, i64, isize);

impl Default for WireNumber {
    /// The integer `0`.
    fn default() -> Self {
        WireNumber(Repr::PosInt(0))
    }
}

/// An integer of any size, ordered by value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExactInt {
    /// Below the i64 range: the magnitude's digits.
    NegativeBig(String),
    /// Within the 64-bit range.
    Small(i128),
    /// Above the u64 range: the digits.
    PositiveBig(String),
}

impl Ord for ExactInt {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use ExactInt::{NegativeBig, PositiveBig, Small};
        let by_digits = |a: &str, b: &str| a.len().cmp(&b.len()).then_with(|| a.cmp(b));
        match (self, other) {
            (Small(a), Small(b)) => a.cmp(b),
            (PositiveBig(a), PositiveBig(b)) => by_digits(a, b),
            // A larger magnitude is a smaller negative number.
            (NegativeBig(a), NegativeBig(b)) => by_digits(b, a),
            (NegativeBig(_), _) | (Small(_), PositiveBig(_)) => std::cmp::Ordering::Less,
            (PositiveBig(_), _) | (Small(_), NegativeBig(_)) => std::cmp::Ordering::Greater,
        }
    }
}

impl PartialOrd for ExactInt {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// `digits + 1` for canonical decimal digits.
fn increment(digits: &str) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    for byte in out.iter_mut().rev() {
        if *byte == b'9' {
            *byte = b'0';
        } else {
            *byte += 1;
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
    format!("1{}", String::from_utf8_lossy(&out))
}

/// `digits − 1` for canonical decimal digits of a number of at least 1.
fn decrement(digits: &str) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    for byte in out.iter_mut().rev() {
        if *byte == b'0' {
            *byte = b'9';
        } else {
            *byte -= 1;
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.trim_start_matches('0') {
        "" => "0".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

impl WireNumber {
    /// Appends the number as [`Display`](fmt::Display) writes it, without the formatting
    /// machinery for integers and exact texts (the formatter's hot path).
    pub(crate) fn push_to(&self, out: &mut String) {
        match &self.0 {
            Repr::PosInt(n) => push_u64(out, *n),
            Repr::NegInt(n) => {
                if *n < 0 {
                    out.push('-');
                }
                push_u64(out, n.unsigned_abs());
            }
            Repr::Exact { text, .. } => out.push_str(text),
            Repr::Float(value) => push_python_float(out, *value),
        }
    }
}

/// Appends `n`'s decimal digits.
pub(crate) fn push_u64(out: &mut String, n: u64) {
    push_padded(out, n, 1);
}

/// Appends `n`'s decimal digits, with leading zeros to make `width` digits at least (one
/// digit at least, 20 at most).
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    if n < 10 && width <= 1 {
        out.push(char::from(b'0' + n as u8));
        return;
    }
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    // One char at a time: cheaper for a few digits than validating them as a `str`.
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// Appends Python's `repr(float)` of `value`: a short decimal (`12.0`, `0.25`, `125.5`)
/// digit by digit, anything else through [`write_python_float`].
fn push_python_float(out: &mut String, value: f64) {
    match short_decimal(value.abs()) {
        Some((scaled, fraction_digits)) => {
            if value.is_sign_negative() {
                out.push('-');
            }
            let unit = POWERS_OF_TEN[fraction_digits];
            push_u64(out, scaled / unit as u64);
            out.push('.');
            push_padded(out, scaled % unit as u64, fraction_digits);
        }
        None => {
            let _ = write_python_float(out, value);
        }
    }
}

/// `10^k` for the fraction digits [`short_decimal`] tries.
const POWERS_OF_TEN: [f64; 7] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6];

/// `magnitude` (not negative) as `m / 10^k` with `m < 10^15`, `k ≤ 6` and no trailing
/// zero in the fraction, when there is such a pair (`0.25` is `(25, 2)`, `12.0` is
/// `(12, 0)`), else `None`; `Some((m, k))` means `repr` prints `m` with the point `k`
/// digits from its end (and `.0` when `k` is 0).
///
/// Why: the check `m / 10^k == magnitude` is exact (both are exact doubles, and their
/// quotient is rounded correctly, as parsing the decimal is), so the decimal denotes
/// `magnitude`; decimals of at most 15 significant digits denote distinct doubles, so no
/// shorter one does. It is then the shortest round-trip decimal, which `repr` prints, in
/// plain form since `magnitude` is 0 or within `[10^-4, 10^15)` (a smaller one is left to
/// [`write_python_float`]).
fn short_decimal(magnitude: f64) -> Option<(u64, usize)> {
    if magnitude != 0.0 && magnitude < 1e-4 {
        return None;
    }
    for (fraction_digits, unit) in POWERS_OF_TEN.iter().enumerate() {
        let scaled = magnitude * unit;
        if scaled >= 1e15 {
            return None;
        }
        // Whole when the cast (exact below 10^15) gives it back; cheaper than `fract`,
        // which is a library call on baseline x86-64 (and `i64` casts are one instruction
        // each way, `u64` ones are not).
        if (scaled as i64) as f64 == scaled && scaled / unit == magnitude {
            return Some(without_trailing_zeros(scaled as u64, fraction_digits));
        }
    }
    None
}

/// `m / 10^k` with the fraction's trailing zeros dropped: `(4309647370, 6)` is
/// `(430964737, 5)`. (The product `magnitude × 10^k` is rounded, so [`short_decimal`] can
/// miss the smallest `k` and find a larger one.)
fn without_trailing_zeros(mut scaled: u64, mut fraction_digits: usize) -> (u64, usize) {
    while fraction_digits > 0 && scaled.is_multiple_of(10) {
        scaled /= 10;
        fraction_digits -= 1;
    }
    (scaled, fraction_digits)
}

impl fmt::Display for WireNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::PosInt(n) => write!(f, "{n}"),
            Repr::NegInt(n) => write!(f, "{n}"),
            Repr::Exact { text, .. } => f.write_str(text),
            Repr::Float(value) => write_python_float(f, *value),
        }
    }
}

/// Python's `repr(float)`.
fn write_python_float(out: &mut impl fmt::Write, value: f64) -> fmt::Result {
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        // Rust's `Display` for f64 prints the shortest round-trip digits, never an
        // exponent; only the `.0` of whole values is missing.
        let mut digits = stack_text::StackText::new();
        write!(digits, "{value}")?;
        out.write_str(digits.as_str())?;
        if !digits.as_str().contains('.') {
            out.write_str(".0")?;
        }
        return Ok(());
    }
    // `{:e}` gives the same shortest digits as `1.5e-5`; Python writes `1.5e-05`.
    let mut scientific = stack_text::StackText::new();
    write!(scientific, "{value:e}")?;
    let text = scientific.as_str();
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(digits) => ('-', digits),
        None => ('+', exponent),
    };
    out.write_str(mantissa)?;
    out.write_char('e')?;
    out.write_char(sign)?;
    if digits.len() < 2 {
        out.write_char('0')?;
    }
    out.write_str(digits)
}

/// A fixed stack buffer for one float's text, so printing allocates nothing.
mod stack_text {
    use std::fmt;

    /// Room for the longest `f64` text Rust prints (`-1.7976931348623157e308`, or 17
    /// significant digits with up to 4 leading zeros and a sign in plain form).
    pub(super) struct StackText {
        bytes: [u8; 40],
        len: usize,
    }

    impl StackText {
        pub(super) fn new() -> Self {
            StackText {
                bytes: [0; 40],
                len: 0,
            }
        }

        pub(super) fn as_str(&self) -> &str {
            // Only whole `&str`s are ever written.
            std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
        }
    }

    impl fmt::Write for StackText {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len + s.len();
            let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
            slot.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}

impl Serialize for WireNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::PosInt(n) => serializer.serialize_u64(*n),
            Repr::NegInt(n) => serializer.serialize_i64(*n),
            Repr::Float(f) => serializer.serialize_f64(*f),
            Repr::Exact { text, .. } => {
                // serde_json writes a raw value's text verbatim: every digit survives.
                let raw =
                    RawValue::from_string(text.to_string()).map_err(serde::ser::Error::custom)?;
                raw.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for WireNumber {
    /// Reads the number's text as it stands in the JSON (so no digit is lost), from any
    /// `serde_json` deserializer.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        WireNumber::parse_json(raw.get()).ok_or_else(|| {
            D::Error::custom(format_args!(
                "invalid type: {}, expected a number",
                crate::raw::raw_kind(&raw)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `push_to` appends for the float `value`.
    fn pushed(value: f64) -> String {
        let mut out = String::from("x");
        WireNumber::from_f64(value).unwrap().push_to(&mut out);
        out
    }

    /// Floats of every kind: any bit pattern, short decimals (`digits / 10^k`), whole
    /// numbers up to 2^63, and values at the edges of the plain form.
    fn any_float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>()
                .prop_map(f64::from_bits)
                .prop_filter("finite", |f| f.is_finite()),
            (any::<i64>(), 0_u32..12, 0_u32..64).prop_map(|(digits, k, shift)| {
                (digits >> shift) as f64 / 10_f64.powi(k as i32)
            }),
            (0.0_f64..2e-4),
            (9e14_f64..2e16),
            (-1e6_f64..1e6),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(50_000))]

        /// `push_to`'s short-decimal path against `Display` (`write_python_float`, which
        /// prints Rust's shortest round-trip digits).
        #[test]
        fn floats_are_pushed_as_display_writes_them(value in any_float()) {
            prop_assert_eq!(pushed(value), format!("x{}", WireNumber::from_f64(value).unwrap()));
        }

        /// The shortcut for two `u64`s orders as the exact-integer path does.
        #[test]
        fn small_integers_order_as_exact_integers(a in any::<u64>(), b in any::<u64>()) {
            let (a, b) = (WireNumber::from(a), WireNumber::from(b));
            prop_assert_eq!(a.cmp_value(&b), a.as_exact_int().cmp(&b.as_exact_int()));
        }

        #[test]
        fn padded_digits_are_what_format_pads(n in any::<u64>(), width in 0_usize..=20) {
            let mut out = String::new();
            push_padded(&mut out, n, width);
            prop_assert_eq!(out, format!("{n:0width$}", width = width.max(1)));
        }
    }

    #[test]
    fn short_decimals_are_found_and_others_left_to_display() {
        assert_eq!(short_decimal(12.0), Some((12, 0)));
        assert_eq!(short_decimal(0.25), Some((25, 2)));
        assert_eq!(short_decimal(125.5), Some((1255, 1)));
        assert_eq!(short_decimal(0.1), Some((1, 1)));
        assert_eq!(short_decimal(1e-4), Some((1, 4)));
        assert_eq!(short_decimal(0.0), Some((0, 0)));
        assert_eq!(short_decimal(0.1 + 0.2), None);
        assert_eq!(short_decimal(1e15), None);
        assert_eq!(short_decimal(9e-5), None);
        assert_eq!(short_decimal(4309.64737), Some((430964737, 5)));
        for (value, expected) in [
            (12.0, "x12.0"),
            (-0.0, "x-0.0"),
            (-2.5, "x-2.5"),
            (0.000123, "x0.000123"),
            (999999999999999.0, "x999999999999999.0"),
            (1e15, "x1000000000000000.0"),
            (0.30000000000000004, "x0.30000000000000004"),
        ] {
            assert_eq!(pushed(value), expected, "{value:?}");
        }
    }

    fn shown(text: &str) -> String {
        text.parse::<WireNumber>().unwrap().to_string()
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (12.0, "12.0"),
            (3.5, "3.5"),
            (0.25, "0.25"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-15.0, "-15.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (-2.5e-300, "-2.5e-300"),
            (1e100, "1e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (-1.2345678901234568e-5, "-1.2345678901234568e-05"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                WireNumber::from_f64(value).unwrap().to_string(),
                expected,
                "{value:?}"
            );
        }
        assert_eq!(WireNumber::from_f64(f64::NAN), None);
        assert_eq!(WireNumber::from_f64(f64::INFINITY), None);
    }

    #[test]
    fn integers_keep_their_digits_and_kind() {
        assert_eq!(shown("17"), "17");
        assert_eq!(shown("-15"), "-15");
        assert_eq!(shown("-0"), "0");
        assert_eq!(shown("18446744073709551615"), "18446744073709551615");
        assert_eq!(shown("18446744073709551616"), "18446744073709551616");
        assert_eq!(shown("-9223372036854775809"), "-9223372036854775809");
        assert_eq!(shown("17.0"), "17.0");
        assert_eq!(shown("1E2"), "100.0");
        let big: WireNumber = "18446744073709551616".parse().unwrap();
        assert!(big.is_integer());
        assert_eq!(big.as_u64(), None);
        assert_eq!(big.as_f64(), 18446744073709551616.0);
        assert!(!"1.0".parse::<WireNumber>().unwrap().is_integer());
    }

    #[test]
    fn only_json_numbers_parse() {
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "NaN", "inf", "1 ", "0x1",
        ] {
            assert!(bad.parse::<WireNumber>().is_err(), "{bad:?}");
        }
        for good in [
            "0",
            "-0.0",
            "1e-7",
            "2.5E+3",
            "123456789012345678901234567890",
        ] {
            assert!(good.parse::<WireNumber>().is_ok(), "{good:?}");
        }
    }

    #[test]
    fn floats_beyond_the_f64_range_keep_their_text() {
        let huge: WireNumber = "1e400".parse().unwrap();
        assert_eq!(huge.to_string(), "1e400");
        assert!(!huge.is_integer());
        assert_eq!(huge.as_f64(), f64::INFINITY);
        assert_eq!(serde_json::to_string(&huge).unwrap(), "1e400");
        let tiny: WireNumber = "-1E+999".parse().unwrap();
        assert_eq!(tiny.as_f64(), f64::NEG_INFINITY);
        assert!(!tiny.is_positive());
    }

    #[test]
    fn push_to_writes_what_display_writes() {
        for text in [
            "0",
            "7",
            "-1",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-92233720368547758080",
            "1.5",
            "12.0",
            "1e-05",
            "1e+16",
            "0.1",
            "-2.5",
        ] {
            let number: WireNumber = text.parse().unwrap();
            let mut pushed = String::from("x");
            number.push_to(&mut pushed);
            assert_eq!(pushed, format!("x{number}"), "{text}");
        }
        for n in [0_u64, 9, 10, 99, 100, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn plus_one_and_ordering_are_exact_for_any_integer() {
        let next = |text: &str| text.parse::<WireNumber>().unwrap().plus_one().to_string();
        assert_eq!(next("0"), "1");
        assert_eq!(next("-1"), "0");
        assert_eq!(next("18446744073709551615"), "18446744073709551616");
        assert_eq!(next("99999999999999999999"), "100000000000000000000");
        assert_eq!(next("-100000000000000000000"), "-99999999999999999999");
        assert_eq!(next("1.5"), "2.5");
        let mut numbers: Vec<WireNumber> = [
            "3",
            "18446744073709551616",
            "-92233720368547758080",
            "-1",
            "2.5",
            "0",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        numbers.sort_by(WireNumber::cmp_value);
        let sorted: Vec<String> = numbers.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "-92233720368547758080",
                "-1",
                "0",
                "2.5",
                "3",
                "18446744073709551616"
            ]
        );
    }

    #[test]
    fn serde_keeps_big_integers_through_text_and_rejects_non_numbers() {
        let n: WireNumber = serde_json::from_str("123456789012345678901234567890").unwrap();
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            "123456789012345678901234567890"
        );
        let n: WireNumber = serde_json::from_str("12.0").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "12.0");
        let err = serde_json::from_str::<WireNumber>(r#""seven""#).unwrap_err();
        assert!(err.to_string().contains("expected a number"), "{err}");
        // From a `Value` (which holds at most 64-bit integers) it still works.
        let n: WireNumber = serde_json::from_value(serde_json::json!(42)).unwrap();
        assert_eq!(n, WireNumber::from(42_u8));
    }
}
