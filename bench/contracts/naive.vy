# pragma version ~=0.4.3
"""
@title naive result log (benchmark baseline only)
@notice What recording every accepted result on chain one by one costs: one
        storage write and one event per result. Used by bench/gas.py to put
        the Merkle-root ledger's figures side by side with this approach.
"""

event ResultRecorded:
    jobId: indexed(bytes32)
    taskIndex: uint64
    modelHash: bytes32
    inputHash: bytes32
    outputHash: bytes32

OWNER: immutable(address)

# keccak256(abi_encode(jobId, taskIndex)) => outputHash
outputOf: public(HashMap[bytes32, bytes32])


@deploy
def __init__():
    OWNER = msg.sender


@external
def recordResult(jobId: bytes32, taskIndex: uint64, modelHash: bytes32, inputHash: bytes32, outputHash: bytes32):
    assert msg.sender == OWNER, "naive: caller is not the owner"
    self.outputOf[keccak256(abi_encode(jobId, taskIndex))] = outputHash
    log ResultRecorded(jobId=jobId, taskIndex=taskIndex, modelHash=modelHash, inputHash=inputHash, outputHash=outputHash)
