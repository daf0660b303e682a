//! Signing keys ([`Signer`]), ledgers (Python dicts) and signed usage receipts ([`Receipt`]).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tribute::attribution::receipt::{Ledger, PayerKey, SignedReceipt};

use crate::error::{ConfigError, ReceiptError, py_err};

/// The payer's signing key: receipts are signed (EIP-712) with it. Its `repr` shows the
/// address only; the key is never printed.
#[pyclass(module = "tribute", frozen)]
pub struct Signer {
    pub(crate) key: PayerKey,
}

#[pymethods]
impl Signer {
    /// The key in the environment variable `var` (hex, with or without `0x`).
    ///
    /// Raises `ReceiptError` when the variable is unset or does not hold a key.
    #[staticmethod]
    #[pyo3(signature = (var = "TRIBUTE_KEY"))]
    fn from_env(var: &str) -> PyResult<Self> {
        Ok(Signer {
            key: PayerKey::from_env(var).map_err(py_err)?,
        })
    }

    /// A key from hex text (with or without `0x`). Raises `ReceiptError` when it is not a
    /// 32-byte private key.
    #[staticmethod]
    fn from_hex(key: &str) -> PyResult<Self> {
        Ok(Signer {
            key: PayerKey::from_hex(key).map_err(py_err)?,
        })
    }

    /// A key from a file holding hex.
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Self> {
        Ok(Signer {
            key: PayerKey::from_file(&path).map_err(py_err)?,
        })
    }

    /// A key from an encrypted JSON keystore (Web3 Secret Storage).
    #[staticmethod]
    fn from_keystore(py: Python<'_>, path: PathBuf, password: &str) -> PyResult<Self> {
        let key = py
            .detach(|| PayerKey::from_keystore(&path, password))
            .map_err(py_err)?;
        Ok(Signer { key })
    }

    /// A new random key (for tests and throw-away accounts).
    #[staticmethod]
    fn random() -> Self {
        Signer {
            key: PayerKey::random(),
        }
    }

    /// The key's address (EIP-55 checksummed).
    #[getter]
    fn address(&self) -> String {
        self.key.address().to_checksum(None)
    }

    fn __repr__(&self) -> String {
        format!("Signer({})", self.address())
    }
}

/// A ledger from a Python value: a dict `{"chainId": 31337, "contract": "0x…"}` (or
/// `chain_id`), or the path of a JSON file holding one (`tribute chain deploy --out`).
pub(crate) fn ledger_from(obj: &Bound<'_, PyAny>) -> PyResult<Ledger> {
    let bad = |m: String| ConfigError::new_err(format!("ledger: {m}"));
    if let Ok(d) = obj.cast::<PyDict>() {
        let chain_id = match d.get_item("chainId")? {
            Some(v) => Some(v),
            None => d.get_item("chain_id")?,
        }
        .ok_or_else(|| bad("missing \"chainId\"".into()))?
        .extract::<u64>()
        .map_err(|_| bad("\"chainId\" must be a non-negative integer".into()))?;
        let contract = d
            .get_item("contract")?
            .ok_or_else(|| bad("missing \"contract\"".into()))?
            .extract::<String>()
            .map_err(|_| bad("\"contract\" must be a 0x-hex address string".into()))?;
        let contract = tribute::Contributor::parse(&contract)
            .map_err(|e| bad(e.to_string()))?
            .address();
        return Ok(Ledger { chain_id, contract });
    }
    let path: PathBuf = obj.extract().map_err(|_| {
        bad("expected a dict {\"chainId\": …, \"contract\": \"0x…\"} or the path of a ledger JSON file".into())
    })?;
    let text =
        std::fs::read_to_string(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// A ledger as the dict [`ledger_from`] accepts.
pub(crate) fn ledger_dict<'py>(py: Python<'py>, l: &Ledger) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("chainId", l.chain_id)?;
    d.set_item("contract", l.contract.to_checksum(None))?;
    Ok(d)
}

/// A signed usage receipt: who paid (`payer`), for which model and adapters, which chunks
/// were cited with which weights (`chunks`), and the fee. Verify it with `verify()`;
/// `to_json()` is the canonical JSON the CLI and the ledger tooling read.
#[pyclass(module = "tribute", frozen)]
pub struct Receipt {
    pub(crate) inner: SignedReceipt,
    /// The ledger `verify()` uses by default (the engine's).
    pub(crate) ledger: Option<Ledger>,
}

