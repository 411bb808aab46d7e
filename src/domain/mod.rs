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
/// `1999.0` is the integer 1999. Returns `None` for fractions, non-numbers and values
/// outside `u64`.
pub fn json_whole_number(value: &serde_json::Value) -> Option<u64> {
    let number = value.as_number()?;
    if let Some(n) = number.as_u64() {
        return Some(n);
    }
    if number.is_i64() {
        return None;
    }
    let f = number.as_f64()?;
    // 2^64 as f64; anything at or above it cannot be a u64.
    if f.is_finite() && f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some(f as u64)
    } else {
        None
    }
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

    #[test]
    fn whole_numbers_are_read_and_everything_else_is_not() {
        assert_eq!(json_whole_number(&json!(1999)), Some(1999));
        assert_eq!(json_whole_number(&json!(1999.0)), Some(1999));
        assert_eq!(json_whole_number(&json!(1e12)), Some(1_000_000_000_000));
        assert_eq!(json_whole_number(&json!(19.99)), None);
        assert_eq!(json_whole_number(&json!(-5)), None);
        assert_eq!(json_whole_number(&json!(-5.0)), None);
        assert_eq!(json_whole_number(&json!(1e300)), None);
        assert_eq!(json_whole_number(&json!("1999")), None);
        assert_eq!(json_whole_number(&json!(null)), None);
    }
}
