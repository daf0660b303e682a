//! Receipt verification (`SignedReceipt::verify`) on receipts the fuzzer builds, signs
//! with the test key, serialises, and then damages byte by byte.
//!
//! Properties: a receipt signs exactly when it validates; a signed receipt verifies on its
//! ledger (returning its digest) and fails on another chain or contract; its canonical JSON
//! reads back to the same receipt; after the JSON is damaged, a receipt that still parses
//! verifies only if it is exactly the receipt that was signed (the signature binds every
//! field; no malleable second signature is accepted).

use arbitrary::{Arbitrary, Unstructured};
use tribute_attribution::receipt::{Ledger, SignedReceipt};
use tribute_attribution_fuzz::{ReceiptSpec, check_parsed, key, ledger};

#[derive(Debug, Arbitrary)]
struct Input {
    receipt: ReceiptSpec,
    other_chain: u64,
    damage: Vec<(u16, u8)>,
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
            return;
        };
        let receipt = input.receipt.receipt();
        let ledger = ledger();
        let signed = match key().sign(receipt.clone(), &ledger) {
            Ok(s) => s,
            Err(_) => {
                assert!(
                    receipt.validate().is_err() || receipt.payer != key().address(),
                    "a valid receipt of the key's payer did not sign"
                );
                return;
            }
        };
        let digest = signed.verify(&ledger).expect("a signed receipt verifies");
        assert_eq!(digest, receipt.digest(&ledger));
        let elsewhere = [
            Ledger {
                chain_id: input.other_chain,
                ..ledger
            },
            Ledger {
                contract: alloy_primitives::Address::repeat_byte(0x42),
                ..ledger
            },
        ];
        for other in elsewhere.iter().filter(|l| **l != ledger) {
            assert!(
                signed.verify(other).is_err(),
                "a receipt verified on a ledger it was not signed for"
            );
        }
        let json = signed.to_json();
        let back = SignedReceipt::from_json(&json).expect("canonical JSON parses");
        assert_eq!(back, signed);
        let mut bytes = json.into_bytes();
        if input.damage.is_empty() || bytes.is_empty() {
            return;
        }
        for &(at, byte) in &input.damage {
            let i = usize::from(at) % bytes.len();
            bytes[i] = byte;
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return;
        };
        let Ok(damaged) = SignedReceipt::from_json(text) else {
            return;
        };
        check_parsed(&damaged);
        if damaged.verify(&ledger).is_ok() {
            assert_eq!(damaged, signed, "a changed receipt still verifies");
        }
    });
}
