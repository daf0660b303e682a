//! The Ethereum address parser every crate uses, so that a contributor in a document, a
//! payee in a reward config and an owner in a TOML file are all read by the same rules.

use std::str::FromStr;

use alloy_primitives::Address;

/// A string is not an Ethereum address; `reason` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an Ethereum address: {reason}")]
pub struct AddressError {
    /// The string given.
    pub input: String,
    /// What is wrong with it, e.g. "EIP-55 checksum mismatch (did you mean 0x…?)".
    pub reason: String,
}

/// Parses an Ethereum address: `0x` and 40 hex digits, all lowercase, all uppercase, or
/// mixed-case with a valid [EIP-55](https://eips.ethereum.org/EIPS/eip-55) checksum (a
/// mixed-case address with a wrong checksum is most likely a typo, so it is refused).
/// Surrounding whitespace is ignored.
///
/// # Errors
///
/// [`AddressError`] saying what is wrong: no `0x`, the wrong number of digits, a
/// character that is not hex, or a checksum mismatch (naming the checksummed form).
pub fn parse_address(input: &str) -> Result<Address, AddressError> {
    let bad = |reason: String| AddressError {
        input: input.to_owned(),
        reason,
    };
    let trimmed = input.trim();
    let hex = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .ok_or_else(|| bad("it must start with 0x".to_owned()))?;
    if hex.len() != 40 {
        return Err(bad(format!("expected 40 hex digits, got {}", hex.len())));
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            "it contains a character that is not a hex digit".to_owned()
        ));
    }
    let address = Address::from_str(hex).map_err(|e| bad(e.to_string()))?;
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        let expected = address.to_checksum(None);
        if expected[2..] != *hex {
            return Err(bad(format!(
                "EIP-55 checksum mismatch (did you mean {expected}?)"
            )));
        }
    }
    Ok(address)
}

/// Serde for an [`Address`] as an EIP-55 string, read with [`parse_address`]:
/// `#[serde(with = "tribute_common::address::eip55")]`.
pub mod eip55 {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Writes the checksummed form.
    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_checksum(None))
    }

    /// Reads with [`super::parse_address`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_address(&s).map_err(D::Error::custom)
    }
}

/// Serde for an optional [`Address`] (absent or null = `None`), like [`eip55`].
pub mod eip55_opt {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Writes the checksummed form, or null.
    pub fn serialize<S: Serializer>(a: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_checksum(None)),
            None => s.serialize_none(),
        }
    }

    /// Reads with [`super::parse_address`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_address(&s).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKSUMMED: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

    #[test]
    fn accepts_lower_upper_and_checksummed() {
        let a = parse_address(CHECKSUMMED).unwrap();
        assert_eq!(a.to_checksum(None), CHECKSUMMED);
        assert_eq!(parse_address(&CHECKSUMMED.to_lowercase()).unwrap(), a);
        let upper = format!("0x{}", CHECKSUMMED[2..].to_uppercase());
        assert_eq!(parse_address(&upper).unwrap(), a);
        assert_eq!(parse_address(&format!("  {CHECKSUMMED}\n")).unwrap(), a);
    }

    #[test]
    fn refuses_with_a_reason() {
        let typo = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        let e = parse_address(typo).unwrap_err();
        assert_eq!(e.input, typo);
        assert!(
            e.reason.contains("checksum") && e.reason.contains(CHECKSUMMED),
            "{e}"
        );
        assert!(
            parse_address(&CHECKSUMMED[2..])
                .unwrap_err()
                .reason
                .contains("0x")
        );
        assert!(
            parse_address("0x1234")
                .unwrap_err()
                .reason
                .contains("40 hex")
        );
        let not_hex = "0xzzAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert!(
            parse_address(not_hex)
                .unwrap_err()
                .reason
                .contains("hex digit")
        );
        assert!(parse_address("").is_err());
    }

    #[test]
    fn serde_round_trips_checksummed() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(with = "eip55")]
            a: Address,
            #[serde(with = "eip55_opt", default)]
            b: Option<Address>,
        }
        let s: S =
            serde_json::from_str(&format!(r#"{{"a":"{}"}}"#, CHECKSUMMED.to_lowercase())).unwrap();
        assert_eq!(s.b, None);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(CHECKSUMMED), "{json}");
        let bad = serde_json::from_str::<S>(r#"{"a":"0x12"}"#).unwrap_err();
        assert!(bad.to_string().contains("40 hex"), "{bad}");
    }
}
