#!/usr/bin/env python3
"""Independent re-computation of the docs/PROTOCOL.md test vectors with Python's `cryptography`.

Run: pip install cryptography && python3 scripts/check_vectors.py
"""
import hashlib
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
import hmac


def hkdf(salt, ikm, info, n):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return HKDFExpand(hashes.SHA256(), n, info).derive(prk)


def keystream_xor(obf, counter, data):
    out = bytearray(data)
    for i in range(0, len(out), 32):
        block = hashlib.sha256(obf + struct.pack(">QI", counter, i // 32)).digest()
        for j in range(min(32, len(out) - i)):
            out[i + j] ^= block[j]
    return bytes(out)


def seal(key, iv, obf, session, counter, payload, obfuscate):
    header = bytes([0x11, 1 if obfuscate else 0]) + struct.pack(">IQ", session, counter)
    nonce = iv[:4] + bytes(a ^ b for a, b in zip(iv[4:], struct.pack(">Q", counter)))
    body = keystream_xor(obf, counter, payload) if obfuscate else payload
    return header + AESGCM(key).encrypt(nonce, body, header)


def fingerprint(name, key):
    h = hashlib.sha512(b"qvoice/v1 safety number" + key + name).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + key).digest()
    return "".join("%05d" % (int.from_bytes(h[i:i + 5], "big") % 100000) for i in range(0, 30, 5))


def main():
    ikm = b"\x11" * 32 + b"\x22" * 32 + b"\x33" * 32
    salt, sas_salt = b"\x44" * 32, b"\x55" * 32
    got = {}
    for d in ("c2s", "s2c"):
        got[d + "_key"] = hkdf(salt, ikm, b"qvoice/v1 %s key" % d.encode(), 32)
        got[d + "_iv"] = hkdf(salt, ikm, b"qvoice/v1 %s iv" % d.encode(), 12)
        got[d + "_obf"] = hkdf(salt, ikm, b"qvoice/v1 %s obf" % d.encode(), 32)
    sas_bits = int.from_bytes(hkdf(sas_salt, b"\x11" * 32 + b"\x33" * 32, b"qvoice/v1 sas", 4), "big") >> 12
    alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
    sas = "".join(alphabet[(sas_bits >> (5 * i)) & 31] for i in (3, 2, 1, 0))
    payload = struct.pack(">I", 960) + b"qvoice test frame"
    args = (got["c2s_key"], got["c2s_iv"], got["c2s_obf"], 0x0A0B0C0D)
    frame_plain = seal(*args, 0, payload, False)
    frame_obf = seal(*args, 1, payload, True)

    def pub(seed):
        return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    alice, bob = pub(b"\xa1" * 32), pub(b"\xb0" * 32)
    halves = sorted([fingerprint(b"alice", alice), fingerprint(b"bob", bob)])
    digits = "".join(halves)
    safety = " ".join(digits[i:i + 5] for i in range(0, 60, 5))

    text = open(sys.argv[1] if len(sys.argv) > 1 else "docs/PROTOCOL.md").read()
    checks = {k: v.hex() for k, v in got.items()}
    checks.update(sas=sas, frame_plain=frame_plain.hex(), frame_obfuscated=frame_obf.hex(),
                  safety=safety, alice_key=alice.hex(), bob_key=bob.hex())
    bad = 0
    for name, value in checks.items():
        ok = value in text
        bad += not ok
        print("%-17s %s %s" % (name, "ok  " if ok else "MISSING", value))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
