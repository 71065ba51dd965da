"""A share store implemented in Python (the foreign callback a phone app
writes over its Keychain or Keystore), and what the wallet does when that
store misbehaves or is tampered with."""

import re
import secrets
import threading

import pytest

import mpc_client_ffi as ffi
from conftest import check_signature, prehash_of, run

NAME = re.compile(r"^[a-z0-9._-]{1,160}$")


class DictStore(ffi.ShareStore):
    """A ShareStore in a Python dict; records the names it was asked for.
    Called from the wallet's worker threads, hence the lock."""

    def __init__(self):
        self.blobs = {}
        self.lock = threading.Lock()
        self.calls = []

    def put(self, name, sealed):
        with self.lock:
            self.calls.append(("put", name))
            self.blobs[name] = bytes(sealed)

    def get(self, name):
        with self.lock:
            self.calls.append(("get", name))
            return self.blobs.get(name)

    def delete(self, name):
        with self.lock:
            self.calls.append(("delete", name))
            self.blobs.pop(name, None)

    def list(self):
        with self.lock:
            self.calls.append(("list", None))
            return list(self.blobs)


def wallet_over(server, user, store, storage_key):
    return ffi.Wallet(server.ws_url, server.rest_url, server.token(user), storage_key, store)


def test_a_python_store_holds_the_wallet(server, user):
    store = DictStore()
    storage_key = secrets.token_bytes(32)
    wallet = wallet_over(server, user, store, storage_key)
    key = run(wallet.keygen())
    assert run(wallet.presign(key.key_id, 2)) == 2
    prehash = prehash_of(b"python store")
    check_signature(run(wallet.sign(key.key_id, prehash, None)), key.public_key, prehash)
    assert store.blobs and all(NAME.match(name) for name in store.blobs)
    assert any(op == "put" for op, _ in store.calls)
    # Sealed: the key id names entries, but no blob carries the public key
    # or other plaintext the share encodes.
    for blob in store.blobs.values():
        assert bytes(key.public_key) not in blob
    # A second wallet (the app restarted) over the same store and key finds
    # the key, its pool, and signs with both kinds of signing.
    again = wallet_over(server, user, store, storage_key)
    assert again.key(key.key_id).presignatures == 2
    prehash = prehash_of(b"after restart")
    check_signature(run(again.sign_online(key.key_id, prehash)), key.public_key, prehash)
    check_signature(run(again.sign(key.key_id, prehash, None)), key.public_key, prehash)
    assert run(again.refresh(key.key_id)) == 1
    assert wallet_over(server, user, store, storage_key).key(key.key_id).epoch == 1


def share_entry(store, key_id):
    names = [n for n in store.blobs if n.startswith(key_id) and n.endswith(".share")]
    assert names, sorted(store.blobs)
    return names[0]


def test_tampered_moved_or_foreign_blobs_are_corrupt(server, user):
    store = DictStore()
    storage_key = secrets.token_bytes(32)
    wallet = wallet_over(server, user, store, storage_key)
    key = run(wallet.keygen())
    name = share_entry(store, key.key_id)
    original = store.blobs[name]

    # Another storage key (another app, a stolen store): nothing opens.
    thief = wallet_over(server, user, store, secrets.token_bytes(32))
    with pytest.raises(ffi.WalletError.Corrupt):
        thief.key(key.key_id)

    # One flipped bit.
    store.blobs[name] = original[:-1] + bytes([original[-1] ^ 1])
    with pytest.raises(ffi.WalletError.Corrupt):
        wallet.key(key.key_id)
    with pytest.raises(ffi.WalletError.Corrupt):
        run(wallet.sign(key.key_id, prehash_of(b"x"), None))

    # Truncated.
    store.blobs[name] = original[: len(original) // 2]
    with pytest.raises(ffi.WalletError.Corrupt):
        wallet.key(key.key_id)

    # The blob of another key moved under this key's name: the name is
    # authenticated, so it does not open there.
    other = run(wallet.keygen())
    store.blobs[name] = store.blobs[share_entry(store, other.key_id)]
    with pytest.raises(ffi.WalletError.Corrupt):
        wallet.key(key.key_id)

    store.blobs[name] = original
    prehash = prehash_of(b"restored")
    check_signature(run(wallet.sign(key.key_id, prehash, None)), key.public_key, prehash)


class FailingStore(DictStore):
    """Fails the chosen operation, with a StoreError or any exception."""

    def __init__(self, operation, error):
        super().__init__()
        self.operation, self.error = operation, error

    def put(self, name, sealed):
        if self.operation == "put":
            raise self.error
        super().put(name, sealed)

    def get(self, name):
        if self.operation == "get":
            raise self.error
        return super().get(name)

    def list(self):
        if self.operation == "list":
            raise self.error
        return super().list()


def test_store_failures_are_typed_errors(server, user):
    # A full disk on put: keygen fails typed, and the wallet holds no key
    # it could not store.
    full = FailingStore("put", ffi.StoreError.Io("disk full"))
    wallet = wallet_over(server, user, full, secrets.token_bytes(32))
    with pytest.raises(ffi.WalletError.Store) as raised:
        run(wallet.keygen())
    assert isinstance(raised.value.error, ffi.StoreError.Io)
    assert "disk full" in raised.value.error.reason
    assert wallet.keys() == [] and full.blobs == {}

    # A store that raises something else (a bug in the app's store): a
    # typed error with the exception's text, not a crash.
    broken = FailingStore("list", RuntimeError("keychain locked"))
    with pytest.raises(ffi.WalletError.Store) as raised:
        wallet_over(server, user, broken, secrets.token_bytes(32)).keys()
    assert "keychain locked" in raised.value.error.reason

    # A store whose listing holds a path, not an entry name (a hostile or
    # broken app store): ignored, never opened as a key.
    class Odd(DictStore):
        def list(self):
            return ["../../etc/passwd", "/" + "ab" * 32 + ".0.share"]

    odd = Odd()
    assert wallet_over(server, user, odd, secrets.token_bytes(32)).keys() == []
    assert not [name for op, name in odd.calls if op == "get" and "/" in (name or "")]
