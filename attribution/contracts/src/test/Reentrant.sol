// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface ITributeLedger {
    function withdraw() external;
    function deposit() external payable;
    function withdrawDeposit(uint256 amount) external;
}

/// @title Reentrant (test only)
/// @notice A payee/payer contract whose receive() re-enters the ledger, to prove the reentrancy guard.
///
/// Usage from a test:
///   1. Deploy `Reentrant(ledger)`; settle a batch that pays it (it is a normal payee address).
///   2. Call `attack()`: it calls `ledger.withdraw()`; while receiving the ETH, receive() tries `ledger.withdraw()`
///      again. With `bubble == false` (default) the re-entry's failure is caught and recorded: the outer withdraw
///      succeeds, `reentered()` stays false, `reentryAttempts()` is 1 and `lastError()` holds the revert data
///      (the `Reentrancy()` selector 0xab143c06). With `setBubble(true)` the re-entry's revert propagates, so the
///      ledger's transfer fails and the outer `withdraw()` reverts with `TransferFailed()`.
///   3. `attackDeposit()` (payable) does the same against `deposit` + `withdrawDeposit(msg.value)`.
contract Reentrant {
    ITributeLedger public immutable ledger;

    /// 0 = idle, 1 = re-enter withdraw(), 2 = re-enter withdrawDeposit(depositAmount)
    uint8 public mode;
    bool public bubble;
    bool public reentered;
    uint256 public reentryAttempts;
    uint256 public received;
    uint256 private depositAmount;
    bytes public lastError;

    constructor(ITributeLedger ledger_) {
        ledger = ledger_;
    }

    function setBubble(bool bubble_) external {
        bubble = bubble_;
    }

    /// @notice Withdraw this contract's settled balance, re-entering withdraw() from receive().
    function attack() external {
        mode = 1;
        ledger.withdraw();
        mode = 0;
    }

    /// @notice Deposit msg.value for this contract and withdraw it, re-entering withdrawDeposit() from receive().
    function attackDeposit() external payable {
        depositAmount = msg.value;
        ledger.deposit{value: msg.value}();
        mode = 2;
        ledger.withdrawDeposit(msg.value);
        mode = 0;
    }

    receive() external payable {
        received += msg.value;
        uint8 m = mode;
        if (m == 0) return;
        mode = 0; // one re-entry attempt per attack
        reentryAttempts += 1;
        if (bubble) {
            if (m == 1) ledger.withdraw();
            else ledger.withdrawDeposit(depositAmount);
            reentered = true;
            return;
        }
        if (m == 1) {
            try ledger.withdraw() {
                reentered = true;
            } catch (bytes memory err) {
                lastError = err;
            }
        } else {
            try ledger.withdrawDeposit(depositAmount) {
                reentered = true;
            } catch (bytes memory err) {
                lastError = err;
            }
        }
    }
}
