//! Property tests (issue #5, bad input everywhere): every parser on arbitrary and on
//! generated-valid input, and the HTTP surface on arbitrary requests. Each property states
//! the contract as an oracle written independently of the code under test.
//!
//! Case counts are fixed per property (see `cases`) so the whole file stays well under half
//! a minute in a debug build; `PROPTEST_CASES` raises all of them for a longer soak.

use crate::helpers::{ACME_KEY, AppOptions, Backend, GLOBEX_KEY, TestApp, spawn_app_with};
use paylink::domain::{
    Amount, AmountError, CardDetails, CardField, CardNumber, Currency, Description,
    DescriptionError, MerchantId, OrderId, OrderIdError, json_whole_number,
};
use paylink::merchants::{Merchants, api_key_digest};
use paylink::session::{PaymentToken, TokenDigest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Duration;

/// `n` cases, unless `PROPTEST_CASES` asks for more.
fn cases(n: u32) -> Config {
    let from_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Config {
        cases: n.max(from_env),
        // A failure prints its minimal input; no regression files appear in the tree
        // (found cases become named tests instead).
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings a hostile client or a careless merchant might send: arbitrary Unicode, plus
/// ASCII soup and control characters, which `any::<String>()` alone rarely produces.
fn junk_string() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f} a-z]{0,20}",
        "\\PC{0,40}",
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Payment token
// ---------------------------------------------------------------------------------------

fn is_canonical_token(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn token_parse_accepts_exactly_64_lowercase_hex(
        s in prop_oneof![
            junk_string(),
            "[0-9a-f]{64}",
            "[0-9a-fA-F]{62,66}",
            "[0-9a-g]{64}",
            "[0-9a-f]{63}[ \\n\\t\\u{0}é]",
            "[ \\t]?[0-9a-f]{64}[ \\t\\n]?",
        ]
    ) {
        prop_assert_eq!(PaymentToken::parse(&s).is_ok(), is_canonical_token(&s), "{:?}", s);
    }

    #[test]
    fn token_with_one_character_replaced_by_a_non_lowercase_hex_one_is_rejected(
        bytes in any::<[u8; 32]>(),
        position in 0usize..64,
        replacement in "[^0-9a-f]",
    ) {
        let good = hex::encode(bytes);
        prop_assert!(PaymentToken::parse(&good).is_ok());
        let mut bad: Vec<char> = good.chars().collect();
        let replacement = replacement.chars().next().unwrap();
        bad[position] = replacement;
        let bad: String = bad.into_iter().collect();
        prop_assert!(PaymentToken::parse(&bad).is_err(), "{:?}", bad);
    }

    #[test]
    fn any_32_bytes_as_lowercase_hex_round_trip_through_parse_and_digest(bytes in any::<[u8; 32]>()) {
        let text = hex::encode(bytes);
        let token = PaymentToken::parse(&text).unwrap();
        prop_assert_eq!(token.expose(), text.as_str());
        let digest = token.digest();
        prop_assert_eq!(TokenDigest::from_hex(&digest.to_hex()), Some(digest));
        prop_assert_eq!(digest.token_ref().to_string(), crate::helpers::token_ref(&text));
        let shown = format!("{:?}", token);
        prop_assert!(!shown.contains(&text));
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn generated_tokens_parse_back_to_themselves(_case in 0u8..1) {
        let token = PaymentToken::generate().unwrap();
        prop_assert!(is_canonical_token(token.expose()));
        let parsed = PaymentToken::parse(token.expose()).unwrap();
        prop_assert_eq!(&parsed, &token);
        prop_assert_eq!(parsed.digest(), token.digest());
    }
}

// ---------------------------------------------------------------------------------------
// Order id and description
// ---------------------------------------------------------------------------------------

/// Characters the payer page must never show raw: C0, DEL and C1 controls.
const CONTROL_CHARS: &[char] = &[
    '\0', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}',
];

/// Printable characters of 1 to 4 bytes, so length is counted in characters, not bytes.
fn printable_text(min: usize, max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(
        prop_oneof![
            "[ -~]",
            Just("é".to_owned()),
            Just("日".to_owned()),
            Just("🎉".to_owned()),
            Just("\u{200b}".to_owned()),
        ],
        min..=max,
    )
    .prop_map(|chars| chars.concat())
    .boxed()
}

fn with_a_control_char(base: String, at: usize, which: usize) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    let at = at % (chars.len() + 1);
    chars.insert(at, CONTROL_CHARS[which % CONTROL_CHARS.len()]);
    chars.into_iter().collect()
}

fn expected_order_id(s: &str) -> Result<(), OrderIdError> {
    let len = s.chars().count();
    if !(1..=128).contains(&len) {
        Err(OrderIdError::Length)
    } else if s
        .chars()
        .any(|c| CONTROL_CHARS.contains(&c) || c.is_control())
    {
        Err(OrderIdError::ControlCharacter)
    } else {
        Ok(())
    }
}

fn expected_description(s: &str) -> Result<(), DescriptionError> {
    if s.chars().count() > 200 {
        Err(DescriptionError::TooLong)
    } else if s.chars().any(char::is_control) {
        Err(DescriptionError::ControlCharacter)
    } else {
        Ok(())
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn order_id_accepts_1_to_128_printable_characters(
        s in prop_oneof![junk_string(), printable_text(0, 140)]
    ) {
        let parsed = OrderId::parse(&s);
        prop_assert_eq!(parsed.as_ref().map(|_| ()).map_err(|e| e.to_string()), expected_order_id(&s).map_err(|e| e.to_string()), "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_ref(), s.as_str());
        }
    }

    #[test]
    fn order_id_with_a_control_character_anywhere_is_rejected(
        base in printable_text(0, 127), at in any::<usize>(), which in any::<usize>()
    ) {
        let s = with_a_control_char(base, at, which);
        prop_assert_eq!(OrderId::parse(&s), Err(OrderIdError::ControlCharacter), "{:?}", s);
    }

    #[test]
    fn description_accepts_up_to_200_printable_characters(
        s in prop_oneof![junk_string(), printable_text(0, 210)]
    ) {
        let parsed = Description::parse(&s);
        prop_assert_eq!(parsed.as_ref().map(|_| ()).map_err(|e| e.to_string()), expected_description(&s).map_err(|e| e.to_string()), "{:?}", s);
        if let Ok(d) = parsed {
            prop_assert_eq!(d.as_ref(), s.as_str());
        }
    }

    #[test]
    fn description_with_a_control_character_anywhere_is_rejected(
        base in printable_text(0, 199), at in any::<usize>(), which in any::<usize>()
    ) {
        let s = with_a_control_char(base, at, which);
        prop_assert_eq!(Description::parse(&s), Err(DescriptionError::ControlCharacter), "{:?}", s);
    }
}

// ---------------------------------------------------------------------------------------
// Amount
// ---------------------------------------------------------------------------------------

const MAX_AMOUNT: u64 = 1_000_000_000_000;

/// Any JSON value: scalars of every kind (numbers across the whole i64/u64/f64 range,
/// whole floats in and around the amount range) and nested arrays and objects.
fn arb_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_json_number(),
        junk_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn arb_json_number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0..=MAX_AMOUNT + 2).prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        // Whole numbers written as floats, in and just outside the range.
        (0..=MAX_AMOUNT + 2).prop_map(|n| json!(n as f64)),
        (-3i64..=3).prop_map(|n| json!(n as f64)),
        // Halves and small fractions near whole numbers.
        (0..=MAX_AMOUNT).prop_map(|n| json!(n as f64 + 0.5)),
        (1u64..=100_000).prop_map(|n| json!(n as f64 + 0.001)),
        prop::sample::select(vec![
            -0.0,
            1e12,
            1e12 + 1.0,
            1e15,
            1e300,
            5e-324,
            1.8446744073709552e19
        ])
        .prop_map(|f| json!(f)),
    ]
    .boxed()
}

