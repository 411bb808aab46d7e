//! Domain values, parsed once at the edge. Nothing here knows about HTTP or Redis.

mod amount;
mod card;
mod currency;
mod merchant_id;
mod order;

pub use amount::{Amount, AmountError};
pub use card::{CardDetails, CardError, CardField, CardNumber};
pub use currency::{Currency, CurrencyError};
pub use merchant_id::{MerchantId, MerchantIdError};
pub use order::{Description, DescriptionError, OrderId, OrderIdError};

/// Reads a JSON number that must be a whole number, following JSON Schema's rule that
/// `1999.0` is the integer 1999. The number's own text is read exactly (serde_json keeps it,
/// with `arbitrary_precision`), so `1999.0000000000000001` is a fraction even though no
/// `f64` can tell it from 1999. Integers beyond `i128` saturate. `None` for fractions and
/// non-numbers.
pub fn json_whole_number(value: &serde_json::Value) -> Option<i128> {
    whole_number_from_text(&value.as_number()?.to_string())
}

/// The integer a JSON number's text denotes, if it denotes one: `-12`, `1999.00`, `2e3`,
/// `1.5e1`. Saturates at the `i128` bounds.
fn whole_number_from_text(text: &str) -> Option<i128> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = digits.iter().position(|&d| d != b'0');
    let Some(first) = significant else {
        return Some(0);
    };
    // Where the decimal point falls within `digits`, after the exponent moves it.
    let point = i64::try_from(int.len()).ok()?.saturating_add(exponent);
    let len = i64::try_from(digits.len()).ok()?;
    if point < len {
        let whole_len = usize::try_from(point.max(0)).ok()?;
        if digits[whole_len..].iter().any(|&d| d != b'0') {
            return None;
        }
    }
    // The integer is digits[first..point] followed by zeros up to `point`.
    let magnitude_digits = point - i64::try_from(first).ok()?;
    if magnitude_digits > 38 {
        return Some(if negative { i128::MIN } else { i128::MAX });
    }
    let mut value: i128 = 0;
    for i in first..usize::try_from(point).ok()? {
        let digit = digits.get(i).map_or(0, |d| d - b'0');
        value = value * 10 + i128::from(digit);
    }
    Some(if negative { -value } else { value })
}

/// True when `s` holds a character a payer's page or a merchant's report should never show
/// raw: C0/C1 controls (newlines and tabs included).
pub(crate) fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::json_whole_number;
    use serde_json::json;

    fn parsed(text: &str) -> Option<i128> {
        json_whole_number(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn whole_numbers_are_read_exactly_and_everything_else_is_not() {
        assert_eq!(parsed("1999"), Some(1999));
        assert_eq!(parsed("1999.0"), Some(1999));
        assert_eq!(parsed("1999.000"), Some(1999));
        assert_eq!(parsed("1e12"), Some(1_000_000_000_000));
        assert_eq!(parsed("1.5e1"), Some(15));
        assert_eq!(parsed("150e-1"), Some(15));
        assert_eq!(parsed("-5"), Some(-5));
        assert_eq!(parsed("-0.0"), Some(0));
        assert_eq!(parsed("0e-7"), Some(0));
        assert_eq!(parsed("19.99"), None);
        assert_eq!(parsed("1999.0000000000000001"), None);
        assert_eq!(parsed("0.99999999999999999"), None);
        assert_eq!(parsed("1000000000000.00001"), None);
        assert_eq!(parsed("1e-300"), None);
        assert_eq!(parsed("1e300"), Some(i128::MAX));
        assert_eq!(parsed("-1e300"), Some(i128::MIN));
        assert_eq!(
            parsed("123456789012345678901234567890"),
            Some(123456789012345678901234567890)
        );
        assert_eq!(json_whole_number(&json!("1999")), None);
        assert_eq!(json_whole_number(&json!(null)), None);
    }
}
