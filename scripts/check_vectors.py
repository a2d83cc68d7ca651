#!/usr/bin/env python3
"""Independent re-computation of every docs/PROTOCOL.md test vector (section "Test vectors").

Written from the document, not from the Rust code: Ed25519, X25519, AES-GCM, HKDF and SHA-2 come from
pyca `cryptography`; ML-KEM-768 key generation and decapsulation from `cryptography` (OpenSSL) and the
pure-Python `kyber-py`, which must agree; ML-KEM encapsulation with a given message `m` (FIPS 203
ML-KEM.Encaps_internal) only from `kyber-py`, since OpenSSL does not expose derandomized encapsulation,
and every ciphertext is then decapsulated by OpenSSL to confirm the shared secret.

Every `name = value` entry of a ```vectors block must be recomputed here and match; a vector computed
here but missing from the document is an error too.

Run: pip install cryptography kyber-py && python3 scripts/check_vectors.py [docs/PROTOCOL.md]
"""
import hashlib
import hmac
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

try:
    from cryptography.hazmat.primitives.asymmetric import mlkem as openssl_mlkem
except ImportError:  # cryptography < 47
    openssl_mlkem = None
try:
    from kyber_py.ml_kem import ML_KEM_768 as KYBER_PY
except ImportError:
    sys.exit("check_vectors.py needs kyber-py for ML-KEM-768 encapsulation: pip install kyber-py")

RAW = serialization.Encoding.Raw


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


def seal(keys, session, counter, payload, obfuscate):
    """A media frame (section "Media frames"): header, AES-256-GCM with nonce = iv XOR counter."""
    header = bytes([0x11, 1 if obfuscate else 0]) + struct.pack(">IQ", session, counter)
    iv = keys["iv"]
    nonce = iv[:4] + bytes(a ^ b for a, b in zip(iv[4:], struct.pack(">Q", counter)))
    body = keystream_xor(keys["obf"], counter, payload) if obfuscate else payload
    return header + AESGCM(keys["key"]).encrypt(nonce, body, header)


def schedule(dh, ss_eph, ss_pre, t, t_sas):
    """Section "Key schedule": the two directions' keys and the SAS."""
    ikm = dh + ss_eph + ss_pre
    out = {}
    for d in ("c2s", "s2c"):
        out[d] = {part: hkdf(t, ikm, b"qvoice/v1 %s %s" % (d.encode(), part.encode()), n)
                  for part, n in (("key", 32), ("iv", 12), ("obf", 32))}
    bits = int.from_bytes(hkdf(t_sas, dh + ss_pre, b"qvoice/v1 sas", 4), "big") >> 12
    alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
    out["sas"] = "".join(alphabet[(bits >> (5 * i)) & 31] for i in (3, 2, 1, 0))
    return out


def fingerprint(name, key):
    h = hashlib.sha512(b"qvoice/v1 safety number" + key + name).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + key).digest()
    return "".join("%05d" % (int.from_bytes(h[i:i + 5], "big") % 100000) for i in range(0, 30, 5))


def ed25519(seed):
    return Ed25519PrivateKey.from_private_bytes(seed)


def ed_public(sk):
    return sk.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)


def x25519_public(secret):
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(RAW, serialization.PublicFormat.Raw)


def x25519(secret, peer):
    return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(peer))


def mlkem_keygen(d, z):
    """ML-KEM-768 key pair from the 64-byte seed d || z; both implementations must agree."""
    ek, dk = KYBER_PY._keygen_internal(d, z)
    if openssl_mlkem is not None:
        openssl_ek = openssl_mlkem.MLKEM768PrivateKey.from_seed_bytes(d + z).public_key().public_bytes_raw()
        assert openssl_ek == ek, "OpenSSL and kyber-py disagree on ML-KEM-768 key generation"
    return ek, dk


def mlkem_encaps(ek, m, seed):
    """ML-KEM.Encaps_internal(ek, m) -> (ct, K); OpenSSL decapsulates with the key from `seed`."""
    k, ct = KYBER_PY._encaps_internal(ek, m)
    if openssl_mlkem is not None:
        dk = openssl_mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        assert dk.decapsulate(ct) == k, "OpenSSL does not decapsulate kyber-py's ciphertext to the same secret"
    return ct, k


def str8(s):
    return bytes([len(s)]) + s


