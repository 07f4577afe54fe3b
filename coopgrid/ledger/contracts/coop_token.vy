# pragma version ~=0.4.3
"""
@title coopgrid token
@license MIT
@notice The reward token of an embedded (or test) deployment: a plain
        ERC-20 with EIP-2612 permit (snekmate), minted by its owner, the
        operator, to stand in for whatever currency a real deployment pays
        in. The ledger contract takes any ERC-20; it never mints this one.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: erc20.__interface__


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("coopgrid token", "COOP", 18, "coopgrid token", "1")
