//! The merchant registry: who may call the API, known only by the SHA-256 of their keys.

use crate::domain::MerchantId;
use rand::TryRng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// A merchant as the registry knows it.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    key_sha256: [u8; 32],
}

/// Every merchant that may call the API.
#[derive(Debug, Clone)]
pub struct Merchants {
    merchants: Vec<Merchant>,
}

#[derive(Debug, thiserror::Error)]
pub enum MerchantsError {
    #[error("cannot read the merchants file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the merchants file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the merchants file is not valid TOML: {0}")]
    Toml(String),
    #[error("merchant #{index}: {problem}")]
    Invalid { index: usize, problem: String },
    #[error("merchant id {0:?} appears more than once")]
    Duplicate(String),
    #[error("merchants {0:?} and {1:?} have the same API key; every merchant needs its own")]
    SharedKey(String, String),
    #[error("the operating system's random number generator failed")]
    Randomness,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantsFile {
    #[serde(default)]
    merchant: Vec<MerchantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantEntry {
    id: String,
    name: String,
    api_key_sha256: String,
}

/// The demo merchant's key. Public on purpose: it exists only when no merchants file does,
/// so a newcomer's `cargo run` and the README's curl work as written. Never in production.
pub const DEMO_API_KEY: &str = "demo_key_for_local_development_only";

/// SHA-256 of an API key's UTF-8 bytes, as 64 lowercase hex characters.
pub fn api_key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Merchants {
    /// Parses the TOML text of a merchants file. Ids follow the contract, digests are 64
    /// lowercase hex, names are 1–100 printable characters, ids are unique.
    pub fn parse(text: &str) -> Result<Self, MerchantsError> {
        let file: MerchantsFile =
            toml::from_str(text).map_err(|e| MerchantsError::Toml(e.message().to_owned()))?;
        let mut merchants: Vec<Merchant> = Vec::with_capacity(file.merchant.len());
        for (i, entry) in file.merchant.into_iter().enumerate() {
            let index = i + 1;
            let invalid = |problem: &str| MerchantsError::Invalid {
                index,
                problem: problem.to_owned(),
            };
            let id = MerchantId::parse(&entry.id).map_err(|e| invalid(&e.to_string()))?;
            let name = entry.name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(invalid("name must be 1-100 printable characters"));
            }
            let digest = &entry.api_key_sha256;
            let mut key_sha256 = [0u8; 32];
            let is_lower_hex = digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !is_lower_hex || hex::decode_to_slice(digest, &mut key_sha256).is_err() {
                return Err(invalid(
                    "api_key_sha256 must be 64 lowercase hex characters",
                ));
            }
            if merchants.iter().any(|m| m.id == id) {
                return Err(MerchantsError::Duplicate(id.to_string()));
            }
            // One key, one merchant: otherwise a key would act for whichever comes last.
            if let Some(other) = merchants.iter().find(|m| m.key_sha256 == key_sha256) {
                return Err(MerchantsError::SharedKey(
                    other.id.to_string(),
                    id.to_string(),
                ));
            }
            merchants.push(Merchant {
                id,
                name: name.to_owned(),
                key_sha256,
            });
        }
        Ok(Merchants { merchants })
    }

    /// Reads the merchants file; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, MerchantsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(MerchantsError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The development registry: one merchant `demo` with [`DEMO_API_KEY`].
    pub fn demo() -> Self {
        let digest = api_key_digest(DEMO_API_KEY);
        Self::parse(&format!(
            "[[merchant]]\nid = \"demo\"\nname = \"Demo Shop\"\napi_key_sha256 = \"{digest}\"\n"
        ))
        .expect("the demo merchant is valid")
    }

    /// The merchant whose key this is. Every merchant's digest is compared, in constant
    /// time, so the answer takes as long for a near miss as for a stranger.
    pub fn authenticate(&self, api_key: &str) -> Option<&Merchant> {
        let presented: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        let mut found = None;
        for merchant in &self.merchants {
            if bool::from(merchant.key_sha256.ct_eq(&presented)) {
                found = Some(merchant);
            }
        }
        found
    }

    pub fn get(&self, id: &MerchantId) -> Option<&Merchant> {
        self.merchants.iter().find(|m| &m.id == id)
    }

    pub fn all(&self) -> &[Merchant] {
        &self.merchants
    }
}

/// `paylink merchant add`: makes a key from the OS CSPRNG, appends the merchant with only
/// the key's digest to the file (creating it if need be), and returns the key.
pub fn add_merchant(path: &Path, id: &str, name: &str) -> Result<String, MerchantsError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(MerchantsError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let mut bytes = [0u8; 24];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| MerchantsError::Randomness)?;
    let key = format!("sk_{}", hex::encode(bytes));

