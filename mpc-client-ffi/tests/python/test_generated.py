"""Checks of the generated Swift and Kotlin sources, which cannot be
compiled on this machine (no Swift toolchain, no recent Kotlin compiler)."""

import os
import re

import pytest


def source(*parts):
    directory = os.environ.get("MPC_BINDINGS_DIR")
    if not directory:
        pytest.fail("MPC_BINDINGS_DIR is not set: run mpc-client-ffi/tests/python/run.sh")
    with open(os.path.join(directory, *parts)) as f:
        return f.read()


def test_no_kotlin_exception_field_collides_with_throwable():
    """A variant field named `message` (or `cause`) generates a Kotlin class
    that does not compile: it collides with Throwable's property (UniFFI
    issue 1434)."""
    kotlin = source("kotlin", "uniffi", "mpc_client_ffi", "mpc_client_ffi.kt")
    assert "sealed class WalletException" in kotlin
    assert "sealed class StoreException" in kotlin
    collisions = re.findall(r"val `(message|cause)`:", kotlin)
    assert collisions == []


def test_the_readme_calls_exist_in_the_generated_code():
    """The README's Swift and Kotlin snippets use these declarations."""
    swift = source("swift", "mpc_client_ffi.swift")
    for declaration in [
        "public convenience init(serverUrl: String, restUrl: String, token: String, "
        "storageKey: Data, store: ShareStore)",
        "open func keygen()async throws  -> KeyInfo",
        "open func sign(keyId: String, prehash: Data, path: String?)async throws  -> Signature",
        "open func setToken(token: String)",
        "public protocol ShareStore: AnyObject, Sendable",
        "func put(name: String, sealed: Data) throws",
        "case Unauthorized",
    ]:
        assert declaration in swift, declaration
    assert re.search(r"case Io\(\s*/\*\*.*?\*/reason: String", swift, re.S)
    kotlin = source("kotlin", "uniffi", "mpc_client_ffi", "mpc_client_ffi.kt")
    for declaration in [
        "package uniffi.mpc_client_ffi",
        "constructor(`serverUrl`: kotlin.String, `restUrl`: kotlin.String, "
        "`token`: kotlin.String, `storageKey`: kotlin.ByteArray, `store`: ShareStore)",
        "suspend fun `keygen`(): KeyInfo",
        "suspend fun `sign`(`keyId`: kotlin.String, `prehash`: kotlin.ByteArray, "
        "`path`: kotlin.String?): Signature",
        "fun `put`(`name`: kotlin.String, `sealed`: kotlin.ByteArray)",
        "class Unauthorized(",
    ]:
        assert declaration in kotlin, declaration