/// The contract's rule, stated on the number's mathematical value.
fn expected_amount(value: &Value) -> Result<u64, AmountError> {
    let Some(number) = value.as_number() else {
        return Err(AmountError::NotAnInteger);
    };
    if let Some(n) = number.as_u64() {
        return if (1..=MAX_AMOUNT).contains(&n) {
            Ok(n)
        } else {
            Err(AmountError::OutOfRange)
        };
    }
    if number.as_i64().is_some() {
        // A negative integer.
        return Err(AmountError::OutOfRange);
    }
    let f = number
        .as_f64()
        .expect("a JSON number without arbitrary precision is an f64");
    if f.fract() != 0.0 {
        Err(AmountError::NotAnInteger)
    } else if (1.0..=MAX_AMOUNT as f64).contains(&f) {
        Ok(f as u64)
    } else {
        Err(AmountError::OutOfRange)
    }
}

/// One whole number written the many ways JSON allows: `1999`, `1999.0`, `1.999e3`,
/// `19990e-1`, `1999E+0`, `1999.000`.
fn spellings_of(n: u64) -> Vec<String> {
    let digits = n.to_string();
    let (head, tail) = digits.split_at(1);
    let exp = tail.len();
    let scientific = if tail.is_empty() {
        format!("{head}e0")
    } else {
        format!("{head}.{tail}e{exp}")
    };
    vec![
        digits.clone(),
        format!("{digits}.0"),
        format!("{digits}.000"),
        scientific,
        format!("{digits}0e-1"),
        format!("{digits}E+0"),
        format!("{digits}00E-2"),
    ]
}

/// Reads `Amount::format` output back into minor units, given the currency's exponent.
fn minor_units_of(formatted: &str, exponent: u8) -> Option<u64> {
    let (int, frac) = match formatted.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (formatted, ""),
    };
    if frac.len() != usize::from(exponent) || int.is_empty() {
        return None;
    }
    if int.len() > 1 && int.starts_with('0') {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = 10u64.pow(u32::from(exponent));
    let frac = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()?
    };
    int.parse::<u64>()
        .ok()?
        .checked_mul(scale)?
        .checked_add(frac)
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn amount_from_json_accepts_exactly_whole_numbers_from_1_to_10_pow_12(
        value in prop_oneof![arb_json_number(), arb_json()]
    ) {
        let got = Amount::from_json(&value).map(|a| a.minor_units());
        prop_assert_eq!(got, expected_amount(&value), "{}", value);
    }

    #[test]
    fn amount_written_any_json_way_reads_as_the_same_minor_units(
        n in prop_oneof![1..=MAX_AMOUNT, 1u64..=10_000, Just(MAX_AMOUNT)],
        pick in any::<prop::sample::Index>(),
    ) {
        let spellings = spellings_of(n);
        let text = pick.get(&spellings);
        let value: Value = serde_json::from_str(text).unwrap();
        prop_assert_eq!(Amount::from_json(&value).map(|a| a.minor_units()), Ok(n), "{}", text);
        let negative: Value = serde_json::from_str(&format!("-{text}")).unwrap();
        prop_assert_eq!(Amount::from_json(&negative), Err(AmountError::OutOfRange), "-{}", text);
        let quoted = Value::String(text.clone());
        prop_assert_eq!(Amount::from_json(&quoted), Err(AmountError::NotAnInteger));
    }

    #[test]
    fn amount_with_a_fraction_is_rejected_as_not_an_integer(
        n in 0..MAX_AMOUNT, frac in prop::sample::select(vec!["5", "25", "1", "001", "999"])
    ) {
        let text = format!("{n}.{frac}");
        let value: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(Amount::from_json(&value), Err(AmountError::NotAnInteger), "{}", text);
    }

    /// The contract's JSON is text: `1999.0000000000000001` is a fraction even though the
    /// nearest double is 1999.0, and `0.99999999999999999` is below 1. The same rule reads
    /// `ttlSeconds`, so `json_whole_number` must not call such a number whole either.
    #[test]
    fn amount_with_a_fraction_finer_than_a_double_is_still_a_fraction(
        n in prop_oneof![0..=MAX_AMOUNT, Just(0u64), Just(1999u64), Just(MAX_AMOUNT)],
        zeros in 10usize..24,
        last in 1u8..10,
        below in any::<bool>(),
    ) {
        // n + 0.00…0d, or just below n + 1 as 0.99…9 (n.99…9).
        let text = if below {
            format!("{n}.{}", "9".repeat(zeros + 2))
        } else {
            format!("{n}.{}{last}", "0".repeat(zeros))
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(Amount::from_json(&value), Err(AmountError::NotAnInteger), "{}", text);
        prop_assert_eq!(json_whole_number(&value), None, "{}", text);
    }

    #[test]
    fn amount_formatting_never_panics_and_reads_back_to_the_same_minor_units(
        n in prop_oneof![1..=MAX_AMOUNT, 1u64..=100_000, Just(1u64), Just(MAX_AMOUNT)],
        currency in any::<prop::sample::Index>(),
    ) {
        let currency = *currency.get(known_currencies());
        let amount = Amount::new(n).unwrap();
        let formatted = amount.format(currency);
        prop_assert_eq!(
            minor_units_of(&formatted, currency.exponent()),
            Some(n),
            "{} formatted as {:?} with exponent {}",
            n,
            formatted,
            currency.exponent()
        );
        prop_assert_eq!(
            amount.display_with(currency),
            format!("{} {}", currency.code(), formatted)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Currency
// ---------------------------------------------------------------------------------------

/// Every currency `Currency::parse` knows, found by asking it about all 17,576 upper-case
/// three-letter codes (so the test does not copy the table it checks).
fn known_currencies() -> &'static [Currency] {
    static KNOWN: OnceLock<Vec<Currency>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = Vec::new();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    if let Ok(currency) = Currency::parse(&code) {
                        assert_eq!(currency.code(), code);
                        known.push(currency);
                    }
                }
            }
        }
        known
    })
}

