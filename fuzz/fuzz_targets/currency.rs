//! `Currency::parse` on any string: never panics; what it accepts is three ASCII letters,
//! stored upper-case, with an ISO 4217 minor-unit exponent, and every case of it parses alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::domain::Currency;

fuzz_target!(|s: &str| {
    let Ok(currency) = Currency::parse(s) else {
        return;
    };
    assert!(
        s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()),
        "{s:?}"
    );
    assert_eq!(currency.code(), s.to_ascii_uppercase());
    assert!([0, 2, 3, 4].contains(&currency.exponent()), "{s:?}");
    assert_eq!(Currency::parse(&s.to_ascii_lowercase()), Ok(currency));
});
