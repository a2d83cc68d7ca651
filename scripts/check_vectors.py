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
    checks.update(file_vectors(text))
    bad = 0
    for name, value in checks.items():
        ok = value in text
        bad += not ok
        print("%-17s %s %s" % (name, "ok  " if ok else "MISSING", value))
    sys.exit(1 if bad else 0)


# --- File transfer (docs/PROTOCOL.md §8) -------------------------------------------------------------

def ed25519_to_x25519_public(pub):
    """The birational map of RFC 7748 §4.1: u = (1 + y) / (1 - y) mod p."""
    p = 2**255 - 19
    y = int.from_bytes(pub, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, p - 2, p) % p).to_bytes(32, "little")


def file_vectors(text):
    """Recomputes the §8 file vectors as the recipient would, from the published manifest and the fixed
    seeds: signature, X25519 (both ways to the recipient's Montgomery key), ML-KEM-768 decapsulation,
    key schedule, sealed name and checksum, and the chunks re-sealed from the known plaintext."""
    from cryptography.hazmat.primitives.asymmetric import mlkem
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    marker = "manifest = "
    start = text.index(marker) + len(marker)
    raw = bytes.fromhex(text[start:text.index("`", start)].strip().strip("`"))
    pos = 0

    def take(n):
        nonlocal pos
        out = raw[pos:pos + n]
        pos += n
        return out

    assert take(2) == b"\x01\x10"
    file_id = take(16)
    sender = take(take(1)[0]); sender_key = take(32)
    recipient = take(take(1)[0]); recipient_key = take(32)
    created, size, chunk_size, count, prekey_id = struct.unpack(">QQIII", take(28))
    eph = take(32); ct_pre = take(1088)
    head = raw[:pos]
    sealed_meta = take(304); sig = take(64)
    assert pos == len(raw) and (sender, recipient) == (b"alice", b"bob")
    Ed25519PublicKey.from_public_bytes(sender_key).verify(sig, b"qvoice/v1 file manifest sig" + raw[:-64])

    bob_seed = b"\xb0" * 32
    bob_x_priv = X25519PrivateKey.from_private_bytes(hashlib.sha512(bob_seed).digest()[:32])
    bob_x = bob_x_priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert bob_x == ed25519_to_x25519_public(recipient_key), "Montgomery map disagrees with the scalar"
    dh = bob_x_priv.exchange(X25519PublicKey.from_public_bytes(eph))
    prekey = mlkem.MLKEM768PrivateKey.from_seed_bytes(b"\xc0" * 64)
    ss_pre = prekey.decapsulate(ct_pre)
    context = hashlib.sha256(b"qvoice/v1 file context" + file_id + bytes([len(sender)]) + sender + sender_key
                             + bytes([len(recipient)]) + recipient + recipient_key
                             + struct.pack(">I", prekey_id) + eph + bob_x + ct_pre).digest()
    file_key = hkdf(context, dh + ss_pre, b"qvoice/v1 file key", 32)
    prefix = hkdf(context, dh + ss_pre, b"qvoice/v1 file nonce", 7)
    meta_key = hkdf(context, dh + ss_pre, b"qvoice/v1 file meta key", 32)
    meta = AESGCM(meta_key).decrypt(bytes(12), sealed_meta, b"qvoice/v1 file meta" + head)
    data = (b"qvoice file vector\n" * 100)[:size]
    name = meta[33:33 + meta[32]]
    assert meta[:32] == hashlib.sha256(data).digest() and name == b"vector.txt", "sealed metadata"
    assert not any(meta[33 + meta[32]:]), "metadata padding must be zero"
    manifest_hash = hashlib.sha256(b"qvoice/v1 file manifest" + raw).digest()
    chunks = []
    for i in range(count):
        nonce = prefix + struct.pack(">IB", i, 1 if i == count - 1 else 0)
        chunks.append(AESGCM(file_key).encrypt(nonce, data[i * chunk_size:(i + 1) * chunk_size], manifest_hash))
    ek = prekey.public_key().public_bytes_raw()
    return {
        "file_prekey_ek": hashlib.sha256(ek).hexdigest(), "file_bob_x25519": bob_x.hex(), "file_dh": dh.hex(),
        "file_ss_pre": ss_pre.hex(), "file_context": context.hex(), "file_key": file_key.hex(),
        "file_nonce_prefix": prefix.hex(), "file_meta_key": meta_key.hex(),
        "file_manifest_hash": manifest_hash.hex(), "file_chunk0_sha256": hashlib.sha256(chunks[0]).hexdigest(),
        "file_chunk1": chunks[1].hex(),
    }


if __name__ == "__main__":
    main()