#[test]
fn the_currency_table_holds_the_chargeable_iso_4217_codes_only() {
    let known = known_currencies();
    assert!(known.len() > 150, "only {} currencies known", known.len());
    for (code, exponent) in [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4)] {
        let c = known.iter().find(|c| c.code() == code);
        assert_eq!(c.map(Currency::exponent), Some(exponent), "{code}");
    }
    // Metals, testing and no-currency codes have no minor unit: they cannot be charged.
    for code in [
        "XAU", "XAG", "XPT", "XPD", "XDR", "XTS", "XXX", "XBA", "XSU", "XUA",
    ] {
        assert!(known.iter().all(|c| c.code() != code), "{code}");
    }
    assert!(known.iter().all(|c| [0, 2, 3, 4].contains(&c.exponent())));
}

fn expected_currency(s: &str) -> Option<String> {
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let upper = s.to_ascii_uppercase();
    known_currencies()
        .iter()
        .any(|c| c.code() == upper)
        .then_some(upper)
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn currency_parses_any_case_of_a_known_code_to_upper_case(
        currency in any::<prop::sample::Index>(), case_mask in 0u8..8
    ) {
        let known = *currency.get(known_currencies());
        let variant: String = known
            .code()
            .chars()
            .enumerate()
            .map(|(i, c)| if case_mask & (1 << i) != 0 { c.to_ascii_lowercase() } else { c })
            .collect();
        let parsed = Currency::parse(&variant).unwrap();
        prop_assert_eq!(parsed, known);
        prop_assert_eq!(parsed.code(), known.code());
        prop_assert_eq!(parsed.to_string(), known.code());
    }

    #[test]
    fn currency_parse_of_any_string_never_panics_and_knows_only_the_table(
        s in prop_oneof![junk_string(), "[a-zA-Z]{3}", "[a-zA-Z]{2,4}", "[a-zA-Zé ]{3}", "\\PC{3}"]
    ) {
        let got = Currency::parse(&s).ok().map(|c| c.code().to_owned());
        prop_assert_eq!(got, expected_currency(&s), "{:?}", s);
    }
}

// ---------------------------------------------------------------------------------------
// Card number and card details
// ---------------------------------------------------------------------------------------

/// An independent Luhn check: double every second digit from the right.
fn luhn_ok(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                (d * 2) / 10 + (d * 2) % 10
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Appends the check digit that makes `payload` Luhn-valid.
fn with_check_digit(mut payload: Vec<u8>) -> Vec<u8> {
    payload.push(0);
    let check = (0..10u8)
        .find(|&d| {
            *payload.last_mut().unwrap() = d;
            luhn_ok(&payload)
        })
        .unwrap();
    *payload.last_mut().unwrap() = check;
    payload
}

fn digits_text(digits: &[u8]) -> String {
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

/// A Luhn-valid card number of 12 to 19 digits.
fn valid_card_digits() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(0u8..10, 11..=18)
        .prop_map(with_check_digit)
        .boxed()
}

/// The digits with runs of spaces and dashes put anywhere, as payers type them.
fn with_separators(digits: &str, seps: &[(usize, &str)]) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        for (at, sep) in seps {
            if *at % (digits.len() + 1) == i {
                out.push_str(sep);
            }
        }
        out.push(c);
    }
    for (at, sep) in seps {
        if *at % (digits.len() + 1) == digits.len() {
            out.push_str(sep);
        }
    }
    out
}

fn expected_card_number(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| *c != ' ' && *c != '-').collect();
    let ok = (12..=19).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && luhn_ok(&digits.bytes().map(|b| b - b'0').collect::<Vec<_>>());
    ok.then_some(digits)
}

const TODAY: (u16, u8) = (2026, 6);

