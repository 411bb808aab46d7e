//! `PaymentToken::parse` on any string: never panics, accepts exactly 64 lowercase hex, and
//! what it accepts round-trips through its digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::session::{PaymentToken, TokenDigest};

fuzz_target!(|s: &str| {
    let canonical = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match PaymentToken::parse(s) {
        Ok(token) => {
            assert!(canonical, "accepted {s:?}");
            assert_eq!(token.expose(), s);
            let digest = token.digest();
            assert_eq!(TokenDigest::from_hex(&digest.to_hex()), Some(digest));
            assert!(!format!("{token:?}").contains(s));
        }
        Err(_) => assert!(!canonical, "rejected {s:?}"),
    }
    // Digests are read back from store keys: any text must be safe there too.
    if let Some(digest) = TokenDigest::from_hex(s) {
        assert_eq!(digest.to_hex(), s.to_ascii_lowercase());
    }
});
