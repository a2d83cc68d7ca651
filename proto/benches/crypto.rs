//! Cost of the protocol core's cryptography: one media frame sealed and opened (Opus-sized and the seed's
//! 2048-byte PCM frame, with and without the obfuscation keystream), each step of the hybrid handshake,
//! and the safety number. Run with `cargo bench -p qvoice-proto --bench crypto`; figures live in
//! `docs/PERFORMANCE.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use qvoice_proto::handshake::{Answer, Callee, CalleeParams, Caller, CallerParams, Offer, Reveal};
use qvoice_proto::media::DirectionKeys;
use qvoice_proto::{
    Candidate, Codec, FrameType, IdentitySecret, MediaCrypto, PrekeySecret, SessionId, SignedPrekey, Username,
    safety_number,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Opus at ~24 kbps for 20 ms (80 bytes) plus the 4-byte audio timestamp.
const OPUS_FRAME: usize = 84;
/// The seed's frame: 1024 samples of 16-bit PCM.
const SEED_FRAME: usize = 2048;

fn keys(seed: u8) -> DirectionKeys {
    DirectionKeys { key: [seed; 32], iv: [seed.wrapping_add(1); 12], obf: [seed.wrapping_add(2); 32] }
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame seal+open");
    for size in [OPUS_FRAME, SEED_FRAME] {
        for obfuscate in [false, true] {
            let (c2s, s2c) = (keys(1), keys(7));
            let mut tx = MediaCrypto::new(&c2s, &s2c, SessionId(1), SessionId(2), obfuscate);
            let mut rx = MediaCrypto::new(&s2c, &c2s, SessionId(2), SessionId(1), obfuscate);
            let payload = vec![0x5a_u8; size];
            let (mut wire, mut out) = (vec![0u8; 4096], vec![0u8; 4096]);
            let name = format!("{size}B/{}", if obfuscate { "obfuscated" } else { "plain" });
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(name, |b| {
                b.iter(|| {
                    let n = tx.seal(FrameType::Audio, black_box(&payload), &mut wire).unwrap();
                    let opened = rx.open(black_box(&wire[..n]), &mut out).unwrap();
                    black_box(opened.payload.len())
                })
            });
        }
    }
    group.finish();
}

const NOW: u64 = 1_790_000_000_000;

struct Peers {
    alice: IdentitySecret,
    bob: IdentitySecret,
    bob_prekeys: Vec<PrekeySecret>,
    bob_signed: SignedPrekey,
}

impl Peers {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let alice = IdentitySecret::generate(rng);
        let bob = IdentitySecret::generate(rng);
        let prekey = PrekeySecret::generate(rng, 1);
        let bob_signed = prekey.sign(&bob, NOW + qvoice_proto::PREKEY_LIFETIME_MS);
        Self { alice, bob, bob_prekeys: vec![prekey], bob_signed }
    }

    fn caller_params(&self) -> CallerParams {
        CallerParams {
            caller: Username::parse("alice").unwrap(),
            callee: Username::parse("bob").unwrap(),
            codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
            frame_ms: 20,
            candidates: vec![
                Candidate::host("192.0.2.1:4000".parse().unwrap()),
                Candidate::host("[2001:db8::1]:4001".parse().unwrap()),
            ],
            obfuscation: false,
        }
    }

    fn callee_params(&self) -> CalleeParams {
        CalleeParams {
            callee: Username::parse("bob").unwrap(),
            codecs: vec![Codec::Opus.into()],
            candidates: vec![Candidate::host("198.51.100.7:5000".parse().unwrap())],
            obfuscation: false,
        }
    }

    fn start(&self, rng: &mut ChaCha20Rng) -> (Caller, Offer) {
        Caller::start(rng, NOW, &self.alice, self.caller_params(), &self.bob.public(), &self.bob_signed).unwrap()
    }

    fn answer(&self, rng: &mut ChaCha20Rng, offer: &Offer) -> (Callee, Answer) {
        Callee::on_offer(rng, NOW, &self.bob, &self.alice.public(), offer, self.callee_params()).unwrap()
    }

    fn reveal(&self, rng: &mut ChaCha20Rng) -> (Callee, Reveal) {
        let (caller, offer) = self.start(rng);
        let (callee, answer) = self.answer(rng, &offer);
        let (reveal, _) = caller.on_answer(rng, &answer).unwrap();
        (callee, reveal)
    }
}

fn handshake(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let peers = Peers::new(&mut rng);
    let mut group = c.benchmark_group("handshake");
    group.sample_size(30).measurement_time(Duration::from_secs(4));

    // Caller: verify the prekey signature, X25519 keygen, ML-KEM encapsulation to the prekey, sign OFFER.
    group.bench_function("caller start (OFFER)", |b| b.iter(|| black_box(peers.start(&mut rng))));

    // Callee: verify OFFER, X25519 + ML-KEM-768 keygen, sign ANSWER.
    let (_, offer) = peers.start(&mut rng);
    group.bench_function("callee on_offer (ANSWER)", |b| b.iter(|| black_box(peers.answer(&mut rng, &offer))));

    // Caller: verify ANSWER, encapsulate to the ephemeral key, X25519, sign REVEAL, key schedule.
    let mut setup_rng = ChaCha20Rng::seed_from_u64(8);
    group.bench_function("caller on_answer (REVEAL + keys)", |b| {
        b.iter_batched(
            || {
                let (caller, offer) = peers.start(&mut setup_rng);
                let (_, answer) = peers.answer(&mut setup_rng, &offer);
                (caller, answer)
            },
            |(caller, answer)| black_box(caller.on_answer(&mut rng, &answer).unwrap()),
            BatchSize::SmallInput,
        )
    });

    // Callee: verify REVEAL and the commitment, two ML-KEM decapsulations, X25519, key schedule.
    group.bench_function("callee on_reveal (keys)", |b| {
        b.iter_batched(
            || peers.reveal(&mut setup_rng),
            |(callee, reveal)| black_box(callee.on_reveal(&reveal, &peers.bob_prekeys).unwrap()),
            BatchSize::SmallInput,
        )
    });

    // Both sides, all four steps in one process (what a loopback call setup costs in CPU).
    group.bench_function("full handshake (both sides)", |b| {
        b.iter(|| {
            let (caller, offer) = peers.start(&mut rng);
            let (callee, answer) = peers.answer(&mut rng, &offer);
            let (reveal, ck) = caller.on_answer(&mut rng, &answer).unwrap();
            let sk = callee.on_reveal(&reveal, &peers.bob_prekeys).unwrap();
            black_box((ck.sas, sk.sas))
        })
    });

    // Per contact, not per call: 2 x 5200 iterations of SHA-512.
    let (alice, bob) = (Username::parse("alice").unwrap(), Username::parse("bob").unwrap());
    let (ak, bk) = (peers.alice.public(), peers.bob.public());
    group.bench_function("safety_number", |b| b.iter(|| black_box(safety_number(&alice, &ak, &bob, &bk))));
    group.finish();
}

criterion_group!(benches, frames, handshake);
criterion_main!(benches);