fn card_with(number: &str, expiry: &str) -> Result<CardDetails, Vec<CardField>> {
    CardDetails::parse(
        Some("Ada Lovelace"),
        Some(number),
        Some(expiry),
        Some("123"),
        TODAY,
    )
    .map_err(|errors| errors.into_iter().map(|e| e.field).collect())
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn a_luhn_valid_number_parses_whatever_spaces_and_dashes_it_has(
        digits in valid_card_digits(),
        seps in prop::collection::vec((any::<usize>(), "[ -]{1,3}"), 0..6),
    ) {
        let plain = digits_text(&digits);
        let seps: Vec<(usize, &str)> = seps.iter().map(|(at, s)| (*at, s.as_str())).collect();
        let typed = with_separators(&plain, &seps);
        let number = CardNumber::parse(&typed);
        prop_assert!(number.is_ok(), "{:?}", typed);
        let number = number.unwrap();
        prop_assert_eq!(number.digits(), plain.as_str());
        prop_assert_eq!(number.last4(), &plain[plain.len() - 4..]);
        let shown = format!("{number:?}");
        prop_assert!(!shown.contains(&plain), "Debug shows the number: {}", shown);
    }

    #[test]
    fn a_luhn_valid_number_with_one_digit_changed_is_rejected(
        digits in valid_card_digits(), position in any::<prop::sample::Index>(), delta in 1u8..10
    ) {
        let mut changed = digits.clone();
        let i = position.index(changed.len());
        changed[i] = (changed[i] + delta) % 10;
        let text = digits_text(&changed);
        prop_assert_eq!(CardNumber::parse(&text).err(), Some("Card number is not valid."), "{}", text);
    }

    #[test]
    fn a_luhn_valid_number_of_the_wrong_length_is_rejected(
        digits in prop_oneof![
            prop::collection::vec(0u8..10, 0..=10),
            prop::collection::vec(0u8..10, 19..=30),
        ].prop_map(with_check_digit)
    ) {
        let text = digits_text(&digits);
        prop_assert!(CardNumber::parse(&text).is_err(), "{}", text);
    }

    #[test]
    fn card_number_parse_of_any_string_never_panics_and_follows_luhn(
        s in prop_oneof![
            junk_string(),
            "[0-9 -]{0,25}",
            "[0-9]{12,19}",
            "[0-9٠-٩０-９a -]{10,22}",
        ]
    ) {
        let got = CardNumber::parse(&s).ok().map(|n| n.digits().to_owned());
        prop_assert_eq!(got, expected_card_number(&s), "{:?}", s);
    }

    #[test]
    fn expiry_is_mm_slash_yy_and_good_through_its_month(
        year in 2000u16..=2099,
        month in 0u8..=13,
        spaces in (0usize..3, 0usize..3, 0usize..2, 0usize..2),
    ) {
        let (before, after, outer_left, outer_right) = spaces;
        let expiry = format!(
            "{}{:02}{}/{}{:02}{}",
            " ".repeat(outer_left),
            month,
            " ".repeat(before),
            " ".repeat(after),
            year % 100,
            " ".repeat(outer_right),
        );
        let valid = (1..=12).contains(&month) && (year, month) >= TODAY;
        match card_with("4242 4242 4242 4242", &expiry) {
            Ok(card) => {
                prop_assert!(valid, "{:?} accepted", expiry);
                prop_assert_eq!((card.expiry_year, card.expiry_month), (year, month));
            }
            Err(fields) => {
                prop_assert!(!valid, "{:?} rejected", expiry);
                prop_assert_eq!(fields, vec![CardField::Expiry]);
            }
        }
    }

    #[test]
    fn expiry_in_any_other_shape_is_rejected(
        expiry in prop_oneof![
            "[0-9]{1}/[0-9]{2}",
            "[0-9]{2}/[0-9]{1}",
            "[0-9]{2}/[0-9]{4}",
            "[0-9]{3}/[0-9]{2}",
            "[0-9]{4}",
            "[0-9]{2}-[0-9]{2}",
            "[0-9]{2}//[0-9]{2}",
            "[+-][0-9]/[0-9]{2}",
        ]
    ) {
        prop_assert_eq!(card_with("4242424242424242", &expiry).err(), Some(vec![CardField::Expiry]), "{:?}", expiry);
    }

    #[test]
    fn card_details_parse_of_any_form_never_panics_and_reports_each_field_once(
        name in prop::option::of(junk_string()),
        number in prop::option::of(prop_oneof![junk_string(), "[0-9 -]{12,23}"]),
        expiry in prop::option::of(prop_oneof![junk_string(), "[0-9 ]{1,3}/[0-9 ]{1,3}"]),
        cvc in prop::option::of(prop_oneof![junk_string(), "[0-9 ]{2,5}"]),
        today in (0u16..=u16::MAX, 0u8..=u8::MAX),
    ) {
        let parsed = CardDetails::parse(
            name.as_deref(), number.as_deref(), expiry.as_deref(), cvc.as_deref(), today,
        );
        match parsed {
            Ok(card) => {
                prop_assert_eq!(Some(card.number.digits().to_owned()), expected_card_number(number.as_deref().unwrap()));
                prop_assert!((3..=4).contains(&card.cvc().len()));
                prop_assert!((1..=12).contains(&card.expiry_month));
                prop_assert!((card.expiry_year, card.expiry_month) >= today);
                prop_assert!(!card.cardholder_name.is_empty());
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                let fields: Vec<CardField> = errors.iter().map(|e| e.field).collect();
                let mut unique = fields.clone();
                unique.dedup();
                prop_assert_eq!(&unique, &fields, "a field reported twice");
                prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Merchant id and the merchants file
// ---------------------------------------------------------------------------------------

fn is_merchant_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A TOML basic string with every character escaped that needs it.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Fragments of merchants files, to build text that is nearly a merchants file.
const TOML_PIECES: &[&str] = &[
    "[[merchant]]\n",
    "[merchant]\n",
    "[[merchant]",
    "[[\n",
    "id = ",
    "name = ",
    "api_key_sha256 = ",
    "\"acme\"",
    "'acme'",
    "\"\"\"multi\nline\"\"\"",
    "\"Acme \\\"Tickets\\\"\"",
    "\"\\u00e9\"",
    "\"\\uD800\"",
    "\"\\U0010FFFF\"",
    "\"\\x41\"",
    "\"unterminated",
    "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
    "1",
    "1e999",
    "-0",
    "inf",
    "nan",
    "1979-05-27T07:32:00Z",
    "true",
    "[1, [2, [3]]]",
    "{ a = 1 }",
    "a.b.c = 1\n",
    "\n",
    "# comment\n",
    "\r\n",
    " ",
    "\t",
    "=",
    ",",
    "\u{0}",
    "\u{feff}",
];

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn merchant_id_is_1_to_64_of_lowercase_digits_underscore_dash(
        s in prop_oneof![
            junk_string(),
            "[a-z0-9_-]{1,64}",
            "[a-z0-9_-]{60,70}",
            "[a-zA-Z0-9_. /-]{1,10}",
            "[a-z]{0,5}[^a-z0-9_-][a-z]{0,5}",
        ]
    ) {
        let parsed = MerchantId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), is_merchant_id(&s), "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_ref(), s.as_str());
        }
    }

    #[test]
    fn merchants_parse_of_any_text_never_panics(
        text in prop_oneof![
            junk_string(),
            prop::collection::vec(prop::sample::select(TOML_PIECES), 0..40)
                .prop_map(|pieces| pieces.concat()),
        ]
    ) {
        if let Ok(merchants) = Merchants::parse(&text) {
            for m in merchants.all() {
                prop_assert!(is_merchant_id(m.id.as_ref()));
                prop_assert!(!m.name.trim().is_empty());
            }
        }
    }
}

/// One merchant of a generated merchants file.
#[derive(Debug, Clone)]
struct GeneratedMerchant {
    id: String,
    name: String,
    key: String,
    /// Order of the three fields in the table, and whether a comment precedes it.
    field_order: usize,
    comment: bool,
}

fn generated_merchants() -> BoxedStrategy<Vec<GeneratedMerchant>> {
    let name = prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9 .,&'\"<>\\\\-]{0,60}",
        "[ ]{0,3}\\PC{1,20}[a-z][ ]{0,3}",
        printable_text(1, 100).prop_filter("a name has a printable non-space", |s| {
            !s.trim().is_empty() && s.trim().chars().count() <= 100
        }),
    ];
    let key = prop_oneof!["[ -~]{1,64}", any::<String>(), "sk_[0-9a-f]{48}"];
    prop::collection::btree_map(
        "[a-z0-9_-]{1,64}",
        (name, key, 0usize..6, any::<bool>()),
        1..8,
    )
    .prop_map(|by_id| {
        by_id
            .into_iter()
            .map(
                |(id, (name, key, field_order, comment))| GeneratedMerchant {
                    id,
                    name,
                    key,
                    field_order,
                    comment,
                },
            )
            .collect()
    })
    .prop_filter(
        "names must trim to something",
        |ms: &Vec<GeneratedMerchant>| {
            let keys: std::collections::BTreeSet<&str> =
                ms.iter().map(|m| m.key.as_str()).collect();
            keys.len() == ms.len()
                && ms.iter().all(|m| {
                    let t = m.name.trim();
                    !t.is_empty() && t.chars().count() <= 100 && !t.chars().any(char::is_control)
                })
        },
    )
    .boxed()
}

