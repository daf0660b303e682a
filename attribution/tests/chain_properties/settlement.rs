//! Settlements: receipts, the off-chain split, settling, replays and forged signatures.

use super::*;

impl World {
    /// A receipt of `payer` built from `spec`, numbered by the model's counter.
    pub(crate) fn receipt(&self, payer: usize, spec: &ReceiptSpec, m: &mut Model) -> UsageReceipt {
        let n = m.next_receipt;
        m.next_receipt += 1;
        let raw_sum: u32 = spec.contributors.iter().map(|(_, w)| u32::from(*w)).sum();
        let mut left = 10_000_u32;
        let chunks = spec
            .contributors
            .iter()
            .enumerate()
            .map(|(i, (who, raw))| {
                // Normalised to 10,000 bps; the last chunk takes what rounding left.
                let bps = if i + 1 == spec.contributors.len() {
                    left
                } else {
                    u32::from(*raw) * 10_000 / raw_sum
                };
                left -= bps;
                CitedChunk {
                    contentHash: keccak256(format!("chunk-{n}-{i}")),
                    contributor: self.addresses[*who],
                    weightBps: u16::try_from(bps).unwrap_or(u16::MAX),
                }
            })
            .collect();
        UsageReceipt {
            // Version 1 (no attributionHash) still settles next to the current version.
            version: if spec.version_1 { 1 } else { RECEIPT_VERSION },
            receiptId: keccak256(format!("receipt-{n}")),
            payer: self.addresses[payer],
            servingNode: self.addresses[SETTLER],
            modelId: spec.model.map_or(B256::ZERO, model_id),
            adapters: spec
                .adapters
                .iter()
                .map(|(id, micros)| AdapterUse {
                    adapterId: adapter_id(*id),
                    weightMicros: *micros,
                })
                .collect(),
            queryHash: keccak256(format!("query-{n}")),
            answerHash: keccak256(format!("answer-{n}")),
            chunks,
            fee: U256::from(spec.fee),
            nonce: n,
            timestamp: 1_760_000_000 + n,
            attributionHash: if spec.version_1 {
                B256::ZERO
            } else {
                keccak256(format!("record-{n}"))
            },
        }
    }

    /// Owners from the ledger's registry (as `settle_journal` reads them); ids without an
    /// owner pay the treasury.
    pub(crate) async fn owners(&self, receipts: &[SignedReceipt]) -> Result<Owners, TestCaseError> {
        let c = self.settler();
        let mut owners = Owners::new(self.addresses[TREASURY]);
        owners.fallback = Some(self.addresses[TREASURY]);
        for r in receipts {
            if let Some(o) = c.model_owner(r.receipt.modelId).await.map_err(fail)? {
                owners.models.insert(r.receipt.modelId, o);
            }
            for a in &r.receipt.adapters {
                if let Some(o) = c.adapter_owner(a.adapterId).await.map_err(fail)? {
                    owners.adapters.insert(a.adapterId, o);
                }
            }
        }
        Ok(owners)
    }

    /// What each address must be credited: every receipt split on its own, summed here.
    pub(crate) fn expected_credits(
        receipts: &[SignedReceipt],
        rewards: &RewardConfig,
        owners: &Owners,
    ) -> Result<BTreeMap<Address, U256>, TestCaseError> {
        let lookup = |table: &std::collections::HashMap<B256, Address>, id: B256| {
            table.get(&id).copied().unwrap_or(owners.treasury)
        };
        let mut credits: BTreeMap<Address, U256> = BTreeMap::new();
        for r in receipts.iter().map(|s| &s.receipt) {
            let model_owner = if r.modelId.is_zero() {
                owners.treasury
            } else {
                lookup(&owners.models, r.modelId)
            };
            let mut request = SplitRequest::builder(r.fee)
                .model_owner(model_owner)
                .treasury(owners.treasury);
            for c in &r.chunks {
                request = request.contributor(c.contributor, u32::from(c.weightBps));
            }
            for a in &r.adapters {
                request = request.adapter(
                    lookup(&owners.adapters, a.adapterId),
                    f64::from(a.weightMicros) / 1e6,
                );
            }
            let split = rewards
                .split(&request.build().map_err(fail)?)
                .map_err(fail)?;
            let paid: U256 = split.payouts.iter().map(|p| p.amount).sum();
            prop_assert_eq!(paid, r.fee, "a receipt's split does not sum to its fee");
            for p in split.payouts {
                *credits.entry(p.address).or_default() += p.amount;
            }
        }
        credits.retain(|_, a| !a.is_zero());
        Ok(credits)
    }

