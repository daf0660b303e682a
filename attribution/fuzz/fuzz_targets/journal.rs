//! Journal recovery (`Journal::open`) from arbitrary file contents: torn, truncated, garbage
//! and damaged records. The first byte picks how the log is made:
//!
//! - `0`: the rest is the whole `journal.log`;
//! - `1`: the magic, then the rest (records as they come);
//! - `2`: the magic, then the rest split at NUL bytes into payloads, each framed with a
//!   correct length and CRC (so that the fuzzer reaches record decoding and replay);
//! - `3`: the rest drives the journal itself (appends of receipts signed by the test key,
//!   state changes, refused operations), then one kind of damage to the file it wrote: a cut
//!   at any byte, garbage appended, or one byte changed.
//!
//! Properties, always: a journal that opens holds only receipts that validate; recovery
//! only ever shortens the file (to a prefix of what was there); opening again cuts
//! nothing more and gives the same receipts and states. For logs the journal wrote (`3`):
//! every refused operation wrote nothing; each new receipt and each effective state change
//! is one record; after a cut at any byte exactly the records before the cut survive, with
//! their states, and the cut is reported where the first incomplete record began; after
//! garbage (with no valid record in it) everything survives; a byte changed in any record
//! but the last is reported as corruption (`JournalError::Corrupt`), never dropped, and a
//! byte changed in the last one cuts just that record.

use std::path::Path;

use alloy_primitives::B256;
use arbitrary::{Arbitrary, Unstructured};
use tribute_attribution::journal::{Journal, JournalError, LOG_FILE, ReceiptState};
use tribute_attribution::receipt::SignedReceipt;
use tribute_attribution_fuzz::{ReceiptSpec, check_parsed, key, ledger, scratch_dir};

const MAGIC: &[u8] = b"TRIBJNL1";
/// Receipts one input may sign (signing dominates the time of an execution).
const MAX_RECEIPTS: usize = 12;

/// What a journal holds: receipt ids and states, in journal order.
type View = Vec<(B256, ReceiptState)>;

#[derive(Debug, Arbitrary)]
enum StateSpec {
    Pending,
    Batched(u8),
    Submitted(u8, u8),
    Confirmed(u8, u8, u64),
}

