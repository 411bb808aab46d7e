//! `Merchants::parse` on any text: never panics (nor overflows the stack on deep nesting),
//! and every merchant it accepts has a valid id and a non-blank name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paylink::domain::MerchantId;
use paylink::merchants::Merchants;

fuzz_target!(|text: &str| {
    let Ok(merchants) = Merchants::parse(text) else {
        return;
    };
    for m in merchants.all() {
        assert!(MerchantId::parse(m.id.as_ref()).is_ok());
        assert!(!m.name.trim().is_empty() && m.name.chars().count() <= 100);
        assert!(merchants.get(&m.id).is_some());
    }
});
