"""Harness of the Python suite: the real mpc-server binary on loopback (dev
auth, SQLite in a temporary directory, free ports chosen by the kernel),
HS256 tokens minted with the dev secret, an independent verifier
(coincurve, i.e. libsecp256k1) and an independent BIP32 derivation."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time

import coincurve
import pytest

# Every wallet call of the suite runs under this bound (a bound, not a
# timing assertion): nothing hangs CI.
CALL_BOUND_SECONDS = 120
STARTUP_BOUND_SECONDS = 60
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

SIGN_TIMES = []


def run(coroutine):
    """Runs a wallet coroutine to its end, bounded."""
    return asyncio.run(asyncio.wait_for(coroutine, CALL_BOUND_SECONDS))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Server:
    """A running mpc-server --dev: its URLs and the dev JWT secret."""

    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="mpc-ffi-py-")
        self.lines = []
        env = {
            "PATH": os.environ.get("PATH", ""),
            "MPC_DATA_DIR": os.path.join(self.dir, "data"),
            "MPC_WS_ADDR": "127.0.0.1:0",
            "MPC_REST_ADDR": "127.0.0.1:0",
            "MPC_LOG_FORMAT": "json",
            "MPC_LOG": "info",
        }
        self.process = subprocess.Popen(
            [binary, "--dev"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        listening = threading.Event()
        self.addresses = None

        def read():
            for line in self.process.stderr:
                self.lines.append(line.rstrip("\n"))
                try:
                    fields = json.loads(line).get("fields", {})
                except ValueError:
                    continue
                if fields.get("message") == "listening":
                    self.addresses = (fields["ws_addr"], fields["rest_addr"])
                    listening.set()
            listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(STARTUP_BOUND_SECONDS) or self.addresses is None:
            self.stop()
            raise RuntimeError("mpc-server did not start:\n" + "\n".join(self.lines))
        self.ws_url = "ws://" + self.addresses[0]
        self.rest_url = "http://" + self.addresses[1]
        with open(os.path.join(self.dir, "data", "dev-secrets.json")) as f:
            self.jwt_secret = json.load(f)["jwt_secret"].encode()

    def token(self, subject, **claims):
        """An HS256 token for `subject`, as the customer's backend mints it."""
        now = int(time.time())
        body = {"sub": subject, "aud": "mpc-server", "iat": now, "exp": now + 3600}
        body.update(claims)
        signing_input = (
            b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            + b"."
            + b64url(json.dumps(body).encode())
        )
        tag = hmac.new(self.jwt_secret, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + b64url(tag)).decode()

    def step_up_token(self, subject):
        """A single-use step-up token: a fresh second factor, a unique jti."""
        return self.token(
            subject, amr=["otp"], auth_time=int(time.time()), jti=secrets.token_hex(16)
        )

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("MPC_SERVER_BIN")
    if not binary:
        pytest.fail("MPC_SERVER_BIN is not set: run mpc-client-ffi/tests/python/run.sh")
    started = Server(binary)
    yield started
    started.stop()


@pytest.fixture
def user():
    """A fresh token subject per test: no test sees another's keys or limits."""
    return "py-" + secrets.token_hex(6)


# --- independent checks --------------------------------------------------


def der(r_s):
    """`r || s` as a DER ECDSA signature (what coincurve verifies)."""

    def integer(value):
        value = value.lstrip(b"\x00") or b"\x00"
        if value[0] & 0x80:
            value = b"\x00" + value
        return b"\x02" + bytes([len(value)]) + value

    body = integer(r_s[:32]) + integer(r_s[32:])
    return b"\x30" + bytes([len(body)]) + body


def check_signature(signature, public_key, prehash):
    """Checks a wallet signature with libsecp256k1 (coincurve): valid under
    `public_key` for `prehash`, low S, and the recovery id recovers the key."""
    assert bytes(signature.public_key) == bytes(public_key)
    assert bytes(signature.prehash) == bytes(prehash)
    r_s = bytes(signature.r_s)
    assert len(r_s) == 64
    assert int.from_bytes(r_s[32:], "big") <= ORDER // 2, "high S"
    key = coincurve.PublicKey(bytes(public_key))
    assert key.verify(der(r_s), bytes(prehash), hasher=None), "libsecp256k1 rejects it"
    recovered = coincurve.PublicKey.from_signature_and_message(
        r_s + bytes([signature.recovery_id]), bytes(prehash), hasher=None
    )
    assert recovered.format() == bytes(public_key), "the recovery id recovers another key"


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def derive_public(xpub, path):
    """BIP32 public derivation (non-hardened) from an xpub, with coincurve's
    point arithmetic: independent of the Rust code."""
    number = 0
    for char in xpub:
        number = number * 58 + B58.index(char)
    raw = number.to_bytes(82, "big")
    payload, checksum = raw[:78], raw[78:]
    assert hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum
    chain, key = payload[13:45], payload[45:78]
    for part in path.split("/")[1:]:
        index = int(part)
        assert index < 2**31
        digest = hmac.new(chain, key + index.to_bytes(4, "big"), hashlib.sha512).digest()
        key = coincurve.PublicKey(key).add(digest[:32]).format()
        chain = digest[32:]
    return key


def prehash_of(message):
    return hashlib.sha256(message).digest()


def pytest_terminal_summary(terminalreporter):
    if SIGN_TIMES:
        times = sorted(SIGN_TIMES)
        median = times[len(times) // 2]
        terminalreporter.write_line(
            "one sign through the Python bindings against mpc-server (loopback): "
            f"median {median * 1000:.1f} ms of {len(times)} "
            f"(min {times[0] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms)"
        )
