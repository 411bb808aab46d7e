use std::fmt;

/// A merchant id: 1–64 characters of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MerchantId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a merchant id is 1-64 characters of a-z, 0-9, _ and -")]
pub struct MerchantIdError;

impl MerchantId {
    pub fn parse(s: &str) -> Result<Self, MerchantIdError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(MerchantId(s.to_owned()))
        } else {
            Err(MerchantIdError)
        }
    }
}

impl AsRef<str> for MerchantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids_follow_the_merchants_file_rule() {
        for ok in ["acme", "a", "shop_2-eu", &"x".repeat(64)] {
            assert!(MerchantId::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "Acme",
            "acme tickets",
            "ac.me",
            "ac/me",
            &"x".repeat(65),
            "ümlaut",
        ] {
            assert_eq!(MerchantId::parse(bad), Err(MerchantIdError), "{bad:?}");
        }
    }
}