impl Receipt {
    pub(crate) fn new(inner: SignedReceipt, ledger: Option<Ledger>) -> Self {
        Receipt { inner, ledger }
    }
}

fn int_from_decimal<'py>(py: Python<'py>, s: &str) -> PyResult<Bound<'py, PyAny>> {
    py.get_type::<pyo3::types::PyInt>().call1((s,))
}

#[pymethods]
impl Receipt {
    /// Parses receipt JSON (as `to_json()` writes it); `ledger` becomes the default of
    /// `verify()`. Raises `ReceiptError` when it is malformed.
    #[staticmethod]
    #[pyo3(signature = (text, ledger = None))]
    fn from_json(text: &str, ledger: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let ledger = ledger.map(ledger_from).transpose()?;
        Ok(Receipt::new(
            SignedReceipt::from_json(text).map_err(py_err)?,
            ledger,
        ))
    }

    /// Checks the signature: recovers the signer, checks that it is the payer, and returns
    /// the payer's address. `ledger` (a dict or a ledger file) defaults to the engine's.
    ///
    /// Raises `ReceiptError` when the signature does not match or no ledger is known.
    #[pyo3(signature = (ledger = None))]
    fn verify(&self, ledger: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let ledger = match ledger {
            Some(l) => ledger_from(l)?,
            None => self.ledger.ok_or_else(|| {
                ReceiptError::new_err(
                    "no ledger to verify against: pass verify(ledger={\"chainId\": …, \"contract\": \"0x…\"})",
                )
            })?,
        };
        self.inner.verify(&ledger).map_err(py_err)?;
        Ok(self.inner.receipt.payer.to_checksum(None))
    }

    /// The receipt id (0x-hex, 32 bytes).
    #[getter]
    fn id(&self) -> String {
        self.inner.receipt.receiptId.to_string()
    }

    /// The payer's address.
    #[getter]
    fn payer(&self) -> String {
        self.inner.receipt.payer.to_checksum(None)
    }

    /// The serving node's address.
    #[getter]
    fn serving_node(&self) -> String {
        self.inner.receipt.servingNode.to_checksum(None)
    }

    /// The model's on-chain id (0x-hex; zero for a retrieval-only receipt).
    #[getter]
    fn model_id(&self) -> String {
        self.inner.receipt.modelId.to_string()
    }

    /// The fee in wei.
    #[getter]
    fn fee<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        int_from_decimal(py, &self.inner.receipt.fee.to_string())
    }

    /// The payer's receipt counter.
    #[getter]
    fn nonce(&self) -> u64 {
        self.inner.receipt.nonce
    }

    /// Seconds since the Unix epoch when it was signed.
    #[getter]
    fn timestamp(&self) -> u64 {
        self.inner.receipt.timestamp
    }

    /// keccak-256 of the question.
    #[getter]
    fn query_hash(&self) -> String {
        self.inner.receipt.queryHash.to_string()
    }

    /// keccak-256 of the answer.
    #[getter]
    fn answer_hash(&self) -> String {
        self.inner.receipt.answerHash.to_string()
    }

    /// The cited chunks: dicts with `content_hash`, `contributor` and `weight_bps`
    /// (summing to 10,000).
    #[getter]
    fn chunks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for c in &self.inner.receipt.chunks {
            let d = PyDict::new(py);
            d.set_item("content_hash", c.contentHash.to_string())?;
            d.set_item("contributor", c.contributor.to_checksum(None))?;
            d.set_item("weight_bps", c.weightBps)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The adapters used: `(adapter id as 0x-hex, weight)` pairs.
    #[getter]
    fn adapters(&self) -> Vec<(String, f64)> {
        self.inner
            .receipt
            .adapters
            .iter()
            .map(|a| (a.adapterId.to_string(), f64::from(a.weightMicros) / 1e6))
            .collect()
    }

    /// The canonical JSON (fixed key order, EIP-55 addresses, the fee in decimal).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// The canonical JSON as a dict (camelCase keys, as in `to_json()`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyModule::import(py, "json")?.call_method1("loads", (self.inner.to_json(),))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Receipt>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __hash__(&self) -> u64 {
        let id = self.inner.receipt.receiptId;
        u64::from_be_bytes(id.0[..8].try_into().unwrap_or_default())
    }

    fn __repr__(&self) -> String {
        let r = &self.inner.receipt;
        format!(
            "Receipt(id={}, payer={}, fee={}, chunks={}, nonce={})",
            r.receiptId,
            r.payer.to_checksum(None),
            r.fee,
            r.chunks.len(),
            r.nonce
        )
    }
}

