//! The chain side: one anvil with a ledger, running cases, applying operations and checking
//! the ledger against the model.

use super::*;

/// One anvil with a deployed ledger and a client and key per account.
pub(crate) struct World {
    pub(crate) _anvil: AnvilInstance,
    pub(crate) ledger: Ledger,
    pub(crate) clients: Vec<LedgerClient>,
    pub(crate) keys: Vec<PayerKey>,
    pub(crate) addresses: Vec<Address>,
}

impl World {
    pub(crate) async fn start() -> World {
        let anvil = Anvil::new()
            .path(anvil_path())
            .try_spawn()
            .expect("spawn anvil");
        let url = anvil.endpoint();
        let signer = |i: usize| PrivateKeySigner::from(anvil.keys()[i].clone());
        let ledger = chain::deploy(&url, signer(SETTLER)).await.expect("deploy");
        let mut clients = Vec::with_capacity(ACCOUNTS);
        for i in 0..ACCOUNTS {
            let client = LedgerClient::connect(&url, signer(i), ledger)
                .await
                .expect("connect");
            clients.push(client);
        }
        World {
            ledger,
            keys: (0..ACCOUNTS).map(|i| PayerKey::from(signer(i))).collect(),
            addresses: anvil.addresses()[..ACCOUNTS].to_vec(),
            clients,
            _anvil: anvil,
        }
    }

    pub(crate) fn settler(&self) -> &LedgerClient {
        &self.clients[SETTLER]
    }

    pub(crate) async fn snapshot(&self) -> Result<U256, TestCaseError> {
        self.settler()
            .provider()
            .raw_request::<_, U256>("evm_snapshot".into(), ())
            .await
            .map_err(fail)
    }

    pub(crate) async fn revert(&self, id: U256) -> Result<(), TestCaseError> {
        let ok = self
            .settler()
            .provider()
            .raw_request::<_, bool>("evm_revert".into(), (id,))
            .await
            .map_err(fail)?;
        prop_assert!(ok, "evm_revert({}) refused", id);
        Ok(())
    }

    /// Runs one case from the post-deployment state and reverts to it afterwards.
    pub(crate) async fn run_case(&self, case: &Case, tally: &Tally) -> Result<(), TestCaseError> {
        let snapshot = self.snapshot().await?;
        let outcome = self.run_ops(case, tally).await;
        self.revert(snapshot).await?;
        outcome
    }

    pub(crate) async fn run_ops(&self, case: &Case, tally: &Tally) -> Result<(), TestCaseError> {
        let rewards = RewardConfig {
            policy: case.policy,
            ..RewardConfig::default()
        };
        let mut model = Model::default();
        for (step, op) in case.ops.iter().enumerate() {
            self.apply(op, &rewards, &mut model, tally)
                .await
                .map_err(|e| fail(format!("step {step} {op:?}: {e}")))?;
            self.check(&model)
                .await
                .map_err(|e| fail(format!("after step {step} {op:?}: {e}")))?;
        }
        self.check_settled_once(&model).await
    }