fn merchants_file(merchants: &[GeneratedMerchant]) -> String {
    let mut text = String::new();
    for m in merchants {
        if m.comment {
            text.push_str("# a merchant\n\n");
        }
        text.push_str("[[merchant]]\n");
        let fields = [
            format!("id = {}\n", toml_str(&m.id)),
            format!("name = {}\n", toml_str(&m.name)),
            format!("api_key_sha256 = '{}'\n", api_key_digest(&m.key)),
        ];
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for i in orders[m.field_order % orders.len()] {
            text.push_str(&fields[i]);
        }
        text.push('\n');
    }
    text
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_generated_merchants_file_parses_and_each_key_authenticates_its_merchant(
        merchants in generated_merchants(), stranger in "[ -~]{0,40}"
    ) {
        let text = merchants_file(&merchants);
        let parsed = Merchants::parse(&text);
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), text);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.all().len(), merchants.len());
        for m in &merchants {
            let found = parsed.authenticate(&m.key);
            prop_assert!(found.is_some(), "key of {} does not authenticate", m.id);
            let found = found.unwrap();
            prop_assert_eq!(found.id.as_ref(), m.id.as_str());
            prop_assert_eq!(found.name.as_str(), m.name.trim());
        }
        if merchants.iter().all(|m| m.key != stranger) {
            prop_assert!(parsed.authenticate(&stranger).is_none());
        }
    }

    #[test]
    fn a_merchants_file_with_one_thing_wrong_is_refused(
        merchants in generated_merchants(),
        victim in any::<prop::sample::Index>(),
        fault in 0usize..6,
    ) {
        let mut broken = merchants.clone();
        let i = victim.index(broken.len());
        let text = match fault {
            0 => {
                broken[i].id = broken[i].id.to_uppercase() + "X";
                merchants_file(&broken)
            }
            1 => {
                broken[i].id = format!("{}.", broken[i].id);
                merchants_file(&broken)
            }
            2 => {
                let twin = broken[i].clone();
                broken.push(twin);
                merchants_file(&broken)
            }
            3 => {
                let digest = api_key_digest(&broken[i].key);
                merchants_file(&broken).replace(&digest, &digest.to_uppercase())
            }
            4 => {
                let digest = api_key_digest(&broken[i].key);
                merchants_file(&broken).replace(&digest, &digest[..63])
            }
            _ => {
                broken[i].name = " \t ".to_owned();
                merchants_file(&broken)
            }
        };
        prop_assert!(Merchants::parse(&text).is_err(), "fault {} accepted:\n{}", fault, text);
    }

    /// One key must name one merchant: were two merchants' digests equal, that key would
    /// act as whichever comes last in the file, on the other merchant's sessions.
    #[test]
    fn two_merchants_sharing_one_api_key_are_refused(
        merchants in generated_merchants().prop_filter("two merchants", |ms| ms.len() >= 2),
        pair in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
    ) {
        let mut shared = merchants.clone();
        let a = pair.0.index(shared.len());
        let b = (a + 1 + pair.1.index(shared.len() - 1)) % shared.len();
        shared[b].key = shared[a].key.clone();
        let text = merchants_file(&shared);
        prop_assert!(
            Merchants::parse(&text).is_err(),
            "{} and {} share one key and the file was accepted:\n{}",
            shared[a].id,
            shared[b].id,
            text
        );
    }
}