impl StateSpec {
    fn state(&self) -> ReceiptState {
        match *self {
            StateSpec::Pending => ReceiptState::Pending,
            StateSpec::Batched(b) => ReceiptState::Batched {
                batch_id: B256::repeat_byte(b),
            },
            StateSpec::Submitted(b, t) => ReceiptState::Submitted {
                batch_id: B256::repeat_byte(b),
                tx_hash: B256::repeat_byte(t),
            },
            StateSpec::Confirmed(b, t, block) => ReceiptState::Confirmed {
                batch_id: B256::repeat_byte(b),
                tx_hash: B256::repeat_byte(t),
                block,
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Appends these receipts in one batch (`Some((i, tamper))`: the `i`th receipt signed
    /// before again, or with `tamper` a re-signed copy whose content differs).
    Append(Vec<(ReceiptSpec, Option<(u8, bool)>)>),
    /// Moves receipts (picked by position; 255 is an unknown id) to a state.
    SetState(Vec<u8>, StateSpec),
}

#[derive(Debug, Arbitrary)]
enum Damage {
    None,
    /// Keeps this many bytes (modulo the file length + 1).
    Cut(u32),
    Garbage(Vec<u8>),
    /// XORs the byte at this position (modulo the file length) with a non-zero value.
    Flip(u32, u8),
}

#[derive(Debug, Arbitrary)]
struct Written {
    ops: Vec<Op>,
    damage: Damage,
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let dir = scratch_dir().join("journal");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("journal folder");
        let log = dir.join(LOG_FILE);
        match mode % 4 {
            0 => drop(recover_bytes(&dir, rest.to_vec())),
            1 => drop(recover_bytes(&dir, [MAGIC, rest].concat())),
            2 => {
                let mut bytes = MAGIC.to_vec();
                for payload in rest.split(|&b| b == 0).filter(|p| !p.is_empty()) {
                    bytes.extend_from_slice(&frame(payload));
                }
                if let Some(journal) = recover_bytes(&dir, bytes) {
                    assert_eq!(journal.recovery().truncated_at, None, "cut a valid record");
                }
            }
            _ => {
                if let Ok(input) = Written::arbitrary_take_rest(Unstructured::new(rest)) {
                    written(&dir, &log, input);
                }
            }
        }
    });
}

/// Writes `bytes` as the log, opens it, and checks the properties every recovery has.
fn recover_bytes(dir: &Path, bytes: Vec<u8>) -> Option<Journal> {
    let log = dir.join(LOG_FILE);
    std::fs::write(&log, &bytes).expect("write the log");
    let journal = Journal::open(dir).ok()?;
    Some(check_recovered(dir, journal, &bytes))
}

/// Checks an opened journal against the bytes its log held before: only valid receipts,
/// the file only cut, and opening again changes nothing. Returns the journal reopened.
fn check_recovered(dir: &Path, journal: Journal, before: &[u8]) -> Journal {
    for (r, _) in journal.receipts(None) {
        check_parsed(r);
    }
    let after = std::fs::read(dir.join(LOG_FILE)).expect("read the log");
    if before.len() >= MAGIC.len() {
        assert!(before.starts_with(&after), "recovery rewrote the log");
    } else {
        assert_eq!(after, MAGIC, "a short log becomes an empty journal");
    }
    let recovery = journal.recovery();
    if let Some(at) = recovery.truncated_at {
        assert_eq!(at, after.len() as u64);
        assert_eq!(at + recovery.truncated_bytes, before.len() as u64);
    }
    let view = view(&journal);
    drop(journal);
    let again = Journal::open(dir).expect("a recovered journal opens again");
    assert_eq!(
        again.recovery().truncated_at,
        None,
        "the second open cut again"
    );
    assert_eq!(again.recovery().records, recovery.records);
    assert_eq!(
        self::view(&again),
        view,
        "the second open reads differently"
    );
    again
}

fn view(journal: &Journal) -> View {
    journal
        .receipts(None)
        .map(|(r, s)| (r.receipt.receiptId, *s))
        .collect()
}

/// A record framed as the journal writes it (see the journal's module docs).
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    [&len[..], &h.finalize().to_le_bytes(), payload].concat()
}

/// Whether a record with a matching CRC starts at `pos` (the journal's own test).
fn valid_frame_at(data: &[u8], pos: usize) -> bool {
    let Some(head) = data.get(pos..pos + 8) else {
        return false;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
        return false;
    };
    len > 0 && {
        let mut h = crc32fast::Hasher::new();
        h.update(&head[..4]);
        h.update(payload);
        h.finalize() == crc
    }
}

/// Drives a journal through `input.ops`, damages its log, and checks what recovery keeps.
fn written(dir: &Path, log: &Path, input: Written) {
    let mut journal = Journal::open(dir).expect("a new journal opens");
    // The journal's view after each record, and where each record ends.
    let mut snapshots: Vec<(u64, View)> = vec![(MAGIC.len() as u64, Vec::new())];
    let mut signed: Vec<SignedReceipt> = Vec::new();
    let mut signatures = 0;
    for op in &input.ops {
        let before = view(&journal);
        let len_before = file_len(log);
        let wrote = match op {
            Op::Append(specs) => {
                let mut batch = Vec::new();
                for (spec, reuse) in specs {
                    match reuse {
                        Some((i, false)) if !signed.is_empty() => {
                            batch.push(signed[usize::from(*i) % signed.len()].clone());
                        }
                        // The same id with other content, signed too: a duplicate.
                        Some((i, true)) if !signed.is_empty() && signatures < MAX_RECEIPTS => {
                            signatures += 1;
                            let mut r = signed[usize::from(*i) % signed.len()].receipt.clone();
                            r.nonce = r.nonce.wrapping_add(1);
                            if let Ok(r) = key().sign(r, &ledger()) {
                                batch.push(r);
                            }
                        }
                        _ if signatures < MAX_RECEIPTS => {
                            signatures += 1;
                            if let Ok(r) = key().sign(spec.receipt(), &ledger()) {
                                signed.push(r.clone());
                                batch.push(r);
                            }
                        }
                        _ => {}
                    }
                }
                journal.append_batch(&batch).map(|n| (n, n))
            }
            Op::SetState(picks, state) => {
                let ids: Vec<B256> = picks
                    .iter()
                    .map(|&p| match before.len() {
                        n if n > 0 && p != 255 => before[usize::from(p) % n].0,
                        _ => B256::repeat_byte(0xab),
                    })
                    .collect();
                journal
                    .set_state(&ids, state.state())
                    .map(|n| (n, usize::from(n > 0)))
            }
        };
        let after = view(&journal);
        match wrote {
            Err(e) => {
                assert!(!matches!(e, JournalError::Io { .. }), "{e}");
                assert_eq!(file_len(log), len_before, "a refused operation wrote: {e}");
                assert_eq!(
                    after, before,
                    "a refused operation changed the journal: {e}"
                );
            }
            Ok((_, 0)) => {
                assert_eq!(file_len(log), len_before, "a no-op wrote");
                assert_eq!(after, before);
            }
            Ok((new, records)) => {
                // An append adds `new` receipts, one record each; a state change is one record.
                let data = std::fs::read(log).expect("read the log");
                let mut pos = len_before as usize;
                let mut ends = Vec::new();
                while pos < data.len() {
                    assert!(valid_frame_at(&data, pos), "the journal wrote a bad record");
                    pos += 8 + u32::from_le_bytes([
                        data[pos],
                        data[pos + 1],
                        data[pos + 2],
                        data[pos + 3],
                    ]) as usize;
                    ends.push(pos as u64);
                }
                assert_eq!(ends.len(), records, "records written");
                if matches!(op, Op::Append(_)) {
                    assert_eq!(after.len(), before.len() + new);
                    for (k, end) in ends.iter().enumerate() {
                        snapshots.push((*end, after[..before.len() + k + 1].to_vec()));
                    }
                } else {
                    snapshots.push((ends[0], after.clone()));
                }
            }
        }
    }
    drop(journal);
    let clean = std::fs::read(log).expect("read the log");
    let full = snapshots.last().map(|(_, v)| v.clone()).unwrap_or_default();
    let mut damaged = clean.clone();
    // What must survive, and where a cut must be reported (`None`: no cut).
    let expected: Option<(View, Option<u64>)> = match input.damage {
        Damage::None => Some((full, None)),
        Damage::Cut(keep) => {
            let keep = keep as usize % (clean.len() + 1);
            damaged.truncate(keep);
            let (end, v) = snapshots
                .iter()
                .rev()
                .find(|(end, _)| *end as usize <= keep)
                .cloned()
                .unwrap_or((0, Vec::new()));
            let cut = (keep > MAGIC.len() && end as usize != keep).then_some(end);
            Some((v, cut))
        }
        Damage::Garbage(g) => {
            damaged.extend_from_slice(&g);
            let has_record = (clean.len()..damaged.len()).any(|p| valid_frame_at(&damaged, p));
            match (g.is_empty(), has_record) {
                (true, _) => Some((full, None)),
                (false, false) => Some((full, Some(clean.len() as u64))),
                // A record hidden in the garbage may be replayed or refused.
                (false, true) => None,
            }
        }
        Damage::Flip(at, xor) => {
            let at = at as usize % clean.len();
            damaged[at] ^= xor.max(1);
            let last_start = snapshots
                .iter()
                .rev()
                .nth(1)
                .map_or(usize::MAX, |(end, _)| *end as usize);
            if at < last_start {
                std::fs::write(log, &damaged).expect("write the log");
                match Journal::open(dir) {
                    Err(JournalError::Corrupt { .. }) => {}
                    Err(e) => panic!("damage before the last record: {e}"),
                    Ok(_) => panic!("damage before the last record went unnoticed"),
                }
                assert_eq!(std::fs::read(log).expect("log"), damaged, "nothing is cut");
                return;
            }
            let (end, v) = snapshots[snapshots.len() - 2].clone();
            Some((v, Some(end)))
        }
    };
    std::fs::write(log, &damaged).expect("write the log");
    let journal = match Journal::open(dir) {
        Ok(j) => j,
        Err(e) => {
            assert!(expected.is_none(), "recovery failed: {e}");
            return;
        }
    };
    let recovery = journal.recovery();
    let journal = check_recovered(dir, journal, &damaged);
    if let Some((want, cut)) = expected {
        // Every receipt this input wrote was signed by the test key.
        for (r, _) in journal.receipts(None) {
            r.verify(&ledger()).expect("a recovered receipt verifies");
        }
        assert_eq!(view(&journal), want, "recovery kept the wrong records");
        assert_eq!(recovery.truncated_at, cut, "the cut is reported elsewhere");
    }
}

fn file_len(log: &Path) -> u64 {
    std::fs::metadata(log).expect("log").len()
}
