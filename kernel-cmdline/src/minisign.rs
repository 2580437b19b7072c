//! Minisign public keys as they appear on the second line of a minisign `.pub` file.

use std::fmt;

use crate::base64;

/// Length of a decoded minisign public key: algorithm (2) + key id (8) + Ed25519 key (32).
const DECODED_LEN: usize = 42;

/// A minisign Ed25519 public key, checked to be well-formed (not checked to be trusted).
///
/// Built from the base64 line of a `.pub` file (56 characters, e.g. what
/// `minisign -G` prints after `-P`). The original text is kept so it can be handed to a
/// minisign implementation unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct MinisignPublicKey {
    base64: String,
    key_id: [u8; 8],
    ed25519: [u8; 32],
}

impl MinisignPublicKey {
    /// Parse the base64 line of a minisign public key. The error text says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = base64::decode(text).ok_or_else(|| format!("{text:?} is not valid base64"))?;
        let bytes: [u8; DECODED_LEN] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "{text:?} decodes to {} bytes, a minisign public key has {DECODED_LEN}",
                bytes.len()
            )
        })?;
        if bytes[..2] != *b"Ed" {
            return Err(format!(
                "{text:?} is not a minisign Ed25519 public key (algorithm {:?}, expected \"Ed\")",
                String::from_utf8_lossy(&bytes[..2])
            ));
        }
        let mut key_id = [0; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let mut ed25519 = [0; 32];
        ed25519.copy_from_slice(&bytes[10..]);
        Ok(Self {
            base64: text.to_owned(),
            key_id,
            ed25519,
        })
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

    /// The raw Ed25519 public key.
    pub fn ed25519(&self) -> &[u8; 32] {
        &self.ed25519
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
    use crate::base64::tests::encode;

    /// Made with `minisign -G` (minisign 0.11), which printed key id C312D86EEF8D443.
    pub(crate) const KEY: &str = "RWRD1Pjuhi0xDBWsipqaOPx4h7bpm0HlgC9YdBwyk47/AdoPuCw2CCS4";

    #[test]
    fn parses_a_key_made_by_minisign() {
        let key = MinisignPublicKey::parse(KEY).unwrap();
        assert_eq!(key.key_id_hex(), "C312D86EEF8D443");
        assert_eq!(key.as_base64(), KEY);
        assert_eq!(key.to_string(), KEY);
        assert_eq!(format!("{key:?}"), "MinisignPublicKey(C312D86EEF8D443)");
        assert_eq!(key.ed25519()[..2], [0x15, 0xac]);
    }

    #[test]
    fn rejects_bad_base64() {
        let err = MinisignPublicKey::parse("RWRD1Pjuhi0x!").unwrap_err();
        assert_eq!(err, "\"RWRD1Pjuhi0x!\" is not valid base64");
    }

    #[test]
    fn rejects_wrong_length() {
        let err = MinisignPublicKey::parse(&encode(b"Ed12345678")).unwrap_err();
        assert!(
            err.ends_with("decodes to 10 bytes, a minisign public key has 42"),
            "{err}"
        );
    }

    #[test]
    fn rejects_other_algorithms() {
        let mut raw = crate::base64::decode(KEY).unwrap();
        raw[1] = b'D';
        let err = MinisignPublicKey::parse(&encode(&raw)).unwrap_err();
        assert!(
            err.ends_with("(algorithm \"ED\", expected \"Ed\")"),
            "{err}"
        );
    }
}
