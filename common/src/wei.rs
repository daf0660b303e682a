//! Amounts in wei: written as a decimal string (a JSON number loses precision above
//! 2^53), read from a decimal or `0x` hex string or a non-negative integer.

use alloy_primitives::U256;

/// A string is not an amount in wei.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an amount in wei: expected a decimal or 0x hex integer below 2^256")]
pub struct WeiError {
    /// The string given.
    pub input: String,
}

/// Parses a decimal or `0x` hex integer below 2^256 (surrounding whitespace ignored).
///
/// # Errors
///
/// [`WeiError`] for anything else (negative, fractional, too large, empty).
pub fn parse_wei(input: &str) -> Result<U256, WeiError> {
    let s = input.trim();
    let bad = || WeiError {
        input: input.to_owned(),
    };
    if s.is_empty() || s.starts_with(['-', '+']) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// Serde for a [`U256`] amount: `#[serde(with = "tribute_common::wei::serde")]`.
pub mod serde {
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Int(u64),
        Str(String),
    }

    /// Writes a decimal string.
    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads a decimal or `0x` hex string, or a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Int(v) => Ok(U256::from(v)),
            Repr::Str(s) => super::parse_wei(&s).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_hex_and_refuses_the_rest() {
        assert_eq!(parse_wei("1000").unwrap(), U256::from(1000));
        assert_eq!(parse_wei(" 0x10 ").unwrap(), U256::from(16));
        assert_eq!(parse_wei(&U256::MAX.to_string()).unwrap(), U256::MAX);
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e18",
            "0xzz",
            "115792089237316195423570985008687907853269984665640564039457584007913129639936",
        ] {
            assert_eq!(parse_wei(bad).unwrap_err().input, bad, "{bad}");
        }
    }

    #[test]
    fn serde_writes_a_string_and_reads_strings_and_integers() {
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        struct S {
            #[serde(with = "super::serde")]
            fee: U256,
        }
        let s: S = serde_json::from_str(r#"{"fee": 42}"#).unwrap();
        assert_eq!(s.fee, U256::from(42));
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"fee":"42"}"#);
        let s: S = serde_json::from_str(r#"{"fee": "0x2a"}"#).unwrap();
        assert_eq!(s.fee, U256::from(42));
        assert!(serde_json::from_str::<S>(r#"{"fee": "-3"}"#).is_err());
    }
}
