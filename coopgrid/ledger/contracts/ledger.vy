# pragma version ~=0.4.3
"""
@title coopgrid ledger
@license MIT
@notice Anchors what coopgrid needs public trust for, and holds the money
        that moves between strangers:
        - per epoch, the Merkle root of the accepted results and the Merkle
          root of every worker's cumulative reward (OpenZeppelin
          StandardMerkleTree leaves: keccak256(keccak256(abi.encode(...))),
          sorted-pair hashing);
        - the hashes of published models;
        - escrow: each paid job's budget in the reward token (any ERC-20
          named at deployment), funded by its submitter before any work;
          commits carry each touched job's cumulative spend and are refused
          above the budget; claims are paid out of the spent escrow only,
          never minted; the unspent rest goes back to the funder when the
          coordinator closes the job, or by itself after the refund deadline
          set at funding;
        - stakes: workers lock tokens to take paid work; unstaking waits
          UNSTAKE_DELAY (longer than the coordinator's finality window), and
          the owner can slash a stake, with the hash of the public evidence,
          into the escrow of the job the lie harmed.
        Tokens that charge a fee on transfer, or rebase, are not supported:
        the contract accounts for exactly the amounts it moves.
"""

from ethereum.ercs import IERC20

from snekmate.auth import ownable
from snekmate.utils import merkle_proof_verification as merkle

initializes: ownable
initializes: merkle

exports: (
    ownable.owner,
    ownable.transfer_ownership,
)

# Deepest proof accepted: 2**32 leaves.
MAX_PROOF: constant(uint256) = 32
# Most jobs whose spend one commit may carry.
MAX_SPENDS: constant(uint256) = 1024

# Packed words. Amounts per job and per stake are 104-bit (2e31 base units);
# running totals are 112-bit; times are 40-bit unix seconds.
#   job:    budget (0..103) | spent (104..207) | deadline (208..247) | closed (248)
#   stake:  active (0..103) | unstaking (104..207) | unlockAt (208..247)
#   totals: nextEpoch (0..31) | spent (32..143) | claimed (144..255)
M104: constant(uint256) = 2**104 - 1
M112: constant(uint256) = 2**112 - 1
M128: constant(uint256) = 2**128 - 1
M40: constant(uint256) = 2**40 - 1
M32: constant(uint256) = 2**32 - 1
CLOSED: constant(uint256) = 1 << 248

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

event Funded:
    jobId: indexed(bytes32)
    funder: indexed(address)
    amount: uint256
    budget: uint256
    deadline: uint256

event JobClosed:
    jobId: indexed(bytes32)
    funder: indexed(address)

event Refunded:
    jobId: indexed(bytes32)
    funder: indexed(address)
    amount: uint256

event Staked:
    worker: indexed(address)
    amount: uint256
    active: uint256

event UnstakeRequested:
    worker: indexed(address)
    amount: uint256
    unlockAt: uint256

event Withdrawn:
    worker: indexed(address)
    amount: uint256

event Slashed:
    worker: indexed(address)
    jobId: indexed(bytes32)
    amount: uint256
    evidence: bytes32

# Gas: a commit writes one new word (the results root), updates two
# (`_totals`, `rewardsRoot`) and one per touched job; a claim reads one root.
# Past epochs' rewards roots live in their `EpochCommitted` events only:
# claims are always checked against the latest one, which holds every
# worker's cumulative total.

# The reward token.
TOKEN: public(immutable(IERC20))
# Seconds between `unstake` and `withdraw`: longer than the finality window,
# so that a cheater cannot take its stake out before it is caught.
UNSTAKE_DELAY: public(immutable(uint256))
# The shortest refund deadline a new job may set (seconds from funding).
MIN_REFUND_DELAY: public(immutable(uint256))