#[test]
fn deeply_nested_toml_is_refused_without_overflowing_the_stack() {
    for depth in [64, 1_000, 10_000] {
        let arrays = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let tables = format!("x = {}{}\n", "{ a = ".repeat(depth), "}".repeat(depth));
        let dotted = format!("{} = 1\n", vec!["a"; depth].join("."));
        for text in [arrays, tables, dotted] {
            assert!(Merchants::parse(&text).is_err(), "depth {depth}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP surface
// ---------------------------------------------------------------------------------------

const ADMIN_TOKEN: &str = "admin-token-for-properties";

/// Stands in a generated path for the token of a session created just before the request,
/// so payments, reads and revocations meet open sessions however many cases ran before.
const FRESH: &str = "{fresh}";

/// Replaces every [`FRESH`] in `path` with the token of a new open session of acme's.
async fn with_fresh_tokens(client: &reqwest::Client, address: &str, path: &str) -> String {
    let mut path = path.to_owned();
    while path.contains(FRESH) {
        let created: Value = client
            .post(format!("{address}/api/v1/sessions"))
            .bearer_auth(ACME_KEY)
            .json(&json!({"orderId": "fresh", "amount": 1999, "currency": "USD"}))
            .send()
            .await
            .expect("a session is created")
            .json()
            .await
            .expect("the created session is JSON");
        let token = created["token"].as_str().expect("a token").to_owned();
        path = path.replacen(FRESH, &token, 1);
    }
    path
}

/// An arbitrary request, as reqwest sends it.
#[derive(Debug, Clone)]
struct HttpCase {
    method: &'static str,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn percent_encoded(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// A path segment: real and random tokens, near-tokens, percent-encoded junk, dot
/// segments, Unicode and very long segments.
fn segment(tokens: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(FRESH.to_owned()),
        1 => prop::sample::select(tokens),
        1 => "[0-9a-f]{64}",
        1 => "[0-9a-fA-F]{0,70}",
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(|b| percent_encoded(&b)),
        1 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,30}",
        1 => prop::sample::select(vec![
            ".",
            "..",
            "%2e",
            "%2E%2e",
            "%2F",
            "%2f..%2f",
            "%00",
            "%FF",
            "%C0%AF",
            "%",
            "%zz",
            "%%",
            ";",
            "index.html",
            "countdown.js",
            "paylink.css",
            "..%2F..%2Fetc%2Fpasswd",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{1,12}",
        1 => (1usize..6000).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}

fn path(tokens: Vec<String>) -> BoxedStrategy<String> {
    let seg = segment(tokens);
    let query = prop::option::of("[a-zA-Z0-9=&%._-]{0,40}");
    let fixed = prop::sample::select(vec![
        "/",
        "/api/v1/sessions",
        "/api/v1/sessions/",
        "/api/v1/",
        "/api/",
        "/api",
        "/healthz",
        "/readyz",
        "/admin",
        "/admin/metrics",
        "/admin/login",
        "/admin/logout",
        "/static/",
        "/static/countdown.js",
        "/pay/",
    ])
    .prop_map(str::to_owned);
    (
        prop_oneof![
            2 => fixed,
            3 => seg.clone().prop_map(|s| format!("/api/v1/sessions/{s}")),
            3 => seg.clone().prop_map(|s| format!("/pay/{s}")),
            1 => seg.clone().prop_map(|s| format!("/static/{s}")),
            1 => seg.clone().prop_map(|s| format!("/admin/{s}")),
            1 => (seg.clone(), seg.clone()).prop_map(|(a, b)| format!("/api/{a}/{b}")),
            1 => (seg.clone(), seg).prop_map(|(a, b)| format!("/{a}/{b}")),
        ],
        query,
    )
        .prop_map(|(path, query)| match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        })
        .boxed()
}

fn authorization() -> BoxedStrategy<Option<Vec<u8>>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            8 => Just(format!("Bearer {ACME_KEY}").into_bytes()),
            1 => Just(format!("Bearer {GLOBEX_KEY}").into_bytes()),
            1 => Just(format!("bearer   {ACME_KEY}  ").into_bytes()),
            1 => Just(format!("Bearer {ADMIN_TOKEN}").into_bytes()),
            1 => Just(format!("Basic {ACME_KEY}").into_bytes()),
            1 => Just(ACME_KEY.as_bytes().to_vec()),
            1 => "Bearer [ -~]{0,80}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..60),
        ],
    )
    .boxed()
}

fn content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            4 => Just(b"application/json".to_vec()),
            1 => Just(b"application/json; charset=utf-8".to_vec()),
            1 => Just(b"APPLICATION/JSON;charset=\"latin-1\"".to_vec()),
            1 => Just(b"application/json;;;".to_vec()),
            2 => Just(b"application/x-www-form-urlencoded".to_vec()),
            1 => Just(b"text/plain".to_vec()),
            1 => Just(b"multipart/form-data; boundary=xyz".to_vec()),
            1 => "[ -~]{0,40}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..30),
        ],
    )
    .boxed()
}

fn extra_header() -> BoxedStrategy<(String, Vec<u8>)> {
    let value = prop_oneof![
        "[ -~]{0,60}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..60)
    ];
    prop_oneof![
        (
            Just("content-encoding".to_owned()),
            prop_oneof![
                prop::sample::select(vec![
                    "gzip", "br", "zstd", "deflate", "identity", "gzip, br", "x-nope"
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                value.clone(),
            ]
        ),
        (
            Just("accept-encoding".to_owned()),
            Just(b"gzip, br, zstd".to_vec())
        ),
        (
            Just("cookie".to_owned()),
            prop_oneof![Just(b"paylink_admin=00".to_vec()), value.clone(),]
        ),
        (
            Just("range".to_owned()),
            prop_oneof![
                Just(b"bytes=0-0".to_vec()),
                Just(b"bytes=99999-".to_vec()),
                value.clone()
            ]
        ),
        (Just("if-none-match".to_owned()), value.clone()),
        (Just("if-modified-since".to_owned()), value.clone()),
        (Just("x-forwarded-for".to_owned()), value.clone()),
        (Just("accept".to_owned()), value.clone()),
        ("x-[a-z-]{1,20}", value),
    ]
    .boxed()
}

/// A JSON object close to a valid create request, each field sometimes odd.
fn session_like_body() -> BoxedStrategy<Vec<u8>> {
    let field = |good: Value| prop_oneof![8 => Just(Some(good)), 1 => Just(None), 1 => arb_json().prop_map(Some)];
    (
        field(json!("ord_1")),
        prop_oneof![3 => field(json!(1999)), 1 => arb_json_number().prop_map(Some)],
        prop_oneof![3 => field(json!("usd")), 1 => "[a-zA-Z]{3}".prop_map(|c| Some(json!(c)))],
        field(json!(60)),
        field(json!("2 tickets")),
        prop_oneof![4 => Just(None), 1 => Just(Some(json!("acme"))), 1 => Just(Some(json!("globex"))), 1 => arb_json().prop_map(Some)],
        prop::collection::btree_map("[a-zA-Z]{1,10}", arb_json(), 0..3),
    )
        .prop_map(|(order_id, amount, currency, ttl, description, merchant, extra)| {
            let mut body: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [
                ("orderId", order_id),
                ("amount", amount),
                ("currency", currency),
                ("ttlSeconds", ttl),
                ("description", description),
                ("merchantId", merchant),
            ] {
                if let Some(value) = value {
                    body.insert(name.to_owned(), value);
                }
            }
            serde_json::to_vec(&Value::Object(body)).unwrap()
        })
    .boxed()
}

/// A card form, each field sometimes odd, urlencoded as a browser would.
fn card_form_body() -> BoxedStrategy<Vec<u8>> {
    let field = |good: &'static str| {
        prop::option::weighted(
            0.9,
            prop_oneof![3 => Just(good.to_owned()), 1 => junk_string()],
        )
    };
    (
        field("Ada Lovelace"),
        prop_oneof![
            field("4242 4242 4242 4242"),
            Just(Some("4000 0000 0000 0002".to_owned())),
            valid_card_digits().prop_map(|d| Some(digits_text(&d))),
        ],
        field("12/39"),
        field("123"),
    )
        .prop_map(|(name, number, expiry, cvc)| {
            let pairs: Vec<(&str, String)> = [
                ("cardholderName", name),
                ("cardNumber", number),
                ("expiry", expiry),
                ("cvc", cvc),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            serde_urlencoded::to_string(pairs).unwrap().into_bytes()
        })
        .boxed()
}

fn body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        2 => prop::collection::vec(any::<u8>(), 0..2048),
        3 => arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        6 => session_like_body(),
        3 => card_form_body(),
        1 => (1usize..16_000).prop_map(|n| format!("{{\"orderId\":\"o\",\"currency\":\"USD\",\"amount\":1{}}}", "0".repeat(n)).into_bytes()),
        1 => prop::sample::select(vec![
            "{\"orderId\":\"o\",\"currency\":\"USD\",\"amount\":1e999999}",
            "{\"orderId\":\"o\",\"currency\":\"USD\",\"amount\":-0}",
            "{\"orderId\":\"o\",\"currency\":\"USD\",\"amount\":1999.0,\"ttlSeconds\":1e400}",
            "{\"orderId\":\"o\",\"currency\":\"USD\",\"amount\":18446744073709551616}",
            "{\"orderId\":\"o\",\"currency\":\"USD\",\"amount\":1999,\"ttlSeconds\":-1e-400}",
            "{\"orderId\":\"\\ud800\",\"currency\":\"USD\",\"amount\":1}",
            "{\"orderId\":\"o\",\"orderId\":\"p\",\"currency\":\"USD\",\"amount\":1}",
            "\u{feff}{}",
            "null",
            "",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => (1usize..8000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        1 => (1usize..3000).prop_map(|d| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d)).into_bytes()),
        1 => (16_385usize..40_000).prop_map(|n| vec![b' '; n]),
    ]
    .boxed()
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// Half the cases are fully random; the other half aim a plausible body at a real route,
/// so validation, creation, payment and revocation are reached, not only the 404s.
fn http_case(tokens: Vec<String>) -> BoxedStrategy<HttpCase> {
    let seg = segment(tokens.clone());
    let method_path_body = prop_oneof![
        4 => (prop::sample::select(METHODS), path(tokens), body()),
        3 => (
            Just("POST"),
            Just("/api/v1/sessions".to_owned()),
            prop_oneof![3 => session_like_body(), 1 => body()],
        ),
        2 => (
            prop::sample::select(&["GET", "DELETE"][..]),
            seg.clone().prop_map(|s| format!("/api/v1/sessions/{s}")),
            body(),
        ),
        2 => (
            prop::sample::select(&["GET", "POST"][..]),
            seg.prop_map(|s| format!("/pay/{s}")),
            card_form_body(),
        ),
    ];
    (
        method_path_body,
        authorization(),
        content_type(),
        prop::collection::vec(extra_header(), 0..3),
    )
        .prop_map(|((method, path, body), auth, content_type, extra)| {
            let mut headers = extra;
            if let Some(auth) = auth {
                headers.push(("authorization".to_owned(), auth));
            }
            if let Some(ct) = content_type {
                headers.push(("content-type".to_owned(), ct));
            }
            HttpCase {
                method,
                path,
                headers,
                body,
            }
        })
        .boxed()
}

/// `{"error": {"code": "…", "message": "…"}}`, as every API error must be.
fn check_api_error_shape(
    status: u16,
    content_type: Option<&str>,
    text: &str,
) -> Result<(), String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("{status} under /api/ is not JSON ({e}): {text:?}"))?;
    let error = &value["error"];
    if !error["code"].is_string() || !error["message"].is_string() {
        return Err(format!(
            "{status} under /api/ lacks error.code/message: {text}"
        ));
    }
    if !content_type.is_some_and(|ct| ct.starts_with("application/json")) {
        return Err(format!(
            "{status} under /api/ has content type {content_type:?}"
        ));
    }
    Ok(())
}

