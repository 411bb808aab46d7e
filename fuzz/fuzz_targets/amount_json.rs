//! `Amount::from_json` on whatever JSON the bytes hold (the `amount` field as the API reads
//! it): never panics, accepts only whole numbers 1..=10^12, and every accepted amount
//! formats with each exponent and reads back to the same minor units.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::domain::{Amount, Currency, json_whole_number};
use serde_json::Value;

fn read_back(formatted: &str, exponent: u8) -> Option<u64> {
    let (int, frac) = formatted.split_once('.').unwrap_or((formatted, ""));
    assert_eq!(frac.len(), usize::from(exponent), "{formatted}");
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    int.parse::<u64>()
        .ok()?
        .checked_mul(10u64.pow(u32::from(exponent)))?
        .checked_add(frac)
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // The same rule serves ttlSeconds; it must not panic either.
    let _ = json_whole_number(&value);
    let Ok(amount) = Amount::from_json(&value) else {
        return;
    };
    let n = amount.minor_units();
    assert!((1..=1_000_000_000_000).contains(&n), "{value} read as {n}");
    let number = value.as_number().expect("only numbers are amounts");
    match (number.as_u64(), number.as_f64()) {
        (Some(u), _) => assert_eq!(u, n),
        (None, Some(f)) => assert!(f.fract() == 0.0 && f == n as f64, "{value} read as {n}"),
        _ => panic!("{value} accepted"),
    }
    for code in ["USD", "JPY", "KWD", "CLF"] {
        let currency = Currency::parse(code).unwrap();
        let formatted = amount.format(currency);
        assert_eq!(
            read_back(&formatted, currency.exponent()),
            Some(n),
            "{code} {formatted}"
        );
    }
});
