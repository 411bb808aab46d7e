//! `CardDetails::parse` on any four form fields and any "today": never panics, and what it
//! accepts is a Luhn-valid 12–19 digit number, an expiry month not before today and a
//! 3–4 digit code. `CardNumber::parse` on its own likewise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::domain::{CardDetails, CardNumber};

fn luhn_digits(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                (2 * d) / 10 + (2 * d) % 10
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10).then_some(digits)
}

type Form<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    u16,
    u8,
);

fuzz_target!(|form: Form<'_>| {
    let (name, number, expiry, cvc, year, month) = form;
    if let Some(number) = number {
        let parsed = CardNumber::parse(number)
            .ok()
            .map(|n| n.digits().to_owned());
        assert_eq!(parsed, luhn_digits(number), "{number:?}");
    }
    match CardDetails::parse(name, number, expiry, cvc, (year, month)) {
        Ok(card) => {
            let digits = card.number.digits();
            assert_eq!(Some(digits.to_owned()), luhn_digits(number.unwrap_or("")));
            assert_eq!(card.number.last4(), &digits[digits.len() - 4..]);
            assert!((1..=12).contains(&card.expiry_month));
            assert!((card.expiry_year, card.expiry_month) >= (year, month));
            assert!((3..=4).contains(&card.cvc().len()));
            assert!(!card.cardholder_name.is_empty());
            assert!(!format!("{card:?}").contains(digits));
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let mut fields: Vec<_> = errors.iter().map(|e| e.field.name()).collect();
            let reported = fields.len();
            fields.dedup();
            assert_eq!(fields.len(), reported, "a field reported twice");
        }
    }
});