/// Sends one case and checks the contract's promises for any input.
async fn check_http_case(
    client: reqwest::Client,
    address: String,
    case: HttpCase,
) -> Result<u16, TestCaseError> {
    let path = with_fresh_tokens(&client, &address, &case.path).await;
    let url = match reqwest::Url::parse(&format!("{address}{path}")) {
        Ok(url) => url,
        Err(_) => return Err(TestCaseError::reject("not a URL reqwest can send")),
    };
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &case.headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let response = client
        .request(method, url.clone())
        .headers(headers)
        .body(case.body.clone())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("no response (dropped connection?): {e:?}")))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response
        .text()
        .await
        .map_err(|e| TestCaseError::fail(format!("{status}: body cut off: {e:?}")))?;
    let served_path = url.path();

    prop_assert!(
        status < 500,
        "{} for {} {}: {}",
        status,
        case.method,
        served_path,
        text
    );
    let is_api = served_path.starts_with("/api/");
    if is_api && (400..500).contains(&status) && case.method != "HEAD" {
        check_api_error_shape(status, content_type.as_deref(), &text)
            .map_err(TestCaseError::fail)?;
    }
    // Any path /pay/<one segment> that GET reaches is a link: open (200) or not (410).
    let segments: Vec<&str> = served_path.split('/').collect();
    if case.method == "GET"
        && segments.len() == 3
        && segments[1] == "pay"
        && !segments[2].is_empty()
    {
        prop_assert!(
            status == 200 || status == 410,
            "GET {} answered {} (a malformed link is 410 Gone): {}",
            served_path,
            status,
            text
        );
    }
    Ok(status)
}

/// Starts one app (with its own store) for a whole property, on its own runtime, and makes
/// a few real sessions whose tokens the generators then use.
fn start_app(backend: Backend) -> (tokio::runtime::Runtime, TestApp, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(async {
        let mut options = AppOptions::new(backend);
        options.admin_token = Some(ADMIN_TOKEN.to_owned());
        spawn_app_with(options).await
    });
    let tokens = runtime.block_on(async {
        let mut tokens = Vec::new();
        for i in 0..6 {
            let created = app
                .create_session(
                    json!({"orderId": format!("ord_{i}"), "amount": 1999, "currency": "USD"}),
                )
                .await;
            tokens.push(created.token);
        }
        let globex = app
            .post_session_as(
                GLOBEX_KEY,
                &json!({"orderId": "g", "amount": 5, "currency": "JPY"}),
            )
            .await;
        tokens.push(globex.json()["token"].as_str().unwrap().to_owned());
        tokens
    });
    (runtime, app, tokens)
}

