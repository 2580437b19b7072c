//! Minisign public keys as they appear on the second line of a minisign `.pub` file.
//!
//! Parsed once, at the boundary: [`MinisignPublicKey::parse`] decodes the base64 with the
//! `base64` crate (strict, canonical padding), checks length and algorithm with errors an
//! operator can act on, and keeps the typed [`minisign_verify::PublicKey`] that verifies
//! signatures, so no caller parses the text again.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Length of a decoded minisign public key: algorithm (2) + key id (8) + Ed25519 key (32).
const DECODED_LEN: usize = 42;
/// Algorithm of every minisign public key. (`ED` only tags prehashed *signatures*.)
const ALGORITHM: &[u8; 2] = b"Ed";

/// A minisign Ed25519 public key, checked to be well-formed (not checked to be trusted).
///
/// Built from the base64 line of a `.pub` file (56 characters, e.g. what
/// `minisign -G` prints after `-P`). Holds the typed key ([`Self::public_key`]) and the
/// original text ([`Self::as_base64`]).
#[derive(Clone, PartialEq, Eq)]
pub struct MinisignPublicKey {
    base64: String,
    key_id: [u8; 8],
    key: minisign_verify::PublicKey,
}

impl MinisignPublicKey {
    /// Parse the base64 line of a minisign public key. The error text says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| format!("{text:?} is not valid base64"))?;
        if bytes.len() != DECODED_LEN {
            return Err(format!(
                "{text:?} decodes to {} bytes, a minisign public key has {DECODED_LEN}",
                bytes.len()
            ));
        }
        if bytes[..2] != ALGORITHM[..] {
            return Err(format!(
                "{text:?} is not a minisign Ed25519 public key (algorithm {:?}, expected \"Ed\")",
                String::from_utf8_lossy(&bytes[..2])
            ));
        }
        let mut key_id = [0; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let key = minisign_verify::PublicKey::from_base64(text)
            .map_err(|e| format!("{text:?} is not a minisign public key: {e}"))?;
        Ok(Self {
            base64: text.to_owned(),
            key_id,
            key,
        })
    }

    /// The typed key, ready to verify signatures.
    pub fn public_key(&self) -> &minisign_verify::PublicKey {
        &self.key
    }

    /// The base64 text the key was parsed from.
    pub fn as_base64(&self) -> &str {
        &self.base64
    }

    /// The 8-byte key id, as stored in the key and in signatures.
    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// The key id the way minisign prints it (`untrusted comment: minisign public key <ID>`):
    /// the little-endian number in upper-case hex, without leading zeros.
    pub fn key_id_hex(&self) -> String {
        format!("{:X}", u64::from_le_bytes(self.key_id))
    }
}

impl From<MinisignPublicKey> for minisign_verify::PublicKey {
    fn from(key: MinisignPublicKey) -> Self {
        key.key
    }
}

impl fmt::Debug for MinisignPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MinisignPublicKey({})", self.key_id_hex())
    }
}

impl fmt::Display for MinisignPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Made with `minisign -G` (minisign 0.11), which printed key id C312D86EEF8D443.
    pub(crate) const KEY: &str = "RWRD1Pjuhi0xDBWsipqaOPx4h7bpm0HlgC9YdBwyk47/AdoPuCw2CCS4";

    fn raw(text: &str) -> Vec<u8> {
        STANDARD.decode(text).unwrap()
    }

    #[test]
    fn parses_a_key_made_by_minisign() {
        let key = MinisignPublicKey::parse(KEY).unwrap();
        assert_eq!(key.key_id_hex(), "C312D86EEF8D443");
        assert_eq!(key.as_base64(), KEY);
        assert_eq!(key.to_string(), KEY);
        assert_eq!(format!("{key:?}"), "MinisignPublicKey(C312D86EEF8D443)");
        assert_eq!(
            key.public_key(),
            &minisign_verify::PublicKey::from_base64(KEY).unwrap()
        );
        assert_eq!(
            minisign_verify::PublicKey::from(key.clone()),
            *key.public_key()
        );
    }

    #[test]
    fn rejects_bad_base64() {
        let err = MinisignPublicKey::parse("RWRD1Pjuhi0x!").unwrap_err();
        assert_eq!(err, "\"RWRD1Pjuhi0x!\" is not valid base64");
    }

    #[test]
    fn base64_must_be_canonical() {
        // Standard alphabet, `=` padding to a multiple of four, no stray bits, no
        // whitespace: every key has exactly one accepted spelling, so duplicates are found
        // by comparing text.
        for bad in [
            &KEY[..55],             // missing a character
            &format!("{KEY}\n"),    // trailing newline
            &format!("{KEY}="),     // padding where none belongs
            &KEY.replace('/', "_"), // URL-safe alphabet
            &format!(" {KEY}"),     // leading space
            "Zh==",                 // non-zero leftover bits
            "Zm9=",                 // non-zero leftover bits
            "Zg",                   // padding missing
            "Zg==Zm9v",             // padding in the middle
        ] {
            let err = MinisignPublicKey::parse(bad).unwrap_err();
            assert!(err.ends_with("is not valid base64"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn rejects_wrong_length() {
        let err = MinisignPublicKey::parse(&STANDARD.encode(b"Ed12345678")).unwrap_err();
        assert!(
            err.ends_with("decodes to 10 bytes, a minisign public key has 42"),
            "{err}"
        );
    }

    #[test]
    fn rejects_other_algorithms() {
        // minisign-verify also takes "ED" here; a minisign public key is always "Ed".
        let mut bytes = raw(KEY);
        bytes[1] = b'D';
        let err = MinisignPublicKey::parse(&STANDARD.encode(&bytes)).unwrap_err();
        assert!(
            err.ends_with("(algorithm \"ED\", expected \"Ed\")"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = MinisignPublicKey::parse(&s);
        }

        #[test]
        fn any_ed_key_round_trips(id in any::<[u8; 8]>(), ed in any::<[u8; 32]>()) {
            let mut bytes = b"Ed".to_vec();
            bytes.extend_from_slice(&id);
            bytes.extend_from_slice(&ed);
            let text = STANDARD.encode(&bytes);
            let key = MinisignPublicKey::parse(&text).unwrap();
            prop_assert_eq!(key.key_id(), id);
            prop_assert_eq!(key.as_base64(), text.as_str());
        }
    }
}