# nextEpoch | total spent | total claimed (see above). nextEpoch starts at 1
# (set in the constructor, so that no commit pays for a zero-to-nonzero write).
_totals: uint256
# Results root of every committed epoch, by epoch number.
resultsRoot: public(HashMap[uint256, bytes32])
# The latest epoch's rewards root: what claims are checked against.
rewardsRoot: public(bytes32)
# Cumulative amount already paid to each account.
claimed: public(HashMap[address, uint256])
# (block.number << 128) | block.timestamp of each model's publication; 0 if none.
_models: HashMap[bytes32, uint256]
# Escrow by job key (see `jobKey`): one word per job.
_jobs: HashMap[uint256, uint256]
# Stakes by worker: one word per worker.
_stakes: HashMap[address, uint256]


@deploy
def __init__(token: IERC20, unstake_delay: uint256, min_refund_delay: uint256):
    ownable.__init__()
    merkle.__init__()
    assert token.address != empty(address), "ledger: no token"
    assert unstake_delay <= M40 and min_refund_delay <= M40, "ledger: delay out of range"
    TOKEN = token
    UNSTAKE_DELAY = unstake_delay
    MIN_REFUND_DELAY = min_refund_delay
    self._totals = 1


@internal
@pure
def _key(jobId: bytes32, funder: address) -> uint256:
    # 128 bits: a commit carries a job's key and cumulative spend in one word.
    # A second (jobId, funder) with the same key takes ~2**128 hashes to find.
    return convert(keccak256(abi_encode(jobId, funder)), uint256) >> 128


@external
@pure
def jobKey(jobId: bytes32, funder: address) -> uint256:
    """
    @notice The key of a job's escrow: the first 16 bytes of
            keccak256(abi.encode(jobId, funder)), as a number. A job is
            bound to its funder: nobody else can fund, top up or be
            refunded the same escrow.
    """
    return self._key(jobId, funder)


# ---------------------------------------------------------------- epochs


@external
def commitEpoch(
    epoch: uint256,
    resultsRoot: bytes32,
    rewardsRoot: bytes32,
    resultCount: uint256,
    spends: DynArray[uint256, MAX_SPENDS],
):
    """
    @notice Records one epoch's roots and the cumulative spend of every job
            it touches. Owner (the coordinator) only, and only the next epoch
            number: epochs are committed once each, in order. Each entry of
            `spends` is (jobKey << 128) | cumulativeSpend; the commit is
            refused if any job's spend goes down or exceeds its budget.
    """
    ownable._check_owner()
    totals: uint256 = self._totals
    assert epoch == totals & M32, "ledger: epoch out of sequence"
    assert resultsRoot != empty(bytes32), "ledger: empty results root"
    added: uint256 = 0
    for entry: uint256 in spends:
        key: uint256 = entry >> 128
        spend: uint256 = entry & M128
        job: uint256 = self._jobs[key]
        spent: uint256 = (job >> 104) & M104
        assert spend >= spent, "ledger: a job's spend went down"
        assert spend <= job & M104, "ledger: a job's spend exceeds its budget"
        # spend <= budget < 2**104: no carry into the deadline bits; the sum of
        # at most MAX_SPENDS deltas below 2**104 each cannot overflow
        added = unsafe_add(added, unsafe_sub(spend, spent))
        self._jobs[key] = job ^ ((spent ^ spend) << 104)
    total_spent: uint256 = ((totals >> 32) & M112) + added
    assert total_spent <= M112, "ledger: total spend out of range"
    assert epoch < M32, "ledger: epoch numbers exhausted"
    self._totals = unsafe_add((totals & ~(M112 << 32)) | (total_spent << 32), 1)
    self.resultsRoot[epoch] = resultsRoot
    self.rewardsRoot = rewardsRoot
    log EpochCommitted(epoch=epoch, resultsRoot=resultsRoot, rewardsRoot=rewardsRoot, resultCount=resultCount)


