//! Where a receipt is in settlement, and the moves the journal allows between states.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use super::JournalError;

/// Where a receipt is in settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase", deny_unknown_fields)]
pub enum ReceiptState {
    /// Journaled, not yet in a batch.
    Pending,
    /// In the Merkle batch `batch_id` (its root, for example).
    #[serde(rename_all = "camelCase")]
    Batched {
        /// The batch.
        batch_id: B256,
    },
    /// The batch was sent to the chain in transaction `tx_hash`.
    #[serde(rename_all = "camelCase")]
    Submitted {
        /// The batch.
        batch_id: B256,
        /// The settlement transaction.
        tx_hash: B256,
    },
    /// The settlement transaction was mined in `block`.
    #[serde(rename_all = "camelCase")]
    Confirmed {
        /// The batch.
        batch_id: B256,
        /// The settlement transaction.
        tx_hash: B256,
        /// The block number.
        block: u64,
    },
}

/// The kind of a [`ReceiptState`], without its data; ordered from first to last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKind {
    /// [`ReceiptState::Pending`].
    Pending,
    /// [`ReceiptState::Batched`].
    Batched,
    /// [`ReceiptState::Submitted`].
    Submitted,
    /// [`ReceiptState::Confirmed`].
    Confirmed,
}

impl ReceiptState {
    /// The state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            ReceiptState::Pending => StateKind::Pending,
            ReceiptState::Batched { .. } => StateKind::Batched,
            ReceiptState::Submitted { .. } => StateKind::Submitted,
            ReceiptState::Confirmed { .. } => StateKind::Confirmed,
        }
    }

    /// The batch, once there is one.
    pub fn batch_id(&self) -> Option<B256> {
        match *self {
            ReceiptState::Pending => None,
            ReceiptState::Batched { batch_id }
            | ReceiptState::Submitted { batch_id, .. }
            | ReceiptState::Confirmed { batch_id, .. } => Some(batch_id),
        }
    }

    /// The settlement transaction, once there is one.
    pub fn tx_hash(&self) -> Option<B256> {
        match *self {
            ReceiptState::Submitted { tx_hash, .. } | ReceiptState::Confirmed { tx_hash, .. } => {
                Some(tx_hash)
            }
            _ => None,
        }
    }

    /// Whether a receipt in this state may move to `next`: forward only (steps may be
    /// skipped), keeping its batch id once it has one. A submitted receipt may be submitted
    /// again in another transaction and confirmed in any transaction of its batch (a
    /// resubmission replaces a transaction that was dropped or reverted; the contract
    /// settles a batch root at most once). Two moves undo a reorg, always within the
    /// batch: a confirmed receipt whose settlement the chain no longer holds goes back to
    /// `batched`, and one whose settlement moved is confirmed again in its new transaction
    /// and block. Moving to the same state is allowed (a no-op).
    pub fn can_become(&self, next: &ReceiptState) -> bool {
        if self == next {
            return true;
        }
        let resubmit = self.kind() == StateKind::Submitted && next.kind() == StateKind::Submitted;
        let reorg = self.kind() == StateKind::Confirmed
            && matches!(next.kind(), StateKind::Batched | StateKind::Confirmed);
        if next.kind() <= self.kind() && !resubmit && !reorg {
            return false;
        }
        let keeps = |a: Option<B256>, b: Option<B256>| a.is_none() || a == b;
        keeps(self.batch_id(), next.batch_id())
    }
}

impl fmt::Display for ReceiptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiptState::Pending => write!(f, "pending"),
            ReceiptState::Batched { batch_id } => write!(f, "batched in {batch_id}"),
            ReceiptState::Submitted { batch_id, tx_hash } => {
                write!(f, "submitted (batch {batch_id}, tx {tx_hash})")
            }
            ReceiptState::Confirmed {
                batch_id,
                tx_hash,
                block,
            } => write!(
                f,
                "confirmed in block {block} (batch {batch_id}, tx {tx_hash})"
            ),
        }
    }
}

