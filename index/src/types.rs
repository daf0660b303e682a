//! Identifier newtypes shared by documents, chunks and hits, and chunk [`Locator`]s.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256, keccak256};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A document's id, unique within an index.
    DocId
);
string_id!(
    /// A chunk's id: `"{doc_id}#{n}"`, stable for the same input.
    ChunkId
);
string_id!(
    /// The name of a datanet: a named, attributed collection of documents.
    DatanetId
);

impl ChunkId {
    /// The id of chunk number `n` of document `doc`.
    pub fn for_chunk(doc: &DocId, n: usize) -> Self {
        Self(format!("{doc}#{n}"))
    }
}

/// The EVM address of a data contributor, validated with its EIP-55 checksum.
///
/// Mixed-case input must carry a correct checksum; all-lowercase or
/// all-uppercase hex is accepted as unchecksummed. Displayed checksummed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Contributor(Address);

impl Contributor {
    /// The zero address, used when a document names no contributor.
    pub const UNKNOWN: Contributor = Contributor(Address::ZERO);

    /// Parses and validates an address ([`tribute_common::parse_address`]: mixed case
    /// must carry a valid EIP-55 checksum).
    pub fn parse(input: &str) -> Result<Self> {
        tribute_common::parse_address(input)
            .map(Self)
            .map_err(|e| Error::InvalidAddress {
                input: e.input,
                reason: e.reason,
            })
    }

    /// The underlying address.
    pub fn address(&self) -> Address {
        self.0
    }
}

impl fmt::Display for Contributor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_checksum(None))
    }
}

impl FromStr for Contributor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Contributor {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Contributor> for String {
    fn from(c: Contributor) -> String {
        c.to_string()
    }
}

impl From<Address> for Contributor {
    fn from(a: Address) -> Self {
        Self(a)
    }
}

/// keccak-256 of a text's UTF-8 bytes: what receipts and the ledger contract cite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(B256);

impl ContentHash {
    /// Hashes a text.
    pub fn of(text: &str) -> Self {
        Self(keccak256(text.as_bytes()))
    }
    /// A hash read back from storage (32 bytes, as [`ContentHash::as_b256`] gave them).
    pub fn from_b256(hash: B256) -> Self {
        Self(hash)
    }
    /// The 32 hash bytes.
    pub fn as_b256(&self) -> B256 {
        self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a chunk lies in its document: the pages it spans (paged formats such as PDF),
/// the heading path of its section (Markdown, HTML, DOCX) and its character span in the
/// document's extracted text.
///
/// Empty `pages` and `headings` are left out of JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Locator {
    /// The 1-based pages the chunk spans, in order; empty for formats without pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<u32>,
    /// The headings above the chunk, outermost first (`["Install", "On Linux"]`); empty
    /// before the first heading and for formats without headings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headings: Vec<String>,
    /// The first character (Unicode scalar value, 0-based) of the chunk in the document's
    /// extracted text.
    pub char_start: usize,
    /// One past the chunk's last character.
    pub char_end: usize,
}

impl fmt::Display for Locator {
    /// `p. 2–3 · Install › On Linux · chars 120–480`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pages.as_slice() {
            [] => {}
            [p] => write!(f, "p. {p} · ")?,
            [first, .., last] => write!(f, "pp. {first}–{last} · ")?,
        }
        if !self.headings.is_empty() {
            write!(f, "{} · ", self.headings.join(" › "))?;
        }
        write!(f, "chars {}–{}", self.char_start, self.char_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksummed_address_round_trips() {
        let s = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let c = Contributor::parse(s).expect("valid EIP-55 vector");
        assert_eq!(c.to_string(), s);
        // Lowercase is accepted and displayed checksummed.
        let lower = Contributor::parse(&s.to_lowercase()).expect("lowercase is unchecksummed");
        assert_eq!(lower, c);
    }

    #[test]
    fn bad_addresses_are_rejected_with_reason() {
        let bad_checksum = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        let err = Contributor::parse(bad_checksum).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!(
            err.contains("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            "{err}"
        );
        assert!(Contributor::parse("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(
            Contributor::parse("0x1234")
                .unwrap_err()
                .to_string()
                .contains("40 hex")
        );
        assert!(Contributor::parse("0xzzAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }

    #[test]
    fn locator_displays_pages_headings_and_span() {
        let mut l = Locator {
            pages: vec![2, 3],
            headings: vec!["Install".into(), "On Linux".into()],
            char_start: 120,
            char_end: 480,
        };
        assert_eq!(
            l.to_string(),
            "pp. 2–3 · Install › On Linux · chars 120–480"
        );
        l.pages = vec![4];
        l.headings.clear();
        assert_eq!(l.to_string(), "p. 4 · chars 120–480");
        let json = serde_json::to_string(&Locator::default()).expect("serialises");
        assert_eq!(json, r#"{"char_start":0,"char_end":0}"#);
    }

    #[test]
    fn content_hash_is_keccak() {
        // keccak256("") is a well-known constant.
        assert_eq!(
            ContentHash::of("").to_string(),
            "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }
}
