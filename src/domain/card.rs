use super::has_control_chars;
use std::fmt;

/// The four fields of the payer's card form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardField {
    CardholderName,
    CardNumber,
    Expiry,
    Cvc,
}

impl CardField {
    /// The form field's name, as the HTML form and the contract spell it.
    pub fn name(&self) -> &'static str {
        match self {
            CardField::CardholderName => "cardholderName",
            CardField::CardNumber => "cardNumber",
            CardField::Expiry => "expiry",
            CardField::Cvc => "cvc",
        }
    }
}

/// One problem with one field, with a message fit to show the payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError {
    pub field: CardField,
    pub message: &'static str,
}

/// A card number: 12–19 digits passing the Luhn check. Spaces and dashes typed by the
/// payer are dropped. Its `Debug` shows only the last four digits; the full number is
/// never stored, logged or echoed.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let digits: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if digits.is_empty() {
            return Err("Enter your card number.");
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) || !(12..=19).contains(&digits.len()) {
            return Err("Card number must be 12 to 19 digits.");
        }
        if !luhn_valid(&digits) {
            return Err("Card number is not valid.");
        }
        Ok(CardNumber(digits))
    }

    /// The digits only, for the payment processor.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The last four digits, the only part of a card paylink keeps.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber(…{})", self.last4())
    }
}

fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A complete, valid card as typed into the pay form. `Debug` redacts everything but the
/// last four digits.
#[derive(Clone)]
pub struct CardDetails {
    pub cardholder_name: String,
    pub number: CardNumber,
    pub expiry_month: u8,
    pub expiry_year: u16,
    cvc: String,
}

impl fmt::Debug for CardDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardDetails")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

impl CardDetails {
    /// Parses the four form fields. `today` is (year, month) and decides whether the expiry
    /// is in the past: a card is good through the last day of its expiry month.
    /// Every field with a problem is reported, so the form can mark them all at once.
    pub fn parse(
        cardholder_name: Option<&str>,
        card_number: Option<&str>,
        expiry: Option<&str>,
        cvc: Option<&str>,
        today: (u16, u8),
    ) -> Result<Self, Vec<CardError>> {
        let mut errors = Vec::new();
        let mut fail = |field, message| errors.push(CardError { field, message });

        let name = cardholder_name.map(str::trim).unwrap_or("");
        if name.is_empty() {
            fail(CardField::CardholderName, "Enter the name on the card.");
        } else if name.chars().count() > 100 || has_control_chars(name) {
            fail(CardField::CardholderName, "Name on the card is not valid.");
        }

        let number = match CardNumber::parse(card_number.unwrap_or("")) {
            Ok(n) => Some(n),
            Err(message) => {
                fail(CardField::CardNumber, message);
                None
            }
        };

        let exp = match parse_expiry(expiry.unwrap_or("").trim()) {
            None => {
                fail(CardField::Expiry, "Enter the expiry date as MM/YY.");
                None
            }
            Some((year, month)) if (year, month) < today => {
                fail(CardField::Expiry, "This card has expired.");
                None
            }
            Some(ym) => Some(ym),
        };

        let cvc = cvc.unwrap_or("").trim();
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            fail(CardField::Cvc, "Security code must be 3 or 4 digits.");
        }

        match (number, exp) {
            (Some(number), Some((expiry_year, expiry_month))) if errors.is_empty() => {
                Ok(CardDetails {
                    cardholder_name: name.to_owned(),
                    number,
                    expiry_month,
                    expiry_year,
                    cvc: cvc.to_owned(),
                })
            }
            _ => Err(errors),
        }
    }

    /// The security code, for the payment processor only.
    pub fn cvc(&self) -> &str {
        &self.cvc
    }
}

/// `MM/YY` (spaces around the slash allowed) → (20YY, MM).
fn parse_expiry(s: &str) -> Option<(u16, u8)> {
    let (mm, yy) = s.split_once('/')?;
    let (mm, yy) = (mm.trim(), yy.trim());
    if mm.len() != 2 || yy.len() != 2 {
        return None;
    }
    if !mm.bytes().chain(yy.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month: u8 = mm.parse().ok()?;
    let year: u16 = yy.parse().ok()?;
    (1..=12).contains(&month).then_some((2000 + year, month))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (u16, u8) = (2026, 12);

    fn parse(number: &str, expiry: &str, cvc: &str) -> Result<CardDetails, Vec<CardError>> {
        CardDetails::parse(
            Some("Ada Lovelace"),
            Some(number),
            Some(expiry),
            Some(cvc),
            TODAY,
        )
    }

    fn fields(r: Result<CardDetails, Vec<CardError>>) -> Vec<CardField> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn the_test_cards_of_the_contract_are_luhn_valid() {
        for n in [
            "4242 4242 4242 4242",
            "4000 0000 0000 0002",
            "4000-0000-0000-9995",
        ] {
            assert!(parse(n, "12/30", "123").is_ok(), "{n}");
        }
    }

    #[test]
    fn bad_cards_name_the_field_that_is_wrong() {
        assert_eq!(
            fields(parse("4242 4242 4242 4241", "12/30", "123")),
            [CardField::CardNumber]
        );
        assert_eq!(
            fields(parse("4242abcd42424242", "12/30", "123")),
            [CardField::CardNumber]
        );
        assert_eq!(fields(parse("42", "12/30", "123")), [CardField::CardNumber]);
        assert_eq!(
            fields(parse("4242424242424242", "11/26", "123")),
            [CardField::Expiry]
        );
        assert_eq!(
            fields(parse("4242424242424242", "13/30", "123")),
            [CardField::Expiry]
        );
        assert_eq!(
            fields(parse("4242424242424242", "1230", "123")),
            [CardField::Expiry]
        );
        assert_eq!(
            fields(parse("4242424242424242", "12/30", "12")),
            [CardField::Cvc]
        );
        assert_eq!(
            fields(parse("", "", "")),
            [CardField::CardNumber, CardField::Expiry, CardField::Cvc]
        );
        let no_name = CardDetails::parse(
            None,
            Some("4242424242424242"),
            Some("12/30"),
            Some("123"),
            TODAY,
        );
        assert_eq!(fields(no_name), [CardField::CardholderName]);
    }

    #[test]
    fn a_card_is_good_through_its_expiry_month() {
        assert!(parse("4242424242424242", "12/26", "123").is_ok());
        assert!(parse("4242424242424242", "12 / 26", "123").is_ok());
    }

    #[test]
    fn debug_output_shows_only_the_last_four_digits() {
        let card = parse("4242 4242 4242 4242", "12/30", "987").unwrap();
        let shown = format!("{card:?}");
        assert!(shown.contains("4242") && !shown.contains("42424242") && !shown.contains("987"));
        assert_eq!(card.number.last4(), "4242");
    }
}