@external
def claim(account: address, cumulativeAmount: uint256, proof: DynArray[bytes32, MAX_PROOF]):
    """
    @notice Pays `account`, out of the spent escrow, what the latest rewards
            root grants it beyond what it already claimed. Anyone may send it
            on `account`'s behalf. All claims together never exceed all
            spends committed: the rewards root cannot pay out money no job
            spent.
    """
    root: bytes32 = self.rewardsRoot
    assert root != empty(bytes32), "ledger: no rewards committed"
    leaf: bytes32 = keccak256(keccak256(abi_encode(account, cumulativeAmount)))
    assert merkle._verify(proof, root, leaf), "ledger: invalid proof for this account and amount"
    already: uint256 = self.claimed[account]
    assert cumulativeAmount > already, "ledger: nothing to claim"
    self.claimed[account] = cumulativeAmount
    amount: uint256 = unsafe_sub(cumulativeAmount, already)
    totals: uint256 = self._totals
    claimed_total: uint256 = (totals >> 144) + amount
    assert claimed_total <= (totals >> 32) & M112, "ledger: claims would exceed the spent escrow"
    self._totals = (totals & (2**144 - 1)) | (claimed_total << 144)
    assert extcall TOKEN.transfer(account, amount, default_return_value=True), "ledger: token transfer failed"
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
    return unsafe_sub(self._totals & M32, 1)


@external
@view
def totals() -> (uint256, uint256):
    """
    @notice (all spends committed, all claims paid): claims never exceed spends.
    """
    totals: uint256 = self._totals
    return ((totals >> 32) & M112, totals >> 144)


# ---------------------------------------------------------------- escrow


@external
def fund(jobId: bytes32, amount: uint256, deadline: uint256):
    """
    @notice Moves `amount` of the caller's tokens (approved to this contract
            first) into the escrow of job `jobId`, funded by the caller. The
            first funding sets the refund deadline (unix seconds, at least
            MIN_REFUND_DELAY away): after it the funder can take the unspent
            budget back even if the coordinator never closes the job. Later
            fundings top the budget up and keep the deadline.
    """
    assert amount > 0, "ledger: nothing to fund"
    key: uint256 = self._key(jobId, msg.sender)
    job: uint256 = self._jobs[key]
    if job == 0:
        assert deadline >= block.timestamp + MIN_REFUND_DELAY, "ledger: refund deadline too soon"
        assert deadline <= M40, "ledger: refund deadline out of range"
        job = deadline << 208
    else:
        assert job & CLOSED == 0, "ledger: the job is closed"
    budget: uint256 = (job & M104) + amount
    assert budget <= M104, "ledger: budget out of range"
    self._jobs[key] = (job & ~M104) | budget
    assert extcall TOKEN.transferFrom(msg.sender, self, amount, default_return_value=True), "ledger: token transfer failed"
    log Funded(jobId=jobId, funder=msg.sender, amount=amount, budget=budget, deadline=(job >> 208) & M40)


@external
def closeJob(jobId: bytes32, funder: address):
    """
    @notice The coordinator declares a job finished (owner only): its funder
            may take the unspent budget back at once with `refund`.
    """
    ownable._check_owner()
    key: uint256 = self._key(jobId, funder)
    job: uint256 = self._jobs[key]
    assert job != 0, "ledger: no such job"
    self._jobs[key] = job | CLOSED
    log JobClosed(jobId=jobId, funder=funder)


@external
def refund(jobId: bytes32, funder: address):
    """
    @notice Pays the funder back the unspent budget (budget - spent) of a job
            that is closed or past its refund deadline. Anyone may send it;
            the tokens only ever go to the funder. Afterwards the budget
            equals the spend: nothing more can be spent from it.
    """
    key: uint256 = self._key(jobId, funder)
    job: uint256 = self._jobs[key]
    assert job != 0, "ledger: no such job"
    assert job & CLOSED != 0 or block.timestamp >= (job >> 208) & M40, "ledger: the job is open until its refund deadline"
    spent: uint256 = (job >> 104) & M104
    amount: uint256 = (job & M104) - spent
    assert amount > 0, "ledger: nothing to refund"
    self._jobs[key] = (job & ~M104) | spent
    assert extcall TOKEN.transfer(funder, amount, default_return_value=True), "ledger: token transfer failed"
    log Refunded(jobId=jobId, funder=funder, amount=amount)


