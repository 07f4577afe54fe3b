"""EIP-712 result batches and signed worker requests."""

import os

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from coopgrid.errors import AuthError
from coopgrid.identity import Identity, recover_batch_signer, verify_request, verify_request_headers
from coopgrid.protocol import EIP712_TYPES, ResultRef, batch_digest, eip712_domain, eip712_message

hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
refs = st.lists(
    st.builds(ResultRef, hashes, st.integers(0, 2**64 - 1), hashes, hashes, hashes), min_size=0, max_size=8
)


@settings(max_examples=30, deadline=None)
@given(refs=refs, lease=st.integers(0, 2**64 - 1), chain_id=st.integers(1, 2**32))
def test_fast_digest_equals_eth_account_typed_data(refs, lease, chain_id):
    worker = Account.create().address
    signable = encode_typed_data(eip712_domain(chain_id), EIP712_TYPES, eip712_message(worker, lease, refs))
    signed = Account.sign_message(signable, b"\x01" * 32)
    assert batch_digest(chain_id, worker, lease, refs) == signed.message_hash


def test_batch_signature_recovers_to_the_worker_and_any_wallet_agrees():
    me = Identity.generate()
    results = [ResultRef(os.urandom(32).hex(), i, os.urandom(32).hex(), "0" * 64, os.urandom(32).hex()) for i in range(3)]
    sig = me.sign_batch(31337, 7, results)
    assert recover_batch_signer(31337, me.address, 7, results, sig) == me.address
    # a standard EIP-712 implementation recovers the same signer from the same typed data
    signable = encode_typed_data(eip712_domain(31337), EIP712_TYPES, eip712_message(me.address, 7, results))
    assert Account.recover_message(signable, signature=sig) == me.address


def test_changing_any_signed_value_changes_the_signer():
    me = Identity.generate()
    r = ResultRef("11" * 32, 3, "22" * 32, "33" * 32, "44" * 32)
    sig = me.sign_batch(1, 9, [r])
    for forged in (r._replace(output_hash="55" * 32), r._replace(task_index=4), r._replace(model_hash="00" * 32)):
        assert recover_batch_signer(1, me.address, 9, [forged], sig) != me.address
    assert recover_batch_signer(1, me.address, 10, [r], sig) != me.address  # another lease
    assert recover_batch_signer(2, me.address, 9, [r], sig) != me.address  # another chain


def test_malformed_batch_signature_is_an_auth_error():
    with pytest.raises(AuthError):
        recover_batch_signer(1, Identity.generate().address, 1, [], "0x" + "00" * 65)


GRID = "ab" * 16


def test_signed_request_verifies_and_binds_grid_method_path_and_body():
    me = Identity.generate()
    body = b'{"max_replicas":5}'
    headers = me.request_headers("POST", "/v1/leases", body, GRID, now=1000)
    assert verify_request(GRID, "POST", "/v1/leases", body, headers, 300, now=1010) == me.address
    with pytest.raises(AuthError, match="does not hash"):
        verify_request(GRID, "POST", "/v1/leases", b'{"max_replicas":500}', headers, 300, now=1010)
    with pytest.raises(AuthError, match="does not match"):
        verify_request(GRID, "POST", "/v1/workers", body, headers, 300, now=1010)
    with pytest.raises(AuthError, match="does not match"):
        verify_request(GRID, "GET", "/v1/leases", body, headers, 300, now=1010)
    with pytest.raises(AuthError, match="does not match"):  # signed for another coordinator's grid
        verify_request("cd" * 16, "POST", "/v1/leases", body, headers, 300, now=1010)
    with pytest.raises(AuthError, match="clock"):
        verify_request(GRID, "POST", "/v1/leases", body, headers, 300, now=5000)
    with pytest.raises(AuthError, match="missing"):
        verify_request(GRID, "POST", "/v1/leases", b"", {}, 300)


def test_every_signed_header_is_covered_by_the_signature():
    me = Identity.generate()
    headers = me.request_headers("POST", "/v1/leases", b"{}", GRID, now=1000)
    for name, forged in [("x-coopgrid-time", "1001"), ("x-coopgrid-nonce", "0" * 32),
                         ("x-coopgrid-body-sha256", "0" * 64)]:
        with pytest.raises(AuthError):
            verify_request_headers(GRID, "POST", "/v1/leases", headers | {name: forged}, 300, now=1000)
    for name, junk in [("x-coopgrid-time", "soon"), ("x-coopgrid-nonce", "xyz"), ("x-coopgrid-worker", "me"),
                       ("x-coopgrid-body-sha256", "0x12"), ("x-coopgrid-signature", "0x00")]:
        with pytest.raises(AuthError):
            verify_request_headers(GRID, "POST", "/v1/leases", headers | {name: junk}, 300, now=1000)


def test_a_nonce_is_good_for_one_request():
    from coopgrid.coordinator.auth import NonceCache

    cache = NonceCache(window=300)
    cache.remember("0xA", "n1", now=1000)
    cache.remember("0xB", "n1", now=1000)  # another key may pick the same nonce
    with pytest.raises(AuthError, match="already used"):
        cache.remember("0xA", "n1", now=1200)
    cache.remember("0xA", "n1", now=1000 + 601)  # long after the window, the clock check refuses it anyway
    assert len(cache._seen) == 1  # what expired is forgotten


def test_keystore_round_trip_and_wrong_password(tmp_path):
    from coopgrid.errors import ConfigError

    path = tmp_path / "w" / "key.json"
    created = Identity.load_or_create(path, "pw")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert Identity.load_or_create(path, "pw").address == created.address
    with pytest.raises(ConfigError, match="COOPGRID_KEY_PASSWORD"):
        Identity.load_or_create(path, "wrong")
    with pytest.raises(ConfigError, match="COOPGRID_KEY_PASSWORD"):
        Identity.load_or_create(path, None)


def test_workers_are_grouped_by_their_slash_24_or_slash_48_network():
    from coopgrid.coordinator.api import network_of

    assert network_of("198.51.100.77") == "198.51.100.0/24"
    assert network_of("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert network_of("testclient") is None