impl StateKind {
    /// Every kind, first to last.
    pub const ALL: [StateKind; 4] = [
        StateKind::Pending,
        StateKind::Batched,
        StateKind::Submitted,
        StateKind::Confirmed,
    ];

    /// The kind's name, as the CLI, the MCP server and the Python binding spell it:
    /// `pending`, `batched`, `submitted` or `confirmed`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Pending => "pending",
            StateKind::Batched => "batched",
            StateKind::Submitted => "submitted",
            StateKind::Confirmed => "confirmed",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StateKind {
    type Err = JournalError;

    /// Parses a name written by [`StateKind::as_str`] (exactly, lowercase).
    fn from_str(s: &str) -> Result<Self, JournalError> {
        StateKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| JournalError::UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_go_forward_and_keep_batch_and_tx() {
        let b1 = B256::repeat_byte(1);
        let b2 = B256::repeat_byte(2);
        let t1 = B256::repeat_byte(3);
        let p = ReceiptState::Pending;
        let bat = ReceiptState::Batched { batch_id: b1 };
        let sub = ReceiptState::Submitted {
            batch_id: b1,
            tx_hash: t1,
        };
        let conf = ReceiptState::Confirmed {
            batch_id: b1,
            tx_hash: t1,
            block: 9,
        };
        for (a, b) in [(p, bat), (bat, sub), (sub, conf), (p, conf)] {
            assert!(a.can_become(&b), "{a} -> {b}");
            assert!(!b.can_become(&a), "{b} -> {a}");
        }
        // A reorg: a confirmed receipt goes back to its own batch, never to pending, to
        // another batch or to a transaction without being settled again.
        assert!(bat.can_become(&conf) && conf.can_become(&bat));
        assert!(!conf.can_become(&ReceiptState::Batched { batch_id: b2 }));
        assert!(!conf.can_become(&sub));
        let moved = ReceiptState::Confirmed {
            batch_id: b1,
            tx_hash: b2,
            block: 10,
        };
        assert!(conf.can_become(&moved) && moved.can_become(&conf));
        assert!(!conf.can_become(&ReceiptState::Confirmed {
            batch_id: b2,
            tx_hash: t1,
            block: 9
        }));
        for s in [p, bat, sub, conf] {
            assert!(s.can_become(&s));
        }
        assert!(!bat.can_become(&ReceiptState::Batched { batch_id: b2 }));
        assert!(!bat.can_become(&ReceiptState::Submitted {
            batch_id: b2,
            tx_hash: t1
        }));
        // A resubmission may replace the transaction, never the batch.
        let resub = ReceiptState::Submitted {
            batch_id: b1,
            tx_hash: b2,
        };
        assert!(sub.can_become(&resub));
        assert!(sub.can_become(&ReceiptState::Confirmed {
            batch_id: b1,
            tx_hash: b2,
            block: 1
        }));
        assert!(!sub.can_become(&ReceiptState::Confirmed {
            batch_id: b2,
            tx_hash: t1,
            block: 1
        }));
        assert!(!conf.can_become(&resub));
    }

    #[test]
    fn state_kind_names_round_trip() {
        let names: Vec<&str> = StateKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["pending", "batched", "submitted", "confirmed"]);
        for kind in StateKind::ALL {
            assert_eq!(kind.as_str().parse::<StateKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        // `ALL` is in order, first to last, as `StateKind`'s `Ord` is.
        assert!(StateKind::ALL.is_sorted());
        for bad in ["", "Pending", "PENDING", " pending", "settled"] {
            let e = bad.parse::<StateKind>().unwrap_err();
            assert!(
                matches!(&e, JournalError::UnknownState(s) if s == bad),
                "{e}"
            );
            assert_eq!(
                e.to_string(),
                format!("unknown receipt state {bad:?} (pending, batched, submitted, confirmed)")
            );
        }
    }
}
