// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title TributeLedger
/// @notice On-chain side of Tribute usage receipts.
///
/// * EIP-712 typed data for `UsageReceipt` (signed off-chain by a serving node for every answer) and for
///   `SettleBatch` (signed by the payer to authorise one settlement).
/// * Receipts are never posted one by one: a settler builds an OpenZeppelin-compatible Merkle tree over the
///   receipt leaves (`receiptLeaf(hashReceipt(r))`, sorted-pair keccak), sums the payouts per payee off-chain and
///   calls `settleBatch` once with the root and the per-payee totals. The root is anchored forever in the
///   `BatchSettled` event (root is an indexed topic: `eth_getLogs` finds the settlement of any root), so anyone can
///   later prove that a given receipt was part of a settled batch (`verifyReceipt`). `settledAt(payer, root)` records
///   the block of each settlement, so a root settles at most once per payer, whatever nonce it is signed for.
/// * Payers pre-fund `deposits`; settlement moves funds to `balances` (pull payments, `withdraw`).
/// * A first-come registry of model and adapter owners ("model as asset"). A fine-tuned adapter is registered with
///   the hash of its provenance manifest (`adapterManifest`), fixed for good: settlers pay the adapter's training
///   contributors by that manifest, and nobody, its owner included, can swap it for another.
///
/// No external imports: the small EIP-712, ECDSA, Merkle and reentrancy-guard pieces are written here and follow
/// the OpenZeppelin conventions byte for byte.
///
/// Compiled with evmVersion "cancun" (the reentrancy guard uses EIP-1153 transient storage).
contract TributeLedger {
    // ---------------------------------------------------------------------------------------------------------------
    // EIP-712 types (keep byte-for-byte in sync with attribution/src/receipt.rs)
    // ---------------------------------------------------------------------------------------------------------------

    struct AdapterUse {
        bytes32 adapterId;
        int32 weightMicros;
    }

    struct CitedChunk {
        bytes32 contentHash;
        address contributor;
        uint16 weightBps;
    }

    struct UsageReceipt {
        uint16 version;
        bytes32 receiptId;
        address payer;
        address servingNode;
        bytes32 modelId;
        AdapterUse[] adapters;
        bytes32 queryHash;
        bytes32 answerHash;
        CitedChunk[] chunks;
        uint256 fee;
        uint64 nonce;
        uint64 timestamp;
    }

    /// Receipt version 2: version 1 plus `attributionHash`, the keccak-256 of the answer's attribution record (the
    /// inputs and parameters anyone can recompute the citation weights from). Its EIP-712 type is still named
    /// `UsageReceipt`; only the Solidity struct needs another name.
    struct UsageReceiptV2 {
        uint16 version;
        bytes32 receiptId;
        address payer;
        address servingNode;
        bytes32 modelId;
        AdapterUse[] adapters;
        bytes32 queryHash;
        bytes32 answerHash;
        CitedChunk[] chunks;
        uint256 fee;
        uint64 nonce;
        uint64 timestamp;
        bytes32 attributionHash;
    }

    // SettleBatch(address payer,bytes32 root,uint256 total,bytes32 payoutsHash,uint64 batchNonce) is only ever
    // hashed from its fields, so it needs no Solidity struct.

    /// keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    bytes32 public constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    /// keccak256("AdapterUse(bytes32 adapterId,int32 weightMicros)")
    bytes32 public constant ADAPTER_USE_TYPEHASH = keccak256("AdapterUse(bytes32 adapterId,int32 weightMicros)");

    /// keccak256("CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)")
    bytes32 public constant CITED_CHUNK_TYPEHASH =
        keccak256("CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)");

    /// Referenced struct types are appended sorted by name (EIP-712 `encodeType`).
    bytes32 public constant USAGE_RECEIPT_TYPEHASH = keccak256(
        "UsageReceipt(uint16 version,bytes32 receiptId,address payer,address servingNode,bytes32 modelId,"
        "AdapterUse[] adapters,bytes32 queryHash,bytes32 answerHash,CitedChunk[] chunks,uint256 fee,uint64 nonce,"
        "uint64 timestamp)"
        "AdapterUse(bytes32 adapterId,int32 weightMicros)"
        "CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)"
    );

    /// The version-2 receipt type: the version-1 members, then `bytes32 attributionHash`.
    bytes32 public constant USAGE_RECEIPT_V2_TYPEHASH = keccak256(
        "UsageReceipt(uint16 version,bytes32 receiptId,address payer,address servingNode,bytes32 modelId,"
        "AdapterUse[] adapters,bytes32 queryHash,bytes32 answerHash,CitedChunk[] chunks,uint256 fee,uint64 nonce,"
        "uint64 timestamp,bytes32 attributionHash)"
        "AdapterUse(bytes32 adapterId,int32 weightMicros)"
        "CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)"
    );

    /// keccak256("SettleBatch(address payer,bytes32 root,uint256 total,bytes32 payoutsHash,uint64 batchNonce)")
    bytes32 public constant SETTLE_BATCH_TYPEHASH =
        keccak256("SettleBatch(address payer,bytes32 root,uint256 total,bytes32 payoutsHash,uint64 batchNonce)");

    bytes32 private constant _NAME_HASH = keccak256("Tribute Ledger");
    bytes32 private constant _VERSION_HASH = keccak256("1");

    /// secp256k1n / 2: signatures with a larger `s` are malleable copies and are rejected (EIP-2).
    uint256 private constant _HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// Transient-storage slot of the reentrancy guard: keccak256("tribute.ledger.reentrancy") - 1.
    bytes32 private constant _REENTRANCY_SLOT = 0xcf491aeaf1940760e4a9525d4c5db375d36fb1b49efe34694462d0a8e9e2f76d;

    bytes32 private immutable _cachedDomainSeparator;
    uint256 private immutable _cachedChainId;
    address private immutable _cachedThis;

    // ---------------------------------------------------------------------------------------------------------------
    // State
    // ---------------------------------------------------------------------------------------------------------------

    /// A payer's prepaid deposit and next expected batch nonce, packed into one slot so that a settlement touches
    /// a single payer slot.
    struct PayerAccount {
        uint192 deposit;
        uint64 batchNonce;
    }

    mapping(address => PayerAccount) private _accounts;

    /// Withdrawable earnings (pull payments).
    mapping(address => uint256) public balances;

    /// The block in which each (payer, root) was settled, zero if never. A fresh slot per batch (~20k gas, ~200 gas
    /// per receipt at 100 receipts a batch) buys the rule that no batch pays twice: an off-chain check of the
    /// `BatchSettled` logs is not enough, because a node can lose logs (a restart from a state dump) or cap
    /// `eth_getLogs` ranges. Settlers read it before signing and look the event up in that one block.
    mapping(address => mapping(bytes32 => uint256)) public settledAt;

    mapping(bytes32 => address) public modelOwner;
    mapping(bytes32 => address) public adapterOwner;
    /// keccak-256 of a fine-tuned adapter's provenance manifest (canonical JSON), zero for an adapter registered
    /// without one. Set once, with the owner, by `registerTrainedAdapter`; a transfer keeps it.
    mapping(bytes32 => bytes32) public adapterManifest;

    // ---------------------------------------------------------------------------------------------------------------
    // Events and errors
    // ---------------------------------------------------------------------------------------------------------------

    event Deposited(address indexed payer, address indexed from, uint256 amount);
    event DepositWithdrawn(address indexed payer, uint256 amount);
    event BatchSettled(
        address indexed payer, bytes32 indexed root, uint256 total, uint64 batchNonce, uint256 payeeCount
    );
    event Withdrawn(address indexed payee, uint256 amount);
    event ModelRegistered(bytes32 indexed modelId, address indexed owner);
    event ModelTransferred(bytes32 indexed modelId, address indexed from, address indexed to);
    event AdapterRegistered(bytes32 indexed adapterId, address indexed owner);
    event AdapterTransferred(bytes32 indexed adapterId, address indexed from, address indexed to);
    event AdapterManifestRecorded(bytes32 indexed adapterId, bytes32 manifestHash);

    /// The payer already settled this root (`settledAt(payer, root) != 0`): a retry, or a second settler that
    /// re-signed the batch for a later nonce.
    error Replay();
    /// `batchNonce` is not the payer's next batch nonce.
    error InvalidNonce(uint64 expected, uint64 got);
    /// The signature is malformed, malleable (high s, v not 27/28), or not by the payer.
    error BadSignature();
    error InsufficientDeposit(uint256 have, uint256 need);
    /// `payees` and `amounts` differ in length.
    error LengthMismatch();
    /// `payees` is empty, or `root` is zero (not a Merkle root; zero is never a batch).
    error EmptyBatch();
    error ZeroAddress();
    error NothingToWithdraw();
    error TransferFailed();
    error Reentrancy();
    error AlreadyRegistered();
    error NotOwner();
    error AmountTooLarge();
    error ZeroManifest();

    // ---------------------------------------------------------------------------------------------------------------
    // Construction, guard
    // ---------------------------------------------------------------------------------------------------------------

    constructor() {
        _cachedChainId = block.chainid;
        _cachedThis = address(this);
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    modifier nonReentrant() {
        bytes32 slot = _REENTRANCY_SLOT;
        uint256 entered;
        assembly ("memory-safe") {
            entered := tload(slot)
        }
        if (entered != 0) revert Reentrancy();
        assembly ("memory-safe") {
            tstore(slot, 1)
        }
        _;
        assembly ("memory-safe") {
            tstore(slot, 0)
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // EIP-712
    // ---------------------------------------------------------------------------------------------------------------

    /// @notice EIP-712 domain separator: name "Tribute Ledger", version "1", current chain id, this contract.
    function domainSeparator() public view returns (bytes32) {
        if (address(this) == _cachedThis && block.chainid == _cachedChainId) {
            return _cachedDomainSeparator;
        }
        return _buildDomainSeparator();
    }

    /// @notice EIP-5267 domain description.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", "Tribute Ledger", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    /// @notice EIP-712 `hashStruct(UsageReceipt)`.
    function receiptStructHash(UsageReceipt calldata r) public pure returns (bytes32) {
        bytes32 adaptersHash = _hashAdapters(r.adapters);
        bytes32 chunksHash = _hashChunks(r.chunks);
        // Two abi.encode halves (all members are single words) keep the stack shallow without via-IR.
        return keccak256(
            bytes.concat(
                abi.encode(
                    USAGE_RECEIPT_TYPEHASH, r.version, r.receiptId, r.payer, r.servingNode, r.modelId, adaptersHash
                ),
                abi.encode(r.queryHash, r.answerHash, chunksHash, r.fee, r.nonce, r.timestamp)
            )
        );
    }

    /// @notice Full EIP-712 digest of a receipt: keccak256("\x19\x01" ‖ domainSeparator ‖ hashStruct(r)).
    function hashReceipt(UsageReceipt calldata r) external view returns (bytes32) {
        return _typedDataDigest(receiptStructHash(r));
    }

    /// @notice EIP-712 `hashStruct(UsageReceipt)` of a version-2 receipt (with `attributionHash`).
    function receiptStructHashV2(UsageReceiptV2 calldata r) public pure returns (bytes32) {
        bytes32 adaptersHash = _hashAdapters(r.adapters);
        bytes32 chunksHash = _hashChunks(r.chunks);
        return keccak256(
            bytes.concat(
                abi.encode(
                    USAGE_RECEIPT_V2_TYPEHASH, r.version, r.receiptId, r.payer, r.servingNode, r.modelId, adaptersHash
                ),
                abi.encode(r.queryHash, r.answerHash, chunksHash, r.fee, r.nonce, r.timestamp, r.attributionHash)
            )
        );
    }

    /// @notice Full EIP-712 digest of a version-2 receipt (what its payer signs).
    function hashReceiptV2(UsageReceiptV2 calldata r) external view returns (bytes32) {
        return _typedDataDigest(receiptStructHashV2(r));
    }

    /// @notice `keccak256(abi.encode(payees, amounts))`, the `payoutsHash` member of `SettleBatch`.
    function payoutsHash(address[] calldata payees, uint256[] calldata amounts) public pure returns (bytes32) {
        return keccak256(abi.encode(payees, amounts));
    }

    /// @notice Full EIP-712 digest of a `SettleBatch` message (what the payer signs).
    function settleBatchDigest(address payer, bytes32 root, uint256 total, bytes32 payoutsHash_, uint64 batchNonce)
        public
        view
        returns (bytes32)
    {
        return _typedDataDigest(keccak256(abi.encode(SETTLE_BATCH_TYPEHASH, payer, root, total, payoutsHash_, batchNonce)));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Merkle (OpenZeppelin MerkleProof / StandardMerkleTree compatible)
    // ---------------------------------------------------------------------------------------------------------------

    /// @notice Leaf of a receipt digest: keccak256(bytes.concat(keccak256(abi.encode(digest)))).
    function receiptLeaf(bytes32 digest) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(digest))));
    }

    /// @notice True when `leaf` with the sorted-pair `proof` hashes up to `root`.
    function verifyReceipt(bytes32 leaf, bytes32[] calldata proof, bytes32 root) external pure returns (bool) {
        bytes32 computed = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            computed = _hashPair(computed, proof[i]);
        }
        return computed == root;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Deposits
    // ---------------------------------------------------------------------------------------------------------------

    /// @notice Prepay settlements for msg.sender.
    function deposit() external payable {
        _credit(msg.sender);
    }

    /// @notice Prepay settlements for `payer`.
    function depositFor(address payer) external payable {
        if (payer == address(0)) revert ZeroAddress();
        _credit(payer);
    }

    function deposits(address payer) external view returns (uint256) {
        return _accounts[payer].deposit;
    }

    /// @notice The batch nonce the payer's next `SettleBatch` must carry (starts at 0).
    function batchNonces(address payer) external view returns (uint64) {
        return _accounts[payer].batchNonce;
    }

    /// @notice Withdraw part of msg.sender's unspent deposit.
    function withdrawDeposit(uint256 amount) external nonReentrant {
        PayerAccount storage acct = _accounts[msg.sender];
        uint256 have = acct.deposit;
        if (amount > have) revert InsufficientDeposit(have, amount);
        acct.deposit = uint192(have - amount);
        emit DepositWithdrawn(msg.sender, amount);
        _sendToCaller(amount);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Settlement
    // ---------------------------------------------------------------------------------------------------------------

    /// @notice Settle a batch of receipts: anchors `root` (in `BatchSettled` and `settledAt(payer, root)`), debits
    ///         the payer's deposit by Σ amounts and credits each payee's withdrawable balance. Anyone may submit; the
    ///         payer authorises it with an EIP-712 `SettleBatch` signature for its current batch nonce. A root settles
    ///         at most once per payer, even when re-signed for a later nonce.
    /// @dev Check order: lengths, no payees, a zero payee, a zero root (EmptyBatch), Replay (settledAt(payer, root)
    ///      != 0), InvalidNonce, BadSignature, InsufficientDeposit. The Replay read warms the slot written below.
    function settleBatch(
        address payer,
        bytes32 root,
        address[] calldata payees,
        uint256[] calldata amounts,
        uint64 batchNonce,
        bytes calldata signature
    ) external {
        uint256 total = _sumPayouts(payees, amounts);
        if (root == bytes32(0)) revert EmptyBatch();
        if (settledAt[payer][root] != 0) revert Replay();

        PayerAccount memory acct = _accounts[payer];
        if (batchNonce != acct.batchNonce) revert InvalidNonce(acct.batchNonce, batchNonce);

        bytes32 digest = settleBatchDigest(payer, root, total, _payoutsHashChecked(payees, amounts), batchNonce);
        if (_recover(digest, signature) != payer) revert BadSignature();

        if (acct.deposit < total) revert InsufficientDeposit(acct.deposit, total);

        // Effects. total <= deposit < 2^192, so the narrowing is exact.
        settledAt[payer][root] = block.number;
        _accounts[payer] = PayerAccount({deposit: uint192(acct.deposit - total), batchNonce: batchNonce + 1});
        _creditPayees(payees, amounts);
        emit BatchSettled(payer, root, total, batchNonce, payees.length);
    }

    /// @notice Send msg.sender its whole settled balance.
    function withdraw() external nonReentrant {
        uint256 amount = balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _sendToCaller(amount);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Registry
    // ---------------------------------------------------------------------------------------------------------------

    /// @notice First come, first served: registers `modelId` to `owner`.
    function registerModel(bytes32 modelId, address owner) external {
        if (owner == address(0)) revert ZeroAddress();
        if (modelOwner[modelId] != address(0)) revert AlreadyRegistered();
        modelOwner[modelId] = owner;
        emit ModelRegistered(modelId, owner);
    }

    /// @notice Only the current owner may transfer a model.
    function transferModel(bytes32 modelId, address newOwner) external {
        if (newOwner == address(0)) revert ZeroAddress();
        if (modelOwner[modelId] != msg.sender) revert NotOwner();
        modelOwner[modelId] = newOwner;
        emit ModelTransferred(modelId, msg.sender, newOwner);
    }

    /// @notice First come, first served: registers `adapterId` to `owner`.
    function registerAdapter(bytes32 adapterId, address owner) external {
        if (owner == address(0)) revert ZeroAddress();
        if (adapterOwner[adapterId] != address(0)) revert AlreadyRegistered();
        adapterOwner[adapterId] = owner;
        emit AdapterRegistered(adapterId, owner);
    }

    /// @notice First come, first served: registers a fine-tuned `adapterId` to `owner` with the keccak-256 of its
    /// provenance manifest, which says whose data trained it and so who shares its fees. The hash is fixed for good.
    function registerTrainedAdapter(bytes32 adapterId, address owner, bytes32 manifestHash) external {
        if (owner == address(0)) revert ZeroAddress();
        if (manifestHash == bytes32(0)) revert ZeroManifest();
        if (adapterOwner[adapterId] != address(0)) revert AlreadyRegistered();
        adapterOwner[adapterId] = owner;
        adapterManifest[adapterId] = manifestHash;
        emit AdapterRegistered(adapterId, owner);
        emit AdapterManifestRecorded(adapterId, manifestHash);
    }

    /// @notice Only the current owner may transfer an adapter.
    function transferAdapter(bytes32 adapterId, address newOwner) external {
        if (newOwner == address(0)) revert ZeroAddress();
        if (adapterOwner[adapterId] != msg.sender) revert NotOwner();
        adapterOwner[adapterId] = newOwner;
        emit AdapterTransferred(adapterId, msg.sender, newOwner);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------------------------------

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(EIP712_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }

    function _typedDataDigest(bytes32 structHash) private view returns (bytes32 digest) {
        bytes32 sep = domainSeparator();
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, hex"1901")
            mstore(add(ptr, 0x02), sep)
            mstore(add(ptr, 0x22), structHash)
            digest := keccak256(ptr, 0x42)
        }
    }

    function _hashAdapters(AdapterUse[] calldata adapters) private pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](adapters.length);
        for (uint256 i = 0; i < adapters.length; ++i) {
            hashes[i] = keccak256(abi.encode(ADAPTER_USE_TYPEHASH, adapters[i].adapterId, adapters[i].weightMicros));
        }
        return keccak256(abi.encodePacked(hashes));
    }

    function _hashChunks(CitedChunk[] calldata chunks) private pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](chunks.length);
        for (uint256 i = 0; i < chunks.length; ++i) {
            CitedChunk calldata c = chunks[i];
            hashes[i] = keccak256(abi.encode(CITED_CHUNK_TYPEHASH, c.contentHash, c.contributor, c.weightBps));
        }
        return keccak256(abi.encodePacked(hashes));
    }

    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            switch lt(a, b)
            case 1 {
                mstore(0x00, a)
                mstore(0x20, b)
            }
            default {
                mstore(0x00, b)
                mstore(0x20, a)
            }
            h := keccak256(0x00, 0x40)
        }
    }

    function _sumPayouts(address[] calldata payees, uint256[] calldata amounts) private pure returns (uint256 total) {
        uint256 n = payees.length;
        if (n != amounts.length) revert LengthMismatch();
        if (n == 0) revert EmptyBatch();
        for (uint256 i = 0; i < n; ++i) {
            if (payees[i] == address(0)) revert ZeroAddress();
            total += amounts[i];
        }
    }

    /// @dev `payoutsHash(payees, amounts)` without the ABI encoder: the head (two offsets), then each array's length
    ///      and words copied straight from calldata. Only for arrays `_sumPayouts` has checked: equal lengths and every
    ///      payee word read (so validated as a clean address).
    function _payoutsHashChecked(address[] calldata payees, uint256[] calldata amounts)
        private
        pure
        returns (bytes32 h)
    {
        assembly ("memory-safe") {
            let n := payees.length
            let size := shl(5, n)
            let ptr := mload(0x40)
            mstore(ptr, 0x40)
            mstore(add(ptr, 0x20), add(0x60, size))
            mstore(add(ptr, 0x40), n)
            calldatacopy(add(ptr, 0x60), payees.offset, size)
            let tail := add(add(ptr, 0x60), size)
            mstore(tail, n)
            calldatacopy(add(tail, 0x20), amounts.offset, size)
            h := keccak256(ptr, add(0x80, shl(1, size)))
        }
    }

    /// @dev `balances[payees[i]] += amounts[i]` for each i, for arrays `_sumPayouts` has checked (equal lengths, clean
    ///      addresses). Unchecked: every credit comes out of a deposit, so Σ balances <= this contract's ether < 2^256.
    function _creditPayees(address[] calldata payees, uint256[] calldata amounts) private {
        assembly ("memory-safe") {
            mstore(0x20, balances.slot)
            let end := add(payees.offset, shl(5, payees.length))
            let a := amounts.offset
            for { let p := payees.offset } lt(p, end) { p := add(p, 0x20) } {
                mstore(0x00, calldataload(p))
                let slot := keccak256(0x00, 0x40)
                sstore(slot, add(sload(slot), calldataload(a)))
                a := add(a, 0x20)
            }
        }
    }

    /// @dev 65-byte r ‖ s ‖ v; rejects other lengths, v ∉ {27, 28}, s > secp256k1n/2 and failed recovery.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        if (signature.length != 65) revert BadSignature();
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
        if (uint256(s) > _HALF_ORDER || (v != 27 && v != 28)) revert BadSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
    }

    function _credit(address payer) private {
        PayerAccount storage acct = _accounts[payer];
        uint256 updated = uint256(acct.deposit) + msg.value;
        if (updated > type(uint192).max) revert AmountTooLarge();
        acct.deposit = uint192(updated);
        emit Deposited(payer, msg.sender, msg.value);
    }

    /// @dev Ether only ever leaves to the caller (pull payments), never to an address passed in.
    function _sendToCaller(uint256 amount) private {
        // Slither counts msg.sender as an arbitrary destination; here it is a payee or payer taking out its own
        // funds, debited before this call (docs/RELIABILITY.md, "Contract analysis").
        // slither-disable-next-line arbitrary-send-eth
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