    pub(crate) async fn apply(
        &self,
        op: &Op,
        rewards: &RewardConfig,
        m: &mut Model,
        tally: &Tally,
    ) -> Result<(), TestCaseError> {
        match op {
            Op::Deposit { payer, wei } => {
                let wei = U256::from(*wei);
                self.clients[*payer].deposit(wei).await.map_err(fail)?;
                *m.deposits.entry(self.addresses[*payer]).or_default() += wei;
                m.paid_in += wei;
                count(tally, "deposit");
            }
            Op::WithdrawDeposit { payer, wei } => {
                self.withdraw_deposit(*payer, U256::from(*wei), m, tally)
                    .await?;
            }
            Op::Settle { payer, receipts } => {
                self.settle(*payer, receipts, rewards, m, tally).await?;
            }
            Op::Replay { pick } => {
                if m.settled.is_empty() {
                    count(tally, "replay: nothing settled yet");
                } else {
                    let batch = m.settled[pick.index(m.settled.len())].clone();
                    self.replay(&batch, m, tally).await?;
                }
            }
            Op::Forged { payer, forgery } => self.forged(*payer, forgery, m, tally).await?,
            Op::Withdraw { who, earner } => {
                let earners: Vec<usize> = (0..ACCOUNTS)
                    .filter(|i| !m.balance(self.addresses[*i]).is_zero())
                    .collect();
                let who = match earner {
                    Some(pick) if !earners.is_empty() => earners[pick.index(earners.len())],
                    _ => *who,
                };
                let a = self.addresses[who];
                match self.clients[who].withdraw().await {
                    Ok(got) => {
                        prop_assert_eq!(got, m.balance(a));
                        prop_assert!(!got.is_zero());
                        m.balances.remove(&a);
                        m.paid_out += got;
                        count(tally, "withdraw");
                    }
                    Err(ChainError::NothingToWithdraw) => {
                        prop_assert!(m.balance(a).is_zero());
                        count(tally, "withdraw refused: NothingToWithdraw");
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            Op::Register {
                adapter,
                id,
                owner,
                sender,
            } => {
                self.register(*adapter, *id, *owner, *sender, m, tally)
                    .await?
            }
            Op::Transfer {
                adapter,
                id,
                by_owner,
                from,
                to,
            } => {
                let registered: Vec<(B256, Address)> =
                    m.registry(*adapter).iter().map(|(k, o)| (*k, *o)).collect();
                let (key, from) = match registered.len() {
                    n if n > 0 && *by_owner => {
                        let (key, owner) = registered[id.index(n)];
                        (key, self.index_of(owner))
                    }
                    _ if *adapter => (adapter_id(id.index(IDS)), *from),
                    _ => (model_id(id.index(IDS)), *from),
                };
                let owner = m.registry(*adapter).get(&key).copied();
                let to = self.addresses[*to];
                let c = &self.clients[from];
                let result = if *adapter {
                    transact(c, "transferAdapter", c.contract().transferAdapter(key, to)).await
                } else {
                    transact(c, "transferModel", c.contract().transferModel(key, to)).await
                };
                match result {
                    Ok(()) => {
                        prop_assert_eq!(owner, Some(self.addresses[from]));
                        m.registry(*adapter).insert(key, to);
                        count(tally, "transfer");
                    }
                    Err(ChainError::NotOwner) => {
                        prop_assert_ne!(owner, Some(self.addresses[from]));
                        count(tally, "transfer refused: NotOwner");
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
        }
        Ok(())
    }

    pub(crate) fn index_of(&self, a: Address) -> usize {
        self.addresses
            .iter()
            .position(|x| *x == a)
            .unwrap_or(SETTLER)
    }

    pub(crate) async fn withdraw_deposit(
        &self,
        payer: usize,
        wei: U256,
        m: &mut Model,
        tally: &Tally,
    ) -> Result<(), TestCaseError> {
        let c = &self.clients[payer];
        let a = self.addresses[payer];
        let have = m.deposit(a);
        match transact(c, "withdrawDeposit", c.contract().withdrawDeposit(wei)).await {
            Ok(()) => {
                prop_assert!(wei <= have);
                m.deposits.insert(a, have - wei);
                m.paid_out += wei;
                count(tally, "withdrawDeposit");
            }
            Err(ChainError::InsufficientDeposit { have: h, need }) => {
                prop_assert_eq!((h, need), (have, wei));
                prop_assert!(wei > have);
                count(tally, "withdrawDeposit refused: InsufficientDeposit");
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    pub(crate) async fn register(
        &self,
        adapter: bool,
        id: usize,
        owner: Option<usize>,
        sender: usize,
        m: &mut Model,
        tally: &Tally,
    ) -> Result<(), TestCaseError> {
        let key = if adapter {
            adapter_id(id)
        } else {
            model_id(id)
        };
        let owner = owner.map_or(Address::ZERO, |i| self.addresses[i]);
        let c = &self.clients[sender];
        let result = if adapter {
            c.register_adapter(key, owner).await
        } else {
            c.register_model(key, owner).await
        };
        let registered = m.registry(adapter).get(&key).copied();
        match result {
            Ok(_) => {
                prop_assert!(registered.is_none() && !owner.is_zero());
                m.registry(adapter).insert(key, owner);
                count(tally, "register");
            }
            Err(ChainError::ZeroAddress) => {
                prop_assert!(owner.is_zero());
                count(tally, "register refused: ZeroAddress");
            }
            Err(ChainError::AlreadyRegistered) => {
                prop_assert!(registered.is_some() && !owner.is_zero());
                count(tally, "register refused: AlreadyRegistered");
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    /// Every account's withdrawable balance, in account order.
    pub(crate) async fn balances(&self) -> Result<Vec<U256>, TestCaseError> {
        let mut out = Vec::with_capacity(ACCOUNTS);
        for a in &self.addresses {
            out.push(self.settler().balance(*a).await.map_err(fail)?);
        }
        Ok(out)
    }

    /// The ledger equals the model; the ether it holds is exactly what it owes.
    pub(crate) async fn check(&self, m: &Model) -> Result<(), TestCaseError> {
        let c = self.settler();
        let held = c
            .provider()
            .get_balance(self.ledger.contract)
            .await
            .map_err(fail)?;
        prop_assert_eq!(
            held,
            m.paid_in - m.paid_out,
            "ether held != Σ paid in − Σ paid out"
        );
        let mut owed = U256::ZERO;
        for p in PAYERS {
            let a = self.addresses[p];
            let deposit = c.deposits(a).await.map_err(fail)?;
            prop_assert_eq!(deposit, m.deposit(a), "deposit of payer {}", p);
            prop_assert_eq!(c.batch_nonce(a).await.map_err(fail)?, m.nonce(a));
            owed += deposit;
        }
        // Every settled batch is on record in its own block, for its payer only.
        for b in &m.settled {
            let a = self.addresses[b.payer];
            prop_assert_eq!(c.settled_at(a, b.root).await.map_err(fail)?, Some(b.block));
        }
        for (i, b) in self.balances().await?.into_iter().enumerate() {
            prop_assert_eq!(b, m.balance(self.addresses[i]), "balance of account {}", i);
            owed += b;
        }
        prop_assert_eq!(held, owed, "ether held != Σ deposits + Σ balances");
        for id in 0..IDS {
            let model = c.model_owner(model_id(id)).await.map_err(fail)?;
            prop_assert_eq!(model, m.models.get(&model_id(id)).copied());
            let adapter = c.adapter_owner(adapter_id(id)).await.map_err(fail)?;
            prop_assert_eq!(adapter, m.adapters.get(&adapter_id(id)).copied());
        }
        Ok(())
    }

    /// Exactly one `BatchSettled` event per settled root, and no other.
    pub(crate) async fn check_settled_once(&self, m: &Model) -> Result<(), TestCaseError> {
        let filter = Filter::new()
            .address(self.ledger.contract)
            .event_signature(TributeLedger::BatchSettled::SIGNATURE_HASH)
            .from_block(0);
        let logs = self
            .settler()
            .provider()
            .get_logs(&filter)
            .await
            .map_err(fail)?;
        let mut roots: Vec<B256> = logs
            .iter()
            .filter_map(|l| l.topics().get(2).copied())
            .collect();
        let mut want: Vec<B256> = m.settled.iter().map(|b| b.root).collect();
        roots.sort_unstable();
        want.sort_unstable();
        prop_assert_eq!(roots, want, "BatchSettled events != settled batches");
        Ok(())
    }
}

/// Simulates `call` (a revert becomes a typed error), then sends it and waits for it.
pub(crate) async fn transact<D: CallDecoder + Clone>(
    client: &LedgerClient,
    what: &str,
    call: CallBuilder<&DynProvider, D>,
) -> Result<(), ChainError> {
    let err = |e| ChainError::from_contract(client.url(), what, e);
    call.call_raw().await.map_err(err)?;
    let pending = call.send().await.map_err(err)?;
    client.wait_for(what, *pending.tx_hash()).await.map(drop)
}
