# pragma version ~=0.4.3
"""
@title coopgrid ledger
@license MIT
@notice Anchors what coopgrid needs public trust for, and nothing more:
        - per epoch, the Merkle root of the accepted results and the Merkle
          root of every worker's cumulative reward (OpenZeppelin
          StandardMerkleTree leaves: keccak256(keccak256(abi.encode(...))),
          sorted-pair hashing);
        - the hashes of published models;
        - the reward token (ERC-20), minted to workers by cumulative claims.
        Storage per epoch is one word, whatever the epoch's size; results
        themselves never touch the chain.
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

from snekmate.auth import ownable
from snekmate.tokens import erc20
from snekmate.utils import merkle_proof_verification as merkle

initializes: ownable
initializes: erc20[ownable := ownable]
initializes: merkle

implements: IERC20
implements: IERC20Detailed

# The ERC-20 surface of the reward token, without `mint`/`burn`/`set_minter`:
# tokens only come into being through `claim`.
exports: (
    ownable.owner,
    ownable.transfer_ownership,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.transferFrom,
    erc20.approve,
)

# Deepest proof accepted: 2**32 leaves.
MAX_PROOF: constant(uint256) = 32

event EpochCommitted:
    epoch: indexed(uint256)
    resultsRoot: bytes32
    rewardsRoot: bytes32
    resultCount: uint256

event Claimed:
    account: indexed(address)
    amount: uint256
    cumulativeAmount: uint256

event ModelPublished:
    modelHash: indexed(bytes32)
    publishedAt: uint256

# Gas: a commit writes one new word (the results root) and updates two
# (`nextEpoch`, `rewardsRoot`); a claim reads one root. Past epochs' rewards
# roots live in their `EpochCommitted` events only: claims are always checked
# against the latest one, which holds every worker's cumulative total.

# Number the next `commitEpoch` must carry. Starts at 1 (set in the
# constructor, so that no commit pays for a zero-to-nonzero write).
nextEpoch: public(uint256)
# Results root of every committed epoch, by epoch number.
resultsRoot: public(HashMap[uint256, bytes32])
# The latest epoch's rewards root: what claims are checked against.
rewardsRoot: public(bytes32)
# Cumulative amount already minted to each account.
claimed: public(HashMap[address, uint256])
# (block.number << 128) | block.timestamp of each model's publication; 0 if none.
_models: HashMap[bytes32, uint256]


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("coopgrid reward", "COOP", 18, "coopgrid", "1")
    merkle.__init__()
    self.nextEpoch = 1


@external
def commitEpoch(epoch: uint256, resultsRoot: bytes32, rewardsRoot: bytes32, resultCount: uint256):
    """
    @notice Records one epoch's roots. Owner (the coordinator) only, and only
            the next epoch number: epochs are committed once each, in order.
    """
    ownable._check_owner()
    assert epoch == self.nextEpoch, "ledger: epoch out of sequence"
    assert resultsRoot != empty(bytes32), "ledger: empty results root"
    self.nextEpoch = unsafe_add(epoch, 1)
    self.resultsRoot[epoch] = resultsRoot
    self.rewardsRoot = rewardsRoot
    log EpochCommitted(epoch=epoch, resultsRoot=resultsRoot, rewardsRoot=rewardsRoot, resultCount=resultCount)


@external
def claim(account: address, cumulativeAmount: uint256, proof: DynArray[bytes32, MAX_PROOF]):
    """
    @notice Mints to `account` what the latest rewards root grants it beyond
            what it already claimed. Anyone may send it on `account`'s behalf.
    """
    root: bytes32 = self.rewardsRoot
    assert root != empty(bytes32), "ledger: no rewards committed"
    leaf: bytes32 = keccak256(keccak256(abi_encode(account, cumulativeAmount)))
    assert merkle._verify(proof, root, leaf), "ledger: invalid proof for this account and amount"
    already: uint256 = self.claimed[account]
    assert cumulativeAmount > already, "ledger: nothing to claim"
    self.claimed[account] = cumulativeAmount
    amount: uint256 = unsafe_sub(cumulativeAmount, already)
    erc20._mint(account, amount)
    log Claimed(account=account, amount=amount, cumulativeAmount=cumulativeAmount)


@external
@view
def verifyResult(epoch: uint256, leaf: bytes32, proof: DynArray[bytes32, MAX_PROOF]) -> bool:
    """
    @notice True when `leaf` (the result's leaf hash) is in epoch `epoch`'s
            results tree. False for an epoch that is not committed.
    """
    root: bytes32 = self.resultsRoot[epoch]
    if root == empty(bytes32):
        return False
    return merkle._verify(proof, root, leaf)


@external
@view
def lastEpoch() -> uint256:
    """
    @notice The last committed epoch, 0 before the first.
    """
    return unsafe_sub(self.nextEpoch, 1)


@external
def publishModel(modelHash: bytes32):
    """
    @notice Anchors a model's hash. Owner only; once per model.
    """
    ownable._check_owner()
    assert modelHash != empty(bytes32), "ledger: empty model hash"
    assert self._models[modelHash] == 0, "ledger: model already published"
    self._models[modelHash] = (block.number << 128) | block.timestamp
    log ModelPublished(modelHash=modelHash, publishedAt=block.timestamp)


@external
@view
def modelPublished(modelHash: bytes32) -> (bool, uint256, uint256):
    """
    @notice (published, timestamp, blockNumber) of a model's publication.
    """
    packed: uint256 = self._models[modelHash]
    return (packed != 0, packed % (1 << 128), packed >> 128)