HOST = 1  # candidate types: 1 host, 2 server-reflexive, 3 relayed


def candidates(cands):
    """Section "Candidates": count, then type, family, address, port (every candidate here is a host one)."""
    out = bytes([len(cands)])
    for family, addr, port in cands:
        out += bytes([HOST, family]) + addr + struct.pack(">H", port)
    return out


def durations(ms):
    bits = 0
    for i, d in enumerate((10, 20, 40, 60, 64)):
        if d in ms:
            bits |= 1 << i
    return bits


def handshake(v, alice, bob):
    """Section "Test vectors", the call: every message built field by field from the document."""
    now = 1_790_000_000_000
    lifetime = 30 * 86_400_000
    # Bob's signed prekey (section "Identities and prekeys").
    pk_seed = b"\xc1" * 32 + b"\xc2" * 32
    pk_ek, _ = mlkem_keygen(pk_seed[:32], pk_seed[32:])
    pk_id, pk_expires = 7, now + lifetime
    pk_sig = bob.sign(b"qvoice/v2 prekey sig" + struct.pack(">IQ", pk_id, pk_expires) + pk_ek)
    v["prekey_signed"] = struct.pack(">IQ", pk_id, pk_expires) + pk_ek + pk_sig
    v["prekey_sig"] = pk_sig

    # OFFER (section "OFFER").
    call_id = bytes(range(16))
    eph_c = b"\x3c" * 32
    ct_pre, ss_pre = mlkem_encaps(pk_ek, b"\x4d" * 32, pk_seed)
    commit = hashlib.sha256(b"qvoice/v1 commit" + call_id + x25519_public(eph_c) + struct.pack(">I", pk_id)
                            + ct_pre).digest()
    body = bytes([2, 1]) + call_id + bytes([2]) + struct.pack(">I", 1)  # max version 2, obfuscation
    body += str8(b"alice") + str8(b"bob") + ed_public(alice) + struct.pack(">QI", now, 0x11223344)
    body += bytes([20, 2, 1, durations((10, 20, 40, 60)), 2, durations((10, 20, 40))])
    body += candidates([(4, bytes([192, 0, 2, 1]), 40000),
                        (6, bytes.fromhex("20010db8000000000000000000000001"), 40001)])
    body += commit
    offer = body + alice.sign(b"qvoice/v1 offer sig" + body)
    v["offer"], v["offer_sig"], v["commit"] = offer, offer[-64:], commit

    # ANSWER (section "ANSWER"): Opus at 20 ms, obfuscation on.
    eph_s = b"\x5e" * 32
    eph_kem_seed = b"\x6a" * 32 + b"\x6b" * 32
    eph_kem_ek, _ = mlkem_keygen(eph_kem_seed[:32], eph_kem_seed[32:])
    body = bytes([2, 2]) + call_id + struct.pack(">I", 1) + ed_public(bob) + struct.pack(">I", 0x55667788)
    body += bytes([1, 20]) + candidates([(4, bytes([198, 51, 100, 2]), 50000)])
    body += x25519_public(eph_s) + eph_kem_ek
    answer = body + bob.sign(b"qvoice/v1 answer sig" + offer + body)
    v["answer"], v["answer_sig"] = answer, answer[-64:]

    # REVEAL (section "REVEAL").
    ct_eph, ss_eph = mlkem_encaps(eph_kem_ek, b"\x7f" * 32, eph_kem_seed)
    body = bytes([2, 3]) + call_id + x25519_public(eph_c) + struct.pack(">I", pk_id) + ct_pre + ct_eph
    reveal = body + alice.sign(b"qvoice/v1 reveal sig" + offer + answer + body)
    v["reveal"], v["reveal_sig"] = reveal, reveal[-64:]

    # Key schedule (section "Key schedule").
    t = hashlib.sha256(b"qvoice/v1 transcript" + offer + answer + reveal).digest()
    t_sas = hashlib.sha256(b"qvoice/v1 sas transcript" + offer + answer + x25519_public(eph_c)
                           + struct.pack(">I", pk_id) + ct_pre).digest()
    v["transcript_t"], v["transcript_t_sas"] = t, t_sas
    dh = x25519(eph_c, x25519_public(eph_s))
    assert dh == x25519(eph_s, x25519_public(eph_c))
    v["handshake_dh"], v["handshake_ss_pre"], v["handshake_ss_eph"] = dh, ss_pre, ss_eph
    keys = schedule(dh, ss_eph, ss_pre, t, t_sas)
    v["handshake_sas"] = keys["sas"]
    payload = struct.pack(">I", 0) + b"first frame"
    v["handshake_first_frame"] = seal(keys["c2s"], 0x55667788, 0, payload, True)