/// Runs `n` cases of `strategy` through `check`, one app for all of them, and prints how
/// often each status came back (`--nocapture` shows it) so a run's reach can be judged.
fn run_against_app<S, F, Fut>(
    backend: Backend,
    n: u32,
    strategy: impl Fn(Vec<String>) -> S,
    check: F,
) where
    S: Strategy,
    F: Fn(String, S::Value) -> Fut,
    Fut: Future<Output = Result<u16, TestCaseError>>,
{
    let (runtime, app, tokens) = start_app(backend);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = TestRunner::new(Config {
        max_global_rejects: 10_000,
        ..cases(n)
    });
    let result = runner.run(&strategy(tokens), |case| {
        let status = runtime.block_on(check(app.address.clone(), case))?;
        *statuses.lock().unwrap().entry(status).or_default() += 1;
        Ok(())
    });
    eprintln!("{backend:?}: statuses {:?}", statuses.lock().unwrap());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn no_request_gets_a_5xx_or_a_dropped_connection_on_the_embedded_store() {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    run_against_app(Backend::Memory, 400, http_case, |address, case| {
        check_http_case(client.clone(), address, case)
    });
}

#[test]
fn no_request_gets_a_5xx_or_a_dropped_connection_on_redis() {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    run_against_app(Backend::Redis, 200, http_case, |address, case| {
        check_http_case(client.clone(), address, case)
    });
}

// Raw HTTP/1.1: request-targets exactly as written (reqwest, like browsers, would resolve
// dot segments and re-encode), chunked uploads, and methods outside the usual seven.

/// A request written byte for byte onto the socket.
#[derive(Debug, Clone)]
struct RawCase {
    method: &'static str,
    target: String,
    authorization: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// Send the body chunked, in this many pieces, instead of with Content-Length.
    chunks: Option<usize>,
}

/// Characters a request-target may hold without the HTTP parser refusing the request
/// before the application sees it.
fn raw_piece(tokens: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "api", "v1", "sessions", "pay", "static", "admin", "metrics", "healthz", "", ".",
            "..", "%2e", "%2E%2e", ".%2e", "%2f", "%2F..", "%00", "%ff", "%FF%FE", "%", "%zz",
            "%C0%AE%C0%AE", "~", ";x=1", "countdown.js", "@", ":",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(tokens),
        2 => Just(FRESH.to_owned()),
        1 => "[0-9a-f]{64}",
        1 => "[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,24}",
        1 => (1usize..4000).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

/// Mostly one piece after a real route's prefix (so the route's handler, not the 404, is
/// what answers), sometimes any sequence of pieces.
fn raw_target(tokens: Vec<String>) -> BoxedStrategy<String> {
    let piece = raw_piece(tokens);
    let path = prop_oneof![
        3 => piece.clone().prop_map(|p| format!("/api/v1/sessions/{p}")),
        3 => piece.clone().prop_map(|p| format!("/pay/{p}")),
        1 => Just("/api/v1/sessions".to_owned()),
        3 => (
            prop::sample::select(vec!["/", "/api/", "/api/v1/", "/static/", "//", "/pay/"]),
            prop::collection::vec(piece, 0..6),
        )
            .prop_map(|(prefix, pieces)| format!("{prefix}{}", pieces.join("/"))),
    ];
    (
        path,
        prop::option::weighted(0.2, "[A-Za-z0-9=&%._/?-]{0,30}"),
    )
        .prop_map(|(path, query)| match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        })
        .boxed()
}

fn raw_case(tokens: Vec<String>) -> BoxedStrategy<RawCase> {
    (
        prop_oneof![
            3 => prop::sample::select(&["GET", "POST", "DELETE"][..]),
            1 => prop::sample::select(&["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"][..]),
        ],
        raw_target(tokens),
        prop::option::of(prop_oneof![
            3 => Just(format!("Bearer {ACME_KEY}")),
            1 => Just(format!("Bearer {GLOBEX_KEY}")),
            1 => "[ -~]{0,40}",
        ]),
        prop::option::of(prop::sample::select(vec![
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
        ])),
        prop_oneof![session_like_body(), card_form_body(), body()],
        prop::option::weighted(0.3, 1usize..5),
    )
        .prop_map(
            |(method, target, authorization, content_type, body, chunks)| RawCase {
                method,
                target,
                authorization,
                content_type,
                body,
                chunks,
            },
        )
        .boxed()
}

fn raw_request(case: &RawCase) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
        case.method, case.target
    );
    if let Some(auth) = &case.authorization {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    if let Some(ct) = case.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    match case.chunks {
        None => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", case.body.len()));
            let mut r = head.into_bytes();
            r.extend_from_slice(&case.body);
            r
        }
        Some(pieces) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut r = head.into_bytes();
            let size = case.body.len().div_ceil(pieces).max(1);
            for chunk in case.body.chunks(size) {
                r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                r.extend_from_slice(chunk);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }
    }
}

/// A whole HTTP/1.1 response: status, lower-cased headers and the (de-chunked) body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// `Err` when the connection closed before the response was complete.
fn parse_response(bytes: &[u8], head_only: bool) -> Result<RawResponse, String> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "connection closed before a full head: {:?}",
                String::from_utf8_lossy(bytes)
            )
        })?;
    let head = String::from_utf8_lossy(&bytes[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &bytes[split + 4..];
    if head_only {
        return Ok(RawResponse {
            status,
            headers,
            body: Vec::new(),
        });
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("chunked body cut off")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            if rest.len() < size + 2 {
                return Err("chunked body cut off".into());
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().map_err(|_| "bad content-length")?;
        if rest.len() < length {
            return Err(format!("body cut off: {} of {length} bytes", rest.len()));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

async fn check_raw_case(
    client: reqwest::Client,
    address: String,
    mut case: RawCase,
) -> Result<u16, TestCaseError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    case.target = with_fresh_tokens(&client, &address, &case.target).await;
    let addr = address.trim_start_matches("http://");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&raw_request(&case)).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| TestCaseError::fail("no response within 30 s"))?
        .map_err(|e| TestCaseError::fail(format!("connection failed: {e}")))?;
    let RawResponse {
        status,
        headers,
        body,
    } = parse_response(&response, case.method == "HEAD").map_err(TestCaseError::fail)?;
    let body = String::from_utf8_lossy(&body);
    let path = case.target.split('?').next().unwrap_or("");
    prop_assert!(
        status < 500,
        "{} for {} {}: {}",
        status,
        case.method,
        case.target,
        body
    );
    if path.starts_with("/api/") && (400..500).contains(&status) && case.method != "HEAD" {
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        check_api_error_shape(status, content_type, &body).map_err(TestCaseError::fail)?;
    }
    Ok(status)
}

#[test]
fn no_raw_request_target_or_chunked_upload_gets_a_5xx_or_a_dropped_connection() {
    let client = reqwest::Client::new();
    run_against_app(Backend::Memory, 300, raw_case, |address, case| {
        check_raw_case(client.clone(), address, case)
    });
}
