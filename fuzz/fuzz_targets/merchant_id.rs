//! `MerchantId::parse` on any string: never panics, accepts exactly 1–64 of `a-z 0-9 _ -`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::domain::MerchantId;

fuzz_target!(|s: &str| {
    let valid = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    assert_eq!(MerchantId::parse(s).is_ok(), valid, "{s:?}");
});