def request(v, alice):
    """Section "Registry request authentication": alice hangs up at https://registry.example."""
    body = b'{"call_id":"000102030405060708090a0b0c0d0e0f","reason":null,"kind":"hangup"}'
    lines = [b"qvoice/v2 request", b"https://registry.example:443", b"POST", b"/call/hangup", b"alice",
             b"1790000000000", hashlib.sha256(body).hexdigest().encode()]
    signing = b"\n".join(lines)
    v["request_signing_bytes"] = signing
    v["request_signature"] = alice.sign(signing)


def compute():
    v = {}
    keys = schedule(b"\x11" * 32, b"\x22" * 32, b"\x33" * 32, b"\x44" * 32, b"\x55" * 32)
    for d in ("c2s", "s2c"):
        for part in ("key", "iv", "obf"):
            v["%s_%s" % (d, part)] = keys[d][part]
    v["sas"] = keys["sas"]
    payload = struct.pack(">I", 960) + b"qvoice test frame"
    v["frame_plain"] = seal(keys["c2s"], 0x0A0B0C0D, 0, payload, False)
    v["frame_obfuscated"] = seal(keys["c2s"], 0x0A0B0C0D, 1, payload, True)
    alice, bob = ed25519(b"\xa1" * 32), ed25519(b"\xb0" * 32)
    v["alice_key"], v["bob_key"] = ed_public(alice), ed_public(bob)
    digits = "".join(sorted([fingerprint(b"alice", ed_public(alice)), fingerprint(b"bob", ed_public(bob))]))
    v["safety"] = " ".join(digits[i:i + 5] for i in range(0, 60, 5))
    handshake(v, alice, bob)
    request(v, alice)
    return {k: (x.hex() if isinstance(x, bytes) else x) for k, x in v.items()}


def parse_doc(text):
    """The `name = value` entries of the ```vectors blocks (indented lines continue a hex value)."""
    out, in_block, current = {}, False, None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block, current = line.strip() == "```vectors", None
            continue
        if not in_block or not line.strip():
            continue
        if line.startswith(" "):
            if current is not None:
                out[current] += "".join(line.split())
            continue
        if " = " in line or line.rstrip().endswith(" ="):
            name, value = (line + " ").split(" = ", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            else:
                value = "".join(value.split())
            current = name.strip()
            out[current] = value
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/PROTOCOL.md"
    published = parse_doc(open(path, encoding="utf-8").read())
    computed = compute()
    bad = 0
    for name in sorted(set(published) | set(computed)):
        want, got = published.get(name), computed.get(name)
        if want is None:
            status = "NOT IN DOC"
        elif got is None:
            status = "NOT CHECKED"
        else:
            status = "ok" if want == got else "MISMATCH"
        bad += status != "ok"
        shown = got if got is not None else want
        print("%-22s %-11s %s" % (name, status, shown if len(shown) <= 64 else shown[:61] + "..."))
    # File transfer (§12): its values are published in a table; each must appear in the document.
    text = open(path, encoding="utf-8").read()
    files = file_vectors(text)
    for name, value in sorted(files.items()):
        status = "ok" if value in text else "NOT IN DOC"
        bad += status != "ok"
        print("%-22s %-11s %s" % (name, status, value if len(value) <= 64 else value[:61] + "..."))
    print("%d vectors and %d file values, %d bad; ML-KEM keygen checked by %s" % (
        len(computed), len(files), bad, "OpenSSL and kyber-py" if openssl_mlkem else "kyber-py only"))
    sys.exit(1 if bad else 0)


# --- File transfer (docs/PROTOCOL.md §12) -------------------------------------------------------------

def ed25519_to_x25519_public(pub):
    """The birational map of RFC 7748 §4.1: u = (1 + y) / (1 - y) mod p."""
    p = 2**255 - 19
    y = int.from_bytes(pub, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, p - 2, p) % p).to_bytes(32, "little")


def file_vectors(text):
    """Recomputes the §12 file vectors as the recipient would, from the published manifest and the fixed
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
