"""The wallet through the Python bindings against the real mpc-server: every
signature is checked with libsecp256k1 (coincurve), never by the Rust code
that made it."""

import asyncio
import hashlib
import secrets
import time

import coincurve
import pytest

import mpc_client_ffi as ffi
from conftest import (
    SIGN_TIMES,
    check_signature,
    derive_public,
    prehash_of,
    run,
)

SIGN_SAMPLES = 11


def new_wallet(server, user, store=None, token=None, storage_key=None):
    return ffi.Wallet(
        server.ws_url,
        server.rest_url,
        token or server.token(user),
        storage_key or secrets.token_bytes(32),
        store or ffi.memory_store(),
    )


def test_keygen_and_sign_verify_independently(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    assert len(key.key_id) == 64 and len(key.public_key) == 33
    assert key.xpub.startswith("xpub") and key.epoch == 0
    assert [k.key_id for k in wallet.keys()] == [key.key_id]
    assert wallet.key(key.key_id) == key
    signatures = []
    for i in range(3):
        prehash = prehash_of(b"message %d" % i)
        signature = run(wallet.sign(key.key_id, prehash, None))
        check_signature(signature, key.public_key, prehash)
        signatures.append(bytes(signature.r_s))
    # A repeated nonce would give away the key: every r differs.
    assert len({s[:32] for s in signatures}) == 3


def test_sign_under_a_path_matches_an_independent_bip32(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    prehash = prehash_of(b"derived")
    for path in ["m/0/5", "m/44/1/2147483647"]:
        signature = run(wallet.sign(key.key_id, prehash, path))
        child = derive_public(key.xpub, path)
        assert child != bytes(key.public_key)
        check_signature(signature, child, prehash)
    # A hardened step cannot be derived by the server's public data.
    with pytest.raises(ffi.WalletError.InvalidInput):
        run(wallet.sign(key.key_id, prehash, "m/0'"))


def test_presign_then_online_sign_uses_each_presignature_once(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    assert run(wallet.presign(key.key_id, 3)) == 3
    assert wallet.key(key.key_id).presignatures == 3
    rs = set()
    for left in (2, 1, 0):
        prehash = prehash_of(b"online %d" % left)
        signature = run(wallet.sign_online(key.key_id, prehash))
        check_signature(signature, key.public_key, prehash)
        rs.add(bytes(signature.r_s)[:32])
        assert wallet.key(key.key_id).presignatures == left
    assert len(rs) == 3
    # The pool is empty: no presignature (nonce) is ever used twice.
    with pytest.raises(ffi.WalletError.NoPresignatures):
        run(wallet.sign_online(key.key_id, prehash_of(b"one too many")))


def test_refresh_keeps_the_key_and_drops_old_presignatures(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    assert run(wallet.presign(key.key_id, 1)) == 1
    assert run(wallet.refresh(key.key_id)) == 1
    info = wallet.key(key.key_id)
    assert info.epoch == 1 and info.public_key == key.public_key
    assert info.xpub == key.xpub
    # A presignature of epoch 0 is not used with the epoch-1 share.
    assert info.presignatures == 0
    with pytest.raises(ffi.WalletError.NoPresignatures):
        run(wallet.sign_online(key.key_id, prehash_of(b"stale")))
    prehash = prehash_of(b"after refresh")
    check_signature(run(wallet.sign(key.key_id, prehash, None)), key.public_key, prehash)
    assert run(wallet.refresh(key.key_id)) == 2


def test_export_needs_a_single_use_step_up_token(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    prehash = prehash_of(b"before export")
    check_signature(run(wallet.sign(key.key_id, prehash, None)), key.public_key, prehash)
    # The ordinary session token is no step-up.
    with pytest.raises(ffi.WalletError.StepUpRequired):
        run(wallet.export(key.key_id, server.token(user)))
    step_up = server.step_up_token(user)
    exported = run(wallet.export(key.key_id, step_up))
    secret = bytes(exported.secret_key())
    assert len(secret) == 32
    private = coincurve.PrivateKey(secret)
    assert private.public_key.format() == bytes(key.public_key)
    assert bytes(exported.public_key()) == bytes(key.public_key)
    # The exported key signs on its own, checked under the MPC public key.
    local = private.sign(prehash_of(b"alone"), hasher=None)
    assert coincurve.PublicKey(bytes(key.public_key)).verify(
        local, prehash_of(b"alone"), hasher=None
    )
    # No string form of the object shows the secret.
    for text in (repr(exported), str(exported)):
        assert secret.hex() not in text and str(list(secret)) not in text
    # A replayed step-up token is refused.
    with pytest.raises(ffi.WalletError.StepUpTokenUsed):
        run(wallet.export(key.key_id, step_up))
    # Another user's fresh step-up token does not reach this key.
    with pytest.raises(ffi.WalletError.NotFound):
        run(wallet.export(key.key_id, server.step_up_token(user + "-other")))


def test_errors_arrive_typed(server, user):
    token = server.token(user)
    wallet = new_wallet(server, user, token="not.a.jwt")
    with pytest.raises(ffi.WalletError.Unauthorized) as raised:
        run(wallet.keygen())
    # Tokens expire: a new one is taken without a new wallet.
    wallet.set_token(token)
    key = run(wallet.keygen())
    for prehash in (b"", b"\x01" * 31, b"\x01" * 33):
        with pytest.raises(ffi.WalletError.InvalidInput):
            run(wallet.sign(key.key_id, prehash, None))
    with pytest.raises(ffi.WalletError.InvalidInput):
        run(wallet.sign("not-a-key-id", prehash_of(b"x"), None))
    with pytest.raises(ffi.WalletError.InvalidInput):
        run(wallet.sign(key.key_id, prehash_of(b"x"), "m/x"))
    with pytest.raises(ffi.WalletError.NotFound):
        run(wallet.sign("ab" * 32, prehash_of(b"x"), None))
    with pytest.raises(ffi.WalletError.InvalidInput):
        new_wallet(server, user, storage_key=b"\x00" * 31)
    with pytest.raises(ffi.WalletError.InvalidInput):
        ffi.Wallet("http://127.0.0.1:1", server.rest_url, token, b"\x00" * 32, ffi.memory_store())
    # Nothing listens on the discard port of loopback.
    offline = ffi.Wallet("ws://127.0.0.1:9", "http://127.0.0.1:9", token, b"\x00" * 32,
                         ffi.memory_store())
    with pytest.raises(ffi.WalletError.Network):
        run(offline.keygen())
    # No token in an error's text.
    assert token not in str(raised.value) and token not in repr(raised.value)


def test_concurrent_signs_on_one_wallet(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    prehashes = [prehash_of(b"concurrent %d" % i) for i in range(4)]

    async def all_of_them():
        return await asyncio.gather(*(wallet.sign(key.key_id, p, None) for p in prehashes))

    for signature, prehash in zip(run(all_of_them()), prehashes):
        check_signature(signature, key.public_key, prehash)


def test_sign_time_through_the_bindings(server, user):
    """Measures one sign (both parties, over loopback) as a Python app sees
    it; the median is printed in the summary. No timing assertion."""
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())

    async def timed():
        # One event loop: only the call is timed, not asyncio's setup.
        results = []
        for i in range(SIGN_SAMPLES):
            prehash = prehash_of(b"timed %d" % i)
            started = time.perf_counter()
            signature = await wallet.sign(key.key_id, prehash, None)
            SIGN_TIMES.append(time.perf_counter() - started)
            results.append((signature, prehash))
        return results

    for signature, prehash in run(timed()):
        check_signature(signature, key.public_key, prehash)


def test_the_independent_checks_reject_forgeries(server, user):
    """The suite's verifier is not a rubber stamp: one flipped bit, another
    recovery id, another message or another derived key each fail it."""
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    prehash = prehash_of(b"genuine")
    signature = run(wallet.sign(key.key_id, prehash, None))
    check_signature(signature, key.public_key, prehash)
    r_s = bytes(signature.r_s)
    forgeries = [
        (ffi.Signature(public_key=signature.public_key, prehash=signature.prehash,
                       r_s=r_s[:63] + bytes([r_s[63] ^ 1]), recovery_id=signature.recovery_id),
         prehash),
        (ffi.Signature(public_key=signature.public_key, prehash=signature.prehash,
                       r_s=r_s, recovery_id=signature.recovery_id ^ 1), prehash),
        (ffi.Signature(public_key=signature.public_key, prehash=prehash_of(b"other"),
                       r_s=r_s, recovery_id=signature.recovery_id), prehash_of(b"other")),
    ]
    for forged, message in forgeries:
        with pytest.raises(AssertionError):
            check_signature(forged, key.public_key, message)
    derived = run(wallet.sign(key.key_id, prehash, "m/0/5"))
    with pytest.raises(AssertionError):
        check_signature(derived, derive_public(key.xpub, "m/0/6"), prehash)


def tap_tweak(internal, merkle_root=b""):
    """BIP341's TapTweak tagged hash, computed here."""
    tag = hashlib.sha256(b"TapTweak").digest()
    return hashlib.sha256(tag + tag + internal + merkle_root).digest()


def test_bip340_signatures_verify_under_independent_keys(server, user):
    wallet = new_wallet(server, user)
    key = run(wallet.keygen())
    child = derive_public(key.xpub, "m/0/5")
    cases = [
        (None, bytes(key.public_key), ffi.Taproot.OFF(), None),
        ("m/0/5", child, ffi.Taproot.OFF(), None),
        ("m/0/5", child, ffi.Taproot.KEY_PATH_ONLY(), b""),
        (None, bytes(key.public_key), ffi.Taproot.MERKLE_ROOT(b"\x07" * 32), b"\x07" * 32),
    ]
    for path, derived, taproot, merkle_root in cases:
        message = prehash_of(b"bip340 %r %r" % (path, merkle_root))
        signed = run(wallet.sign_schnorr(key.key_id, message, path, taproot))
        assert bytes(signed.public_key) == derived
        internal = derived[1:]
        assert bytes(signed.internal_key) == internal
        expected = coincurve.PublicKeyXOnly(internal)
        if merkle_root is not None:
            expected.tweak_add(tap_tweak(internal, merkle_root))
        assert bytes(signed.output_key) == expected.format()
        assert expected.verify(bytes(signed.signature), message), "libsecp256k1 rejects it"
        forged = bytearray(signed.signature)
        forged[63] ^= 1
        assert not expected.verify(bytes(forged), message)
    with pytest.raises(ffi.WalletError.InvalidInput):
        run(wallet.sign_schnorr(key.key_id, b"short", None, ffi.Taproot.OFF()))
    with pytest.raises(ffi.WalletError.InvalidInput):
        run(wallet.sign_schnorr(key.key_id, prehash_of(b"x"), None, ffi.Taproot.MERKLE_ROOT(b"1")))
