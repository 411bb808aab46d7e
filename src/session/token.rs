//! The payment token, a bearer secret, and its digest, the only form in which it is kept.

use rand::TryRng;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A payment token: 32 bytes from the operating system's CSPRNG, shown as 64 lowercase
/// hex characters. It is a bearer secret: `Debug` prints nothing of it, and nothing stores
/// or logs it; only its [`TokenDigest`] goes near a store key or a log line.
#[derive(Clone)]
pub struct PaymentToken(String);

/// Why a string is not a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a payment token is 64 lowercase hex characters")]
pub struct MalformedToken;

/// The OS generator failed; no token was made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomnessUnavailable;

impl PaymentToken {
    /// Draws a fresh token from the OS CSPRNG. Never derived from any request data, so no
    /// client can make the server adopt a token it chose (session fixation).
    pub fn generate() -> Result<Self, RandomnessUnavailable> {
        let mut bytes = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| RandomnessUnavailable)?;
        Ok(PaymentToken(hex::encode(bytes)))
    }

    /// Accepts exactly 64 lowercase hex characters and nothing else (no upper case, no
    /// padding), so that one token has one spelling and one digest.
    pub fn parse(s: &str) -> Result<Self, MalformedToken> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(PaymentToken(s.to_owned()))
        } else {
            Err(MalformedToken)
        }
    }

    /// The 64-character text, for the payer's URL and the merchant's answer only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 over the token's 64-character text.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl PartialEq for PaymentToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for PaymentToken {}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(<redacted>)")
    }
}

/// SHA-256 of a token's text: what the stores key sessions by. Knowing a digest does not
/// let anyone pay or read a session, so it may appear in store keys; logs carry only its
/// short [`TokenDigest::token_ref`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The full digest as 64 lowercase hex characters (store keys).
    pub fn to_hex(&self) -> String {
        let mut hex = String::with_capacity(64);
        self.push_hex(&mut hex);
        hex
    }

    /// Appends the 64 hex characters to `out`.
    pub fn push_hex(&self, out: &mut String) {
        let mut hex = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the digest's length.
        let _ = hex::encode_to_slice(self.0, &mut hex);
        out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A digest from its raw 32 bytes, as the active-session index holds them.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenDigest(bytes)
    }

    /// Reads a digest back from its hex form, as found in a store key.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(TokenDigest(bytes))
    }

    /// The first 12 hex characters: the `tokenRef` that log lines and the dashboard use to
    /// tell sessions apart.
    pub fn token_ref(&self) -> TokenRef {
        let mut hex = [0u8; 12];
        let _ = hex::encode_to_slice(&self.0[..6], &mut hex);
        TokenRef(hex)
    }
}

/// A digest's first 12 hex characters, kept on the stack: one is made for every lifecycle
/// event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenRef([u8; 12]);

impl TokenRef {
    pub fn as_str(&self) -> &str {
        // Always hex digits, written by `token_ref`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenRef({})", self.as_str())
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({})", self.token_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_lowercase_hex_and_differ() {
        let a = PaymentToken::generate().unwrap();
        let b = PaymentToken::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(PaymentToken::parse(a.expose()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        let good = "ab".repeat(32);
        assert!(PaymentToken::parse(&good).is_ok());
        for bad in [
            String::new(),
            "AB".repeat(32),
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}g", "a".repeat(63)),
            format!(" {}", "a".repeat(63)),
        ] {
            assert_eq!(PaymentToken::parse(&bad), Err(MalformedToken), "{bad:?}");
        }
    }

    #[test]
    fn the_digest_is_sha256_of_the_text_and_the_ref_its_first_12_hex() {
        let token = PaymentToken::parse(&"0".repeat(64)).unwrap();
        let expected = hex::encode(Sha256::digest("0".repeat(64).as_bytes()));
        assert_eq!(token.digest().to_hex(), expected);
        assert_eq!(token.digest().token_ref().as_str(), &expected[..12]);
        assert_eq!(TokenDigest::from_hex(&expected), Some(token.digest()));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let token = PaymentToken::generate().unwrap();
        assert!(!format!("{token:?}").contains(token.expose()));
        assert!(!format!("{:?}", token.digest()).contains(&token.digest().to_hex()));
    }
}
