//! `OrderId::parse` and `Description::parse` on any string: never panic, and accept only
//! 1–128 (order id) or 0–200 (description) characters without control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::domain::{Description, OrderId};

fuzz_target!(|s: &str| {
    let chars = s.chars().count();
    let printable = !s.chars().any(char::is_control);
    match OrderId::parse(s) {
        Ok(id) => {
            assert!((1..=128).contains(&chars) && printable, "order id {s:?}");
            assert_eq!(id.as_ref(), s);
        }
        Err(_) => assert!(!((1..=128).contains(&chars) && printable), "order id {s:?}"),
    }
    match Description::parse(s) {
        Ok(d) => {
            assert!(chars <= 200 && printable, "description {s:?}");
            assert_eq!(d.as_ref(), s);
        }
        Err(_) => assert!(!(chars <= 200 && printable), "description {s:?}"),
    }
});