    let mut entry = toml::Table::new();
    entry.insert("id".into(), id.into());
    entry.insert("name".into(), name.into());
    entry.insert("api_key_sha256".into(), api_key_digest(&key).into());
    let mut doc = toml::Table::new();
    doc.insert("merchant".into(), vec![toml::Value::Table(entry)].into());
    let block = toml::to_string(&doc).map_err(|e| MerchantsError::Toml(e.to_string()))?;

    let mut updated = existing.clone();
    if !updated.is_empty() && !updated.ends_with('\n') {
        updated.push('\n');
    }
    if !updated.is_empty() {
        updated.push('\n');
    }
    updated.push_str(&block);
    // Validate the whole result (id rules, duplicates) before touching the file.
    Merchants::parse(&updated)?;
    std::fs::write(path, updated).map_err(|source| MerchantsError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, &str, &str)]) -> String {
        entries
            .iter()
            .map(|(id, name, key)| {
                format!(
                    "[[merchant]]\nid = \"{id}\"\nname = \"{name}\"\napi_key_sha256 = \"{}\"\n",
                    api_key_digest(key)
                )
            })
            .collect()
    }

    #[test]
    fn keys_authenticate_their_own_merchant_only() {
        let m =
            Merchants::parse(&file(&[("acme", "Acme", "k1"), ("globex", "Globex", "k2")])).unwrap();
        assert_eq!(m.authenticate("k1").unwrap().id.as_ref(), "acme");
        assert_eq!(m.authenticate("k2").unwrap().id.as_ref(), "globex");
        assert!(m.authenticate("k3").is_none());
        assert!(m.authenticate("").is_none());
    }

    #[test]
    fn bad_merchant_files_are_refused_with_a_reason() {
        let cases = [
            ("not toml", "[[merchant]"),
            ("bad id", &file(&[("Acme!", "Acme", "k")])[..]),
            (
                "duplicate id",
                &file(&[("acme", "A", "k"), ("acme", "B", "l")])[..],
            ),
            (
                "short digest",
                "[[merchant]]\nid = \"a\"\nname = \"A\"\napi_key_sha256 = \"abc\"\n",
            ),
            (
                "unknown field",
                "[[merchant]]\nid = \"a\"\nname = \"A\"\napi_key = \"k\"\n",
            ),
        ];
        for (why, text) in cases {
            assert!(Merchants::parse(text).is_err(), "{why}");
        }
        let upper = file(&[("a", "A", "k")]).to_uppercase();
        assert!(Merchants::parse(&upper).is_err(), "upper-case everything");
    }

    #[test]
    fn merchant_add_appends_and_the_key_it_prints_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merchants.toml");
        let k1 = add_merchant(&path, "acme", "Acme \"Tickets\"").unwrap();
        let k2 = add_merchant(&path, "globex", "Globex").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&k1) && !text.contains(&k2),
            "only digests are written"
        );
        let m = Merchants::load(&path).unwrap().unwrap();
        assert_eq!(m.authenticate(&k1).unwrap().name, "Acme \"Tickets\"");
        assert_eq!(m.authenticate(&k2).unwrap().id.as_ref(), "globex");
        assert!(
            add_merchant(&path, "acme", "Again").is_err(),
            "duplicates refused"
        );
        assert_eq!(Merchants::load(&path).unwrap().unwrap().all().len(), 2);
    }
}