@external
@view
def job(jobId: bytes32, funder: address) -> (uint256, uint256, uint256, bool):
    """
    @notice (budget, spent, refund deadline, closed) of a job's escrow; all
            zero for a job never funded by `funder`.
    """
    job: uint256 = self._jobs[self._key(jobId, funder)]
    return (job & M104, (job >> 104) & M104, (job >> 208) & M40, job & CLOSED != 0)


# ---------------------------------------------------------------- stakes


@external
def stake(amount: uint256):
    """
    @notice Locks `amount` of the caller's tokens (approved first) as its stake.
    """
    assert amount > 0, "ledger: nothing to stake"
    s: uint256 = self._stakes[msg.sender]
    active: uint256 = (s & M104) + amount
    assert active <= M104, "ledger: stake out of range"
    self._stakes[msg.sender] = (s & ~M104) | active
    assert extcall TOKEN.transferFrom(msg.sender, self, amount, default_return_value=True), "ledger: token transfer failed"
    log Staked(worker=msg.sender, amount=amount, active=active)


@external
def unstake(amount: uint256):
    """
    @notice Starts taking `amount` of the stake out: it stops counting as
            stake for new work at once, stays slashable, and can be
            withdrawn UNSTAKE_DELAY seconds from now (the clock restarts for
            everything still unstaking).
    """
    s: uint256 = self._stakes[msg.sender]
    active: uint256 = s & M104
    assert amount > 0 and amount <= active, "ledger: unstaking more than the active stake"
    pending: uint256 = ((s >> 104) & M104) + amount
    unlock: uint256 = block.timestamp + UNSTAKE_DELAY
    self._stakes[msg.sender] = unsafe_sub(active, amount) | (pending << 104) | (unlock << 208)
    log UnstakeRequested(worker=msg.sender, amount=amount, unlockAt=unlock)


@external
def withdraw():
    """
    @notice Pays the caller what it unstaked, once UNSTAKE_DELAY has passed.
    """
    s: uint256 = self._stakes[msg.sender]
    pending: uint256 = (s >> 104) & M104
    assert pending > 0, "ledger: nothing unstaking"
    assert block.timestamp >= (s >> 208) & M40, "ledger: the unstake delay has not passed"
    self._stakes[msg.sender] = s & M104
    assert extcall TOKEN.transfer(msg.sender, pending, default_return_value=True), "ledger: token transfer failed"
    log Withdrawn(worker=msg.sender, amount=pending)


@external
def slash(worker: address, amount: uint256, jobId: bytes32, funder: address, evidence: bytes32):
    """
    @notice Takes `amount` of `worker`'s stake (active first, then what is
            unstaking) into the escrow of the job its lie harmed, which can
            pay for the task's redo or go back to the funder. Owner only, at
            most the stake, with the hash of the public evidence bundle.
    """
    ownable._check_owner()
    assert amount > 0, "ledger: nothing to slash"
    assert evidence != empty(bytes32), "ledger: a slash needs its evidence"
    s: uint256 = self._stakes[worker]
    active: uint256 = s & M104
    pending: uint256 = (s >> 104) & M104
    assert amount <= active + pending, "ledger: slash exceeds the stake"
    if amount <= active:
        s = unsafe_sub(s, amount)
    else:
        pending = unsafe_sub(pending, unsafe_sub(amount, active))
        s = (s & ~(M104 | (M104 << 104))) | (pending << 104)
    self._stakes[worker] = s
    key: uint256 = self._key(jobId, funder)
    job: uint256 = self._jobs[key]
    assert job != 0, "ledger: no such job"
    budget: uint256 = (job & M104) + amount
    assert budget <= M104, "ledger: budget out of range"
    self._jobs[key] = (job & ~M104) | budget
    log Slashed(worker=worker, jobId=jobId, amount=amount, evidence=evidence)


@external
@view
def stakeOf(worker: address) -> (uint256, uint256, uint256):
    """
    @notice (active stake, unstaking, when the unstaking part can be withdrawn).
    """
    s: uint256 = self._stakes[worker]
    return (s & M104, (s >> 104) & M104, (s >> 208) & M40)


# ---------------------------------------------------------------- models


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
