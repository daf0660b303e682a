//! Receipt JSON as `tribute receipts verify` reads it: one JSON value (an object, possibly
//! pretty-printed, or an array of them) or JSON lines, each given to
//! `SignedReceipt::from_json` and verified against the ledger. (The CLI's own reader,
//! `parse_receipts` in `bindings/cli/src/receipts/mod.rs`, is private to the binary; this
//! target follows the same two routes: whole values re-serialised, and raw lines.)
//!
//! Properties (`tribute_attribution_fuzz::check_parsed`): a receipt that parses validates,
//! re-serialises to canonical JSON that parses to the same receipt and is a fixed point;
//! verification fails with a typed error or returns the receipt's own digest. A line that
//! parses directly parses the same through `serde_json::Value` (the whole-document route).

use serde_json::Value;
use tribute_attribution::receipt::SignedReceipt;
use tribute_attribution_fuzz::check_parsed;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => {
                for v in &items {
                    if let Ok(r) = SignedReceipt::from_json(&v.to_string()) {
                        check_parsed(&r);
                    }
                }
            }
            Ok(v) => {
                if let Ok(r) = SignedReceipt::from_json(&v.to_string()) {
                    check_parsed(&r);
                }
            }
            Err(_) => {}
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(r) = SignedReceipt::from_json(line) else {
                continue;
            };
            check_parsed(&r);
            let value: Value = serde_json::from_str(line).expect("a receipt line is JSON");
            let via_value = SignedReceipt::from_json(&value.to_string())
                .expect("a receipt that parses from its line parses from its JSON value");
            assert_eq!(via_value, r, "the two routes read different receipts");
        }
    });
}
