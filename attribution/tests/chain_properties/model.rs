//! The plain Rust model of the ledger that the chain must equal after every operation.

use super::*;

/// A batch that settled: what it takes to replay it.
#[derive(Debug, Clone)]
pub(crate) struct SettledBatch {
    pub(crate) payer: usize,
    pub(crate) receipts: Vec<SignedReceipt>,
    pub(crate) payouts: Vec<(Address, U256)>,
    pub(crate) root: B256,
    pub(crate) total: U256,
    pub(crate) batch_nonce: u64,
    pub(crate) tx_hash: B256,
    pub(crate) block: u64,
}

/// What the ledger should hold.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) deposits: BTreeMap<Address, U256>,
    pub(crate) balances: BTreeMap<Address, U256>,
    pub(crate) nonces: BTreeMap<Address, u64>,
    pub(crate) models: BTreeMap<B256, Address>,
    pub(crate) adapters: BTreeMap<B256, Address>,
    pub(crate) paid_in: U256,
    pub(crate) paid_out: U256,
    pub(crate) settled: Vec<SettledBatch>,
    pub(crate) next_receipt: u64,
}

impl Model {
    pub(crate) fn deposit(&self, a: Address) -> U256 {
        self.deposits.get(&a).copied().unwrap_or_default()
    }

    pub(crate) fn balance(&self, a: Address) -> U256 {
        self.balances.get(&a).copied().unwrap_or_default()
    }

    pub(crate) fn nonce(&self, a: Address) -> u64 {
        self.nonces.get(&a).copied().unwrap_or_default()
    }

    pub(crate) fn registry(&mut self, adapter: bool) -> &mut BTreeMap<B256, Address> {
        if adapter {
            &mut self.adapters
        } else {
            &mut self.models
        }
    }
}

/// How often each operation ended which way, over the whole run.
pub(crate) type Tally = RefCell<BTreeMap<String, u32>>;

pub(crate) fn count(tally: &Tally, what: impl Into<String>) {
    *tally.borrow_mut().entry(what.into()).or_default() += 1;
}