    pub(crate) async fn settle(
        &self,
        payer: usize,
        specs: &[ReceiptSpec],
        rewards: &RewardConfig,
        m: &mut Model,
        tally: &Tally,
    ) -> Result<(), TestCaseError> {
        let key = &self.keys[payer];
        let a = self.addresses[payer];
        let mut receipts = Vec::with_capacity(specs.len());
        for spec in specs {
            let r = self.receipt(payer, spec, m);
            receipts.push(key.sign(r, &self.ledger).map_err(fail)?);
        }
        let owners = self.owners(&receipts).await?;
        let payouts = batch_payouts(&receipts, rewards, &owners).map_err(fail)?;
        let credits = Self::expected_credits(&receipts, rewards, &owners)?;
        prop_assert_eq!(
            payouts.iter().copied().collect::<BTreeMap<_, _>>(),
            credits.clone(),
            "batch_payouts differs from the receipts' splits"
        );
        let fees: U256 = receipts.iter().map(|r| r.receipt.fee).sum();
        let have = m.deposit(a);
        let balances_before = self.balances().await?;
        match self.settler().settle(key, &receipts, &payouts).await {
            Ok(s) => {
                prop_assert!(!s.already_settled);
                prop_assert!(fees <= have);
                prop_assert_eq!((s.payer, s.total, s.batch_nonce), (a, fees, m.nonce(a)));
                // Each payee credited exactly its split, nobody else anything.
                let after = self.balances().await?;
                for (i, addr) in self.addresses.iter().enumerate() {
                    let want = credits.get(addr).copied().unwrap_or_default();
                    prop_assert_eq!(
                        after[i],
                        balances_before[i] + want,
                        "credit of account {}",
                        i
                    );
                }
                m.deposits.insert(a, have - fees);
                for (addr, amount) in &credits {
                    *m.balances.entry(*addr).or_default() += *amount;
                }
                m.nonces.insert(a, s.batch_nonce + 1);
                m.settled.push(SettledBatch {
                    payer,
                    receipts,
                    payouts,
                    root: s.root,
                    total: s.total,
                    batch_nonce: s.batch_nonce,
                    tx_hash: s.tx_hash,
                    block: s.block_number.unwrap_or_default(),
                });
                count(tally, "settle");
            }
            Err(ChainError::InsufficientDeposit { have: h, need }) => {
                prop_assert_eq!((h, need), (have, fees));
                prop_assert!(fees > have);
                count(tally, "settle refused: InsufficientDeposit");
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    /// A settled batch once more, three ways; none may pay again.
    pub(crate) async fn replay(
        &self,
        b: &SettledBatch,
        m: &Model,
        tally: &Tally,
    ) -> Result<(), TestCaseError> {
        let key = &self.keys[b.payer];
        let a = self.addresses[b.payer];
        let settler = self.settler();
        // 1. The checked path: the first settlement comes back, nothing is sent.
        let sent = settler
            .provider()
            .get_transaction_count(settler.sender())
            .await
            .map_err(fail)?;
        let again = settler
            .settle(key, &b.receipts, &b.payouts)
            .await
            .map_err(fail)?;
        prop_assert!(again.already_settled);
        prop_assert_eq!(
            (again.tx_hash, again.batch_nonce),
            (b.tx_hash, b.batch_nonce)
        );
        let sent_after = settler
            .provider()
            .get_transaction_count(settler.sender())
            .await
            .map_err(fail)?;
        prop_assert_eq!(sent, sent_after, "a settled batch was sent again");
        // 2. The original signed call relayed again: Replay (typed), and a mined revert.
        let sign = |nonce: u64| {
            let (payees, amounts): (Vec<Address>, Vec<U256>) = b.payouts.iter().copied().unzip();
            let message = SettleBatch {
                payer: a,
                root: b.root,
                total: b.total,
                payoutsHash: payouts_hash(&payees, &amounts),
                batchNonce: nonce,
            };
            key.sign_batch(&message, &self.ledger).map_err(fail)
        };
        let original = sign(b.batch_nonce)?;
        let e = settler
            .submit_batch(a, b.root, &b.payouts, b.batch_nonce, &original)
            .await;
        prop_assert!(matches!(e, Err(ChainError::Replay)), "{:?}", e);
        self.forced_settle_reverts(a, b.root, &b.payouts, b.batch_nonce, &original)
            .await?;
        // 3. The root re-signed for the payer's next nonce (a settler that lost track of it),
        //    however many batches came after it: Replay(), and nothing moves.
        let next = m.nonce(a);
        let resigned = sign(next)?;
        let e = settler
            .submit_batch(a, b.root, &b.payouts, next, &resigned)
            .await;
        prop_assert!(matches!(e, Err(ChainError::Replay)), "{:?}", e);
        self.forced_settle_reverts(a, b.root, &b.payouts, next, &resigned)
            .await?;
        let latest = m.settled.iter().rev().find(|s| s.payer == b.payer);
        if latest.map(|s| s.root) == Some(b.root) {
            count(
                tally,
                "replay refused: again + relayed + re-signed, latest root",
            );
        } else {
            count(
                tally,
                "replay refused: again + relayed + re-signed, older root",
            );
        }
        Ok(())
    }

    /// A settlement signed wrongly: refused by simulation (typed) and reverted when mined.
    pub(crate) async fn forged(
        &self,
        payer: usize,
        forgery: &Forgery,
        m: &mut Model,
        tally: &Tally,
    ) -> Result<(), TestCaseError> {
        let a = self.addresses[payer];
        let treasury = self.addresses[TREASURY];
        let other_chain = |id: u64| {
            let chain_id = if id == self.ledger.chain_id {
                id ^ 1
            } else {
                id
            };
            Ledger {
                chain_id,
                ..self.ledger
            }
        };
        let spec = ReceiptSpec {
            fee: 1_000,
            version_1: false,
            model: None,
            adapters: vec![],
            contributors: vec![(*PEOPLE.start(), 1)],
        };
        let r = self.receipt(payer, &spec, m);
        let receipt_ledger = match forgery {
            Forgery::ReceiptChainId(id) => other_chain(*id),
            _ => self.ledger,
        };
        let receipts = vec![self.keys[payer].sign(r, &receipt_ledger).map_err(fail)?];
        let payouts = vec![(treasury, U256::from(spec.fee))];
        let settler = self.settler();
        let batch = match settler.prepare(a, &receipts, &payouts) {
            Ok(batch) => batch,
            Err(ChainError::InvalidReceipt { index: 0, .. })
                if matches!(forgery, Forgery::ReceiptChainId(_)) =>
            {
                count(tally, "forged refused off chain: receipt for another chain");
                return Ok(());
            }
            Err(e) => return Err(fail(e)),
        };
        let message = SettleBatch {
            payer: a,
            root: batch.root,
            total: batch.total,
            payoutsHash: payouts_hash(&[treasury], &[U256::from(spec.fee)]),
            batchNonce: m.nonce(a),
        };
        let (label, signer, domain) = match forgery {
            Forgery::OtherAccount(i) => {
                let i = if *i == payer { (i + 1) % ACCOUNTS } else { *i };
                ("another account", self.keys[i].clone(), self.ledger)
            }
            Forgery::RandomKey(bytes) => {
                let key = PrivateKeySigner::from_bytes(&B256::from(*bytes))
                    .map(PayerKey::from)
                    .unwrap_or_else(|_| PayerKey::random());
                ("a random key", key, self.ledger)
            }
            Forgery::ChainId(id) => (
                "another chain id",
                self.keys[payer].clone(),
                other_chain(*id),
            ),
            Forgery::Contract(bytes) => {
                let mut contract = Address::from(*bytes);
                if contract == self.ledger.contract {
                    contract = Address::repeat_byte(0x42);
                }
                let ledger = Ledger {
                    contract,
                    ..self.ledger
                };
                ("another contract", self.keys[payer].clone(), ledger)
            }
            Forgery::ReceiptChainId(_) => {
                return Err(fail("a receipt signed for another chain verified"));
            }
        };
        let signature = signer.sign_batch(&message, &domain).map_err(fail)?;
        let e = settler
            .submit_batch(a, batch.root, &payouts, m.nonce(a), &signature)
            .await;
        prop_assert!(
            matches!(e, Err(ChainError::BadSignature)),
            "{}: {:?}",
            label,
            e
        );
        self.forced_settle_reverts(a, batch.root, &payouts, m.nonce(a), &signature)
            .await?;
        count(
            tally,
            format!("forged refused (BadSignature, mined revert): {label}"),
        );
        Ok(())
    }

    /// Sends `settleBatch` with a fixed gas limit (no simulation, no estimate) and checks that
    /// the mined transaction reverted.
    pub(crate) async fn forced_settle_reverts(
        &self,
        payer: Address,
        root: B256,
        payouts: &[(Address, U256)],
        batch_nonce: u64,
        signature: &Signature,
    ) -> Result<(), TestCaseError> {
        let settler = self.settler();
        let (payees, amounts): (Vec<Address>, Vec<U256>) = payouts.iter().copied().unzip();
        let call = settler.contract().settleBatch(
            payer,
            root,
            payees,
            amounts,
            batch_nonce,
            Bytes::from(signature.as_bytes().to_vec()),
        );
        let pending = call.gas(FORCED_GAS).send().await.map_err(fail)?;
        let mined = settler.wait_for("settleBatch", *pending.tx_hash()).await;
        prop_assert!(
            matches!(mined, Err(ChainError::Reverted { .. })),
            "{:?}",
            mined
        );
        Ok(())
    }
}