/// One settled batch of a [`SettleReport`].
#[pyclass(module = "tribute", frozen, get_all)]
pub struct SettledBatch {
    /// The batch's Merkle root (0x-hex).
    pub root: String,
    /// The settling transaction (0x-hex).
    pub tx_hash: String,
    /// Its block (None when it was settled by an earlier run and not looked up).
    pub block_number: Option<u64>,
    /// Gas the transaction used.
    pub gas_used: u64,
    /// Payees credited.
    pub payee_count: u64,
    /// Σ payouts in wei, debited from the payer's deposit.
    pub total_wei: u128,
    /// Receipts in the batch.
    pub receipts: usize,
    /// Whether it was an unfinished batch of an earlier run.
    pub resumed: bool,
    /// Whether an earlier run had already settled it (nothing was sent).
    pub already_settled: bool,
}

#[pymethods]
impl SettledBatch {
    fn __repr__(&self) -> String {
        format!(
            "SettledBatch(receipts={}, payees={}, total_wei={}, gas_used={}, tx={})",
            self.receipts, self.payee_count, self.total_wei, self.gas_used, self.tx_hash
        )
    }
}

/// What `Engine.settle` did.
#[pyclass(module = "tribute", frozen, get_all)]
pub struct SettleReport {
    /// The batches confirmed, in order.
    pub batches: Vec<Py<SettledBatch>>,
    /// Batches mined but not yet `chain.confirmations` deep (their receipts stay
    /// submitted; a later `settle` confirms them).
    pub awaiting: Vec<Py<SettledBatch>>,
    /// Roots the journal had confirmed that a reorg dropped from the chain (settled again).
    pub reorged: Vec<String>,
    /// Confirmed roots the chain now holds in another transaction or block (re-confirmed
    /// there).
    pub moved: Vec<String>,
    /// Batches that could not be finished, left as they were: `(root, why)` pairs.
    pub unresolved: Vec<(String, String)>,
    /// Pending receipts left alone because they do not verify on this ledger:
    /// `(receipt_id, why)` pairs.
    pub skipped: Vec<(String, String)>,
    /// Pending receipts of other payers (left alone).
    pub other_payers: usize,
    /// This payer's receipts still pending.
    pub still_pending: usize,
    /// Receipts confirmed by this call.
    pub confirmed_receipts: usize,
    /// Gas used by this call's settlement transactions.
    pub gas_used: u64,
}

impl SettleReport {
    pub(crate) fn new(
        py: Python<'_>,
        r: tribute::attribution::settle::SettleReport,
    ) -> PyResult<Self> {
        let batch = |b: &tribute::attribution::settle::BatchOutcome| {
            let s = &b.settlement;
            Py::new(
                py,
                SettledBatch {
                    root: s.root.to_string(),
                    tx_hash: s.tx_hash.to_string(),
                    block_number: s.block_number,
                    gas_used: s.gas_used,
                    payee_count: s.payee_count,
                    total_wei: u128::try_from(s.total).unwrap_or(u128::MAX),
                    receipts: b.receipts,
                    resumed: b.resumed,
                    already_settled: s.already_settled,
                },
            )
        };
        Ok(SettleReport {
            batches: r.batches.iter().map(batch).collect::<PyResult<_>>()?,
            awaiting: r.awaiting.iter().map(batch).collect::<PyResult<_>>()?,
            reorged: r.reorged.iter().map(|root| root.to_string()).collect(),
            moved: r.moved.iter().map(|root| root.to_string()).collect(),
            unresolved: r
                .unresolved
                .iter()
                .map(|(root, why)| (root.to_string(), why.clone()))
                .collect(),
            skipped: r
                .skipped
                .iter()
                .map(|(id, why)| (id.to_string(), why.clone()))
                .collect(),
            other_payers: r.other_payers,
            still_pending: r.still_pending,
            confirmed_receipts: r.confirmed_receipts(),
            gas_used: r.gas_used(),
        })
    }
}

#[pymethods]
impl SettleReport {
    fn __repr__(&self) -> String {
        format!(
            "SettleReport(batches={}, confirmed_receipts={}, gas_used={}, skipped={}, still_pending={})",
            self.batches.len(),
            self.confirmed_receipts,
            self.gas_used,
            self.skipped.len(),
            self.still_pending
        )
    }
}
