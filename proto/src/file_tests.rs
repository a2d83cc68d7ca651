//! File transfer tests on seeded randomness: round trips, every tampering the STREAM construction must
//! catch, substitution by a registry, and the docs/PROTOCOL.md §12 test vectors.

use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_767_225_600_000;

struct Party {
    name: Username,
    id: IdentitySecret,
    prekeys: Vec<PrekeySecret>,
}

impl Party {
    fn new(rng: &mut ChaCha20Rng, name: &str) -> Self {
        Self {
            name: Username::parse(name).unwrap(),
            id: IdentitySecret::generate(rng),
            prekeys: vec![PrekeySecret::generate(rng, 3)],
        }
    }

    fn fixed(name: &str, id_seed: u8, prekey_seed: u8, prekey_id: u32) -> Self {
        Self {
            name: Username::parse(name).unwrap(),
            id: IdentitySecret::from_bytes(&[id_seed; 32]),
            prekeys: vec![PrekeySecret::from_seed(prekey_id, &[prekey_seed; 64])],
        }
    }

    fn signed_prekey(&self) -> SignedPrekey {
        self.prekeys[0].sign(&self.id, NOW + crate::PREKEY_LIFETIME_MS)
    }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn meta_of(name: &str, data: &[u8]) -> FileMeta {
    FileMeta { name: name.to_owned(), sha256: Sha256::digest(data).into() }
}

/// Seals `data` from `a` to `b`: the manifest, the keys, and every chunk.
fn send(
    rng: &mut ChaCha20Rng,
    a: &Party,
    b: &Party,
    data: &[u8],
    chunk_size: u32,
) -> (Manifest, FileKeys, Vec<Vec<u8>>) {
    let meta = meta_of("report.pdf", data);
    let prekey = b.signed_prekey();
    let params = SealParams {
        sender: &a.name,
        recipient: &b.name,
        recipient_key: &b.id.public(),
        recipient_prekey: &prekey,
        meta: &meta,
        size: data.len() as u64,
        chunk_size,
    };
    let (m, keys) = seal_manifest(rng, NOW, &a.id, &params).unwrap();
    let cipher = keys.cipher(&m);
    let chunks = data
        .chunks(chunk_size as usize)
        .enumerate()
        .map(|(i, c)| {
            let mut out = Vec::new();
            cipher.seal(i as u32, c, &mut out).unwrap();
            out
        })
        .collect::<Vec<_>>();
    let chunks = if chunks.is_empty() {
        let mut out = Vec::new();
        cipher.seal(0, &[], &mut out).unwrap();
        vec![out]
    } else {
        chunks
    };
    (m, keys, chunks)
}

/// Receives: opens the manifest as `b`, then the chunks in order; returns the plaintext.
fn receive(b: &Party, m: &Manifest, chunks: &[Vec<u8>]) -> Result<Vec<u8>, FileError> {
    let (meta, keys) = open_manifest(m, &b.id, &b.name, &b.prekeys)?;
    let mut s = StreamOpener::new(keys.cipher(m), &meta);
    let mut all = Vec::new();
    let mut buf = Vec::new();
    for c in chunks {
        s.open_next(c, &mut buf)?;
        all.extend_from_slice(&buf);
    }
    s.finish()?;
    Ok(all)
}

fn pair() -> (ChaCha20Rng, Party, Party) {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let a = Party::new(&mut rng, "alice");
    let b = Party::new(&mut rng, "bob");
    (rng, a, b)
}

#[test]
fn files_of_every_shape_round_trip() {
    let (mut rng, a, b) = pair();
    for len in [0usize, 1, 1023, 1024, 1025, 5000, 3 * 1024] {
        let data = content(len);
        let (m, _, chunks) = send(&mut rng, &a, &b, &data, 1024);
        assert_eq!(m.chunk_count as usize, chunks.len(), "len {len}");
        assert_eq!(m.wire_size(), chunks.iter().map(|c| c.len() as u64).sum::<u64>());
        let parsed = Manifest::parse(m.to_bytes()).unwrap();
        assert_eq!(parsed, m);
        assert!(m.to_bytes().len() <= MAX_MANIFEST_LEN);
        assert_eq!(receive(&b, &m, &chunks).unwrap(), data, "len {len}");
        let (meta, _) = open_manifest(&m, &b.id, &b.name, &b.prekeys).unwrap();
        assert_eq!(meta.name, "report.pdf");
    }
}

#[test]
fn resumed_sender_reproduces_identical_chunks() {
    let (mut rng, a, b) = pair();
    let data = content(4000);
    let (m, keys, chunks) = send(&mut rng, &a, &b, &data, 1024);
    // What the sender persists for resume, reloaded (a new process after kill -9).
    let again = FileKeys::from_bytes(&keys.to_bytes()[..]).unwrap().cipher(&Manifest::parse(m.to_bytes()).unwrap());
    let mut out = Vec::new();
    again.seal(2, &data[2048..3072], &mut out).unwrap();
    assert_eq!(out, chunks[2]);
}

#[test]
fn reordered_swapped_truncated_extended_or_flipped_chunks_are_refused() {
    let (mut rng, a, b) = pair();
    let data = content(3000);
    let (m, keys, chunks) = send(&mut rng, &a, &b, &data, 1024);
    let mut swapped = chunks.clone();
    swapped.swap(0, 1);
    assert_eq!(receive(&b, &m, &swapped), Err(FileError::ChunkTagFailure { index: 0 }));
    // Truncation: the stream ends early (the last chunk never arrived).
    assert_eq!(receive(&b, &m, &chunks[..2]), Err(FileError::Truncated { got: 2, count: 3 }));
    // Truncation of the last chunk itself.
    let mut short = chunks.clone();
    let n = short[2].len() - 1;
    short[2].truncate(n);
    assert!(matches!(receive(&b, &m, &short), Err(FileError::ChunkLength { index: 2, .. })));
    // Extension: a fourth chunk does not exist.
    let mut longer = chunks.clone();
    longer.push(chunks[1].clone());
    assert_eq!(receive(&b, &m, &longer), Err(FileError::ChunkIndex { index: 3, count: 3 }));
    // One flipped bit anywhere in a chunk.
    for i in 0..3 {
        let mut bad = chunks.clone();
        let at = bad[i].len() / 2;
        bad[i][at] ^= 0x40;
        assert_eq!(receive(&b, &m, &bad), Err(FileError::ChunkTagFailure { index: i as u32 }));
    }
    // A full-size chunk sealed as "last" cannot stand in for a middle one, and vice versa: the flag is in
    // the nonce. Re-seal chunk 0's plaintext under a 1-chunk view is impossible without the key, so check
    // the nonces differ where only the flag differs.
    let c = keys.cipher(&m);
    assert_eq!(c.nonce(2)[11], 1);
    assert_eq!(c.nonce(1)[11], 0);
    assert_eq!(
        c.nonce(1)[..11],
        {
            let mut n = c.nonce(2);
            n[10] = 1;
            n
        }[..11]
    );
}

#[test]
fn chunks_of_another_file_do_not_open() {
    let (mut rng, a, b) = pair();
    let data = content(2048);
    let (m1, _, c1) = send(&mut rng, &a, &b, &data, 1024);
    let (m2, _, c2) = send(&mut rng, &a, &b, &data, 1024);
    assert_ne!(m1.file_id, m2.file_id);
    assert!(receive(&b, &m1, &c2).is_err());
    assert!(receive(&b, &m2, &c1).is_err());
}

#[test]
fn a_flipped_manifest_byte_never_opens() {
    let (mut rng, a, b) = pair();
    let (m, _, _) = send(&mut rng, &a, &b, &content(100), 1024);
    let raw = m.to_bytes().to_vec();
    for at in (0..raw.len()).step_by(7) {
        let mut bad = raw.clone();
        bad[at] ^= 1;
        if let Ok(p) = Manifest::parse(&bad) {
            assert!(open_manifest(&p, &b.id, &b.name, &b.prekeys).is_err(), "byte {at} changed and still opened");
        }
    }
    assert!(Manifest::parse(&raw[..raw.len() - 1]).is_err());
    assert!(Manifest::parse(&[raw.clone(), vec![0]].concat()).is_err());
}

#[test]
fn other_users_and_resigned_manifests_cannot_decrypt() {
    let (mut rng, a, b) = pair();
    let eve = Party::new(&mut rng, "eve");
    let (m, _, chunks) = send(&mut rng, &a, &b, &content(2000), 1024);
    // Eve, another user, holds the file (the registry handed it out by mistake): not addressed to her.
    assert_eq!(open_manifest(&m, &eve.id, &eve.name, &eve.prekeys).err(), Some(FileError::WrongRecipient));
    // Eve with Bob's name but her own key.
    assert_eq!(open_manifest(&m, &eve.id, &b.name, &eve.prekeys).err(), Some(FileError::WrongRecipient));
    // Bob after rotating the prekey away.
    let rotated = vec![PrekeySecret::generate(&mut rng, 9)];
    assert_eq!(open_manifest(&m, &b.id, &b.name, &rotated).err(), Some(FileError::UnknownPrekey(3)));
    // Eve re-signs Alice's manifest as her own (claims to be the sender): the sender's identity is in the
    // key schedule's context, so Bob derives other keys and the sealed name does not open.
    let raw = m.to_bytes();
    let body_end = raw.len() - SIGNATURE_LEN;
    let mut w = Writer::default();
    w.bytes(&raw[..2 + FILE_ID_LEN]).short_str("eve").bytes(eve.id.public().as_bytes());
    let skip = 2 + FILE_ID_LEN + 1 + "alice".len() + 32;
    w.bytes(&raw[skip..body_end]);
    let sig = eve.id.sign(&[MANIFEST_SIG, &w.buf].concat());
    w.bytes(&sig);
    let forged = Manifest::parse(&w.buf).unwrap();
    forged.verify().unwrap();
    assert_eq!(open_manifest(&forged, &b.id, &b.name, &b.prekeys).err(), Some(FileError::MetaTagFailure));
    // And the original chunks under the original manifest still open.
    receive(&b, &m, &chunks).unwrap();
}

#[test]
fn a_plaintext_that_differs_from_the_signed_hash_is_refused() {
    let (mut rng, a, b) = pair();
    let data = content(1500);
    let meta = meta_of("x", b"something else");
    let prekey = b.signed_prekey();
    let params = SealParams {
        sender: &a.name,
        recipient: &b.name,
        recipient_key: &b.id.public(),
        recipient_prekey: &prekey,
        meta: &meta,
        size: data.len() as u64,
        chunk_size: 1024,
    };
    let (m, keys) = seal_manifest(&mut rng, NOW, &a.id, &params).unwrap();
    let c = keys.cipher(&m);
    let chunks: Vec<Vec<u8>> = data
        .chunks(1024)
        .enumerate()
        .map(|(i, p)| {
            let mut o = Vec::new();
            c.seal(i as u32, p, &mut o).unwrap();
            o
        })
        .collect();
    assert_eq!(receive(&b, &m, &chunks), Err(FileError::HashMismatch));
}

#[test]
fn sealing_checks_its_inputs() {
    let (mut rng, a, b) = pair();
    let eve = Party::new(&mut rng, "eve");
    let meta = meta_of("n", b"");
    let good = b.signed_prekey();
    let eves = eve.signed_prekey();
    let bob_key = b.id.public();
    let base = SealParams {
        sender: &a.name,
        recipient: &b.name,
        recipient_key: &bob_key,
        recipient_prekey: &good,
        meta: &meta,
        size: 10,
        chunk_size: 1024,
    };
    // A prekey the registry substituted (signed by someone else).
    let p = SealParams { recipient_prekey: &eves, ..base };
    assert_eq!(seal_manifest(&mut rng, NOW, &a.id, &p).err(), Some(FileError::BadSignature));
    let p = SealParams { chunk_size: 512, ..base };
    assert!(matches!(seal_manifest(&mut rng, NOW, &a.id, &p), Err(FileError::InvalidSize(_))));
    let long = FileMeta { name: "x".repeat(256), sha256: [0; 32] };
    let p = SealParams { meta: &long, ..base };
    assert_eq!(seal_manifest(&mut rng, NOW, &a.id, &p).err(), Some(FileError::InvalidName));
    let (m, keys) = seal_manifest(&mut rng, NOW, &a.id, &base).unwrap();
    let mut out = Vec::new();
    assert!(matches!(keys.cipher(&m).seal(0, &[0; 9], &mut out), Err(FileError::ChunkLength { .. })));
    assert!(matches!(keys.cipher(&m).seal(1, &[], &mut out), Err(FileError::ChunkIndex { .. })));
}

#[test]
fn file_ids_are_strict_lowercase_hex() {
    let id = FileId::from_bytes([0xab; 16]);
    assert_eq!(FileId::from_hex(&id.to_hex()).unwrap(), id);
    assert!(FileId::from_hex(&id.to_hex().to_uppercase()).is_err());
    assert!(FileId::from_hex("ab").is_err());
    assert!(FileId::from_hex(&"g".repeat(32)).is_err());
    assert_eq!(chunk_count(0, 1024), Some(1));
    assert_eq!(chunk_count(1025, 1024), Some(2));
}

/// Inputs of the docs/PROTOCOL.md §12 vectors: alice (Ed25519 seed a1…a1) sends bob (seed b0…b0, ML-KEM
/// prekey id 7 from seed c0…c0) the 1100-byte file `vector.txt` in 1024-byte chunks at 2026-01-01.
fn vector_fixture() -> (Party, Party, Vec<u8>, Manifest, FileKeys, Vec<Vec<u8>>) {
    let a = Party::fixed("alice", 0xa1, 0, 0);
    let b = Party::fixed("bob", 0xb0, 0xc0, 7);
    let data: Vec<u8> = b"qvoice file vector\n".iter().copied().cycle().take(1100).collect();
    let meta = meta_of("vector.txt", &data);
    let prekey = b.signed_prekey();
    let params = SealParams {
        sender: &a.name,
        recipient: &b.name,
        recipient_key: &b.id.public(),
        recipient_prekey: &prekey,
        meta: &meta,
        size: data.len() as u64,
        chunk_size: 1024,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(0xf11e);
    let (m, keys) = seal_manifest(&mut rng, NOW, &a.id, &params).unwrap();
    let c = keys.cipher(&m);
    let chunks = data
        .chunks(1024)
        .enumerate()
        .map(|(i, p)| {
            let mut o = Vec::new();
            c.seal(i as u32, p, &mut o).unwrap();
            o
        })
        .collect();
    (a, b, data, m, keys, chunks)
}

#[test]
fn code_matches_published_file_vectors() {
    const DOC: &str = include_str!("../../docs/PROTOCOL.md");
    let (_, b, data, m, keys, chunks) = vector_fixture();
    assert_eq!(receive(&b, &m, &chunks).unwrap(), data);
    let ss = b.prekeys[0].decapsulation_key().decapsulate(&Ciphertext::from(*m.ct_pre));
    let dh = x25519_dalek::x25519(*b.id.x25519_scalar(), m.eph_x25519);
    let context = file_context(&m);
    let mut ss_pre = [0u8; 32];
    ss_pre.copy_from_slice(ss.as_slice());
    let schedule = file_key_schedule(&dh, &ss_pre, &context);
    let key_bytes = keys.to_bytes();
    assert_eq!(&schedule.keys.to_bytes()[..], &key_bytes[..]);
    let got = [
        ("bob_prekey_ek_sha256", to_hex(&Sha256::digest(b.prekeys[0].public_bytes()))),
        ("bob_x25519", to_hex(&b.id.public().to_x25519())),
        ("dh", to_hex(&dh)),
        ("ss_pre", to_hex(&ss_pre)),
        ("context", to_hex(&context)),
        ("file_key", to_hex(&key_bytes[..32])),
        ("nonce_prefix", to_hex(&key_bytes[32..])),
        ("meta_key", to_hex(&schedule.meta_key[..])),
        ("manifest_hash", to_hex(&m.hash())),
        ("manifest", to_hex(m.to_bytes())),
        ("chunk0_sha256", to_hex(&Sha256::digest(&chunks[0]))),
        ("chunk1", to_hex(&chunks[1])),
    ];
    let missing: Vec<String> =
        got.iter().filter(|(_, v)| !DOC.contains(v.as_str())).map(|(n, v)| format!("{n} = {v}")).collect();
    assert!(missing.is_empty(), "docs/PROTOCOL.md lacks file vectors:\n{}", missing.join("\n"));
}
