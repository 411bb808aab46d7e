use super::Currency;
use crate::text;
use std::fmt::Write as _;

/// A positive amount in the minor units of its currency (1999 = USD 19.99 = JPY 1999),
/// between 1 and 10^12. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AmountError {
    #[error("amount must be an integer number of minor units")]
    NotAnInteger,
    #[error("amount must be between 1 and 1000000000000 minor units")]
    OutOfRange,
}

impl Amount {
    pub const MAX: u64 = 1_000_000_000_000;

    /// Accepts 1 ..= 10^12.
    pub fn new(minor_units: u64) -> Result<Self, AmountError> {
        if (1..=Self::MAX).contains(&minor_units) {
            Ok(Amount(minor_units))
        } else {
            Err(AmountError::OutOfRange)
        }
    }

    /// Reads the JSON value of the `amount` field: an integer, or a number whose
    /// fractional part is zero. Strings, fractions, zero and negatives are rejected.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, AmountError> {
        let whole = super::json_whole_number(value).ok_or(AmountError::NotAnInteger)?;
        u64::try_from(whole)
            .map_err(|_| AmountError::OutOfRange)
            .and_then(Self::new)
    }

    pub fn minor_units(&self) -> u64 {
        self.0
    }

    /// The major-unit figure with the currency's exponent: 1999 USD → "19.99",
    /// 1999 JPY → "1999", 1999 KWD → "1.999".
    pub fn format(&self, currency: Currency) -> String {
        let mut out = String::with_capacity(20);
        self.push_figure(currency, &mut out);
        out
    }

    /// `"USD 19.99"`: the code, then the figure, as payers see it.
    pub fn display_with(&self, currency: Currency) -> String {
        let mut out = String::with_capacity(24);
        out.push_str(currency.code());
        out.push(' ');
        self.push_figure(currency, &mut out);
        out
    }

    fn push_figure(&self, currency: Currency, out: &mut String) {
        let exponent = u32::from(currency.exponent());
        let scale = 10u64.pow(exponent);
        let _ = write!(out, "{}", self.0 / scale);
        if exponent > 0 {
            out.push('.');
            let _ = text::write_digits(out, self.0 % scale, exponent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn amounts_are_formatted_with_the_currency_exponent() {
        let a = Amount::new(1999).unwrap();
        assert_eq!(a.display_with(cur("USD")), "USD 19.99");
        assert_eq!(a.display_with(cur("JPY")), "JPY 1999");
        assert_eq!(a.display_with(cur("KWD")), "KWD 1.999");
        assert_eq!(Amount::new(5).unwrap().format(cur("USD")), "0.05");
        assert_eq!(Amount::new(5).unwrap().format(cur("CLF")), "0.0005");
        assert_eq!(
            Amount::new(Amount::MAX).unwrap().format(cur("USD")),
            "10000000000.00"
        );
    }

    #[test]
    fn json_amounts_follow_the_contract() {
        assert_eq!(Amount::from_json(&json!(1999)), Ok(Amount(1999)));
        assert_eq!(Amount::from_json(&json!(1999.0)), Ok(Amount(1999)));
        assert_eq!(Amount::from_json(&json!(1e12)), Ok(Amount(Amount::MAX)));
        assert_eq!(
            Amount::from_json(&json!(19.99)),
            Err(AmountError::NotAnInteger)
        );
        assert_eq!(
            Amount::from_json(&json!("1999")),
            Err(AmountError::NotAnInteger)
        );
        assert_eq!(Amount::from_json(&json!(0)), Err(AmountError::OutOfRange));
        assert_eq!(Amount::from_json(&json!(-1)), Err(AmountError::OutOfRange));
        assert_eq!(
            Amount::from_json(&json!(-1.5)),
            Err(AmountError::NotAnInteger)
        );
        assert_eq!(
            Amount::from_json(&json!(1e12 + 1.0)),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(
            Amount::from_json(&json!(1e300)),
            Err(AmountError::OutOfRange)
        );
        let exact = |text: &str| Amount::from_json(&serde_json::from_str(text).unwrap());
        assert_eq!(
            exact("1999.0000000000000001"),
            Err(AmountError::NotAnInteger)
        );
        assert_eq!(exact("0.99999999999999999"), Err(AmountError::NotAnInteger));
        assert_eq!(exact("1000000000000.00001"), Err(AmountError::NotAnInteger));
        assert_eq!(exact("1000000000001"), Err(AmountError::OutOfRange));
        assert_eq!(exact("1999.000"), Ok(Amount(1999)));
    }
}
