//! Shared pieces of the media integration tests: a real handshake over real sockets, a speech input with
//! chirps, and analysis of the audio that came out (cross-correlation, chirp delay).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use qvoice::media::{AudioIn, AudioOut, CodecKind, Impairment, MediaConfig, MediaEngine, MediaEvent, MediaHandle};
use qvoice_proto::{
    Answer, Callee, CalleeParams, Caller, CallerParams, Candidate, Codec, IdentitySecret, Offer, PrekeySecret, Reveal,
    SessionKeys, Username,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub const RATE: u32 = 16_000;

/// Keys from a full OFFER/ANSWER/REVEAL handshake whose candidates are the two real sockets.
pub fn handshake(codec: Codec, a: &UdpSocket, b: &UdpSocket, seed: u64) -> (SessionKeys, SessionKeys) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (ida, idb) = (IdentitySecret::generate(&mut rng), IdentitySecret::generate(&mut rng));
    let prekeys = vec![PrekeySecret::generate(&mut rng, 7)];
    let now = 1_790_000_000_000;
    let (caller, offer) = Caller::start(
        &mut rng,
        now,
        &ida,
        CallerParams {
            caller: Username::parse("alice").unwrap(),
            callee: Username::parse("bob").unwrap(),
            codecs: vec![codec.into()],
            frame_ms: 20,
            candidates: vec![Candidate::host(a.local_addr().unwrap())],
            obfuscation: false,
        },
        &idb.public(),
        &prekeys[0].sign(&idb, now + qvoice_proto::PREKEY_LIFETIME_MS),
    )
    .unwrap();
    let offer = Offer::parse(offer.to_bytes()).unwrap();
    let (callee, answer) = Callee::on_offer(
        &mut rng,
        now + 40,
        &idb,
        &ida.public(),
        &offer,
        CalleeParams {
            callee: Username::parse("bob").unwrap(),
            codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
            candidates: vec![Candidate::host(b.local_addr().unwrap())],
            obfuscation: false,
        },
    )
    .unwrap();
    let answer = Answer::parse(answer.to_bytes()).unwrap();
    let (reveal, ck) = caller.on_answer(&mut rng, &answer).unwrap();
    let reveal = Reveal::parse(reveal.to_bytes()).unwrap();
    let sk = callee.on_reveal(&reveal, &prekeys).unwrap();
    assert_eq!(ck.sas, sk.sas);
    (ck, sk)
}

pub fn read_wav(path: &Path) -> (Vec<f64>, u32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    (r.samples::<i16>().map(|s| f64::from(s.unwrap())).collect(), rate)
}

pub fn write_wav(path: &Path, rate: u32, samples: &[f64]) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s.clamp(-32_768.0, 32_767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A 60 ms linear sweep 400 Hz → 3.4 kHz at 16 kHz: sharp autocorrelation, survives Opus.
pub fn chirp() -> Vec<f64> {
    let n = (RATE as usize) * 60 / 1000;
    let (f0, f1) = (400.0, 3_400.0);
    let dur = n as f64 / f64::from(RATE);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let phase = 2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur));
            let w = (std::f64::consts::PI * i as f64 / n as f64).sin();
            phase.sin() * w * 16_000.0
        })
        .collect()
}

pub struct Input {
    pub path: PathBuf,
    pub samples: Vec<f64>,
    /// Sample positions where chirps start.
    pub chirps: Vec<usize>,
    /// Range holding the speech.
    pub speech: std::ops::Range<usize>,
}

/// silence · chirp · speech · chirp · silence, at 16 kHz, `speech_secs` of the checked-in clip.
pub fn make_input(dir: &Path, speech_secs: f64) -> Input {
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/speech16k.wav");
    let (speech, rate) = read_wav(&asset);
    assert_eq!(rate, RATE);
    let speech = &speech[..((speech_secs * f64::from(RATE)) as usize).min(speech.len())];
    let c = chirp();
    let gap = |ms: usize| vec![0.0; RATE as usize * ms / 1000];
    let mut s = gap(400);
    let mut chirps = vec![s.len()];
    s.extend(&c);
    s.extend(gap(300));
    let start = s.len();
    s.extend_from_slice(speech);
    let speech_range = start..s.len();
    s.extend(gap(300));
    chirps.push(s.len());
    s.extend(&c);
    s.extend(gap(600));
    let path = dir.join("input.wav");
    write_wav(&path, RATE, &s);
    Input { path, samples: s, chirps, speech: speech_range }
}

/// Normalised cross-correlation of `a` against `b` shifted by `lag`.
pub fn ncc(a: &[f64], b: &[f64], lag: usize) -> f64 {
    let n = a.len().min(b.len().saturating_sub(lag));
    if n == 0 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[lag..lag + n]);
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Delay (in samples) of the chirp starting at `pos` in the input, found in `out` within `max` samples.
pub fn chirp_delay(out: &[f64], pos: usize, max: usize) -> (usize, f64) {
    let c = chirp();
    (0..max)
        .filter(|&d| pos + d + c.len() <= out.len())
        .map(|d| (d, ncc(&c, &out[pos + d..pos + d + c.len()], 0)))
        .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best })
}

/// Normalised correlation of the speech section after aligning, piecewise: the adaptive jitter buffer
/// legitimately moves the alignment by whole frames (it drops a frame in a pause to shrink, or stretches
/// after an underrun), so each 200 ms segment is aligned on its own within ±40 ms of `center` (the chirp
/// delay) and the segments are combined energy-weighted: Σ⟨a,b⟩ / √(Σ|a|² Σ|b|²).
pub fn speech_correlation(input: &Input, out: &[f64], center: usize) -> f64 {
    let seg = RATE as usize / 5;
    let span = RATE as usize * 40 / 1000;
    let (mut dot, mut ea, mut eb) = (0.0, 0.0, 0.0);
    let mut start = input.speech.start;
    while start + seg <= input.speech.end {
        let a = &input.samples[start..start + seg];
        let best = (center.saturating_sub(span)..=center + span)
            .filter(|&lag| start + lag + seg <= out.len())
            .map(|lag| {
                let b = &out[start + lag..start + lag + seg];
                let d: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let nb: f64 = b.iter().map(|y| y * y).sum();
                (d / nb.sqrt().max(1e-9), d, nb)
            })
            .fold((f64::MIN, 0.0, 0.0), |best, x| if x.0 > best.0 { x } else { best });
        dot += best.1;
        eb += best.2;
        ea += a.iter().map(|x| x * x).sum::<f64>();
        start += seg;
    }
    if ea == 0.0 || eb == 0.0 { 0.0 } else { dot / (ea * eb).sqrt() }
}

pub struct Call {
    pub a: MediaHandle,
    pub b: MediaHandle,
    pub a_events: Receiver<MediaEvent>,
    pub b_events: Receiver<MediaEvent>,
    pub a_out: PathBuf,
    pub b_out: PathBuf,
}

/// Two engines on 127.0.0.1 with handshake keys, both sending `input` and writing what they receive.
pub fn start_call(dir: &Path, input: &Path, codec: CodecKind, impairment: Impairment) -> Call {
    let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proto_codec = match codec {
        CodecKind::Opus => Codec::Opus,
        CodecKind::Pcm => Codec::Pcm16,
    };
    let (ka, kb) = handshake(proto_codec, &sa, &sb, 42);
    assert_eq!(CodecKind::from(ka.codec), codec);
    // Generous start margin: paced I/O that starts after its epoch would catch up in a burst.
    let epoch = Instant::now() + Duration::from_millis(1_000);
    let peer = |k: &SessionKeys| k.peer_candidates.iter().map(|c| c.0).collect::<Vec<SocketAddr>>();
    let (a_out, b_out) = (dir.join("a_out.wav"), dir.join("b_out.wav"));
    let mk = |keys: SessionKeys, sock: UdpSocket, out: &Path, seed: u64| {
        let peers = keys.peer_candidates.clone();
        let mut cfg = MediaConfig::new(keys.media, sock, peers);
        cfg.codec = codec;
        cfg.frame_ms = keys.frame_ms;
        cfg.input = AudioIn::Wav(input.to_path_buf());
        cfg.output = AudioOut::Wav { path: out.to_path_buf(), rate: None };
        cfg.impairment = Impairment { seed, ..impairment };
        cfg.epoch = Some(epoch);
        cfg
    };
    let pa = peer(&ka);
    let pb = peer(&kb);
    assert_eq!(pa, vec![sb.local_addr().unwrap()]);
    assert_eq!(pb, vec![sa.local_addr().unwrap()]);
    let mut a = MediaEngine::start(mk(ka, sa, &a_out, 1)).unwrap();
    let mut b = MediaEngine::start(mk(kb, sb, &b_out, 2)).unwrap();
    let a_events = a.take_events().unwrap();
    let b_events = b.take_events().unwrap();
    Call { a, b, a_events, b_events, a_out, b_out }
}

/// Waits (with a deadline) for an event matching `pred`, returning it.
pub fn wait_for(rx: &Receiver<MediaEvent>, deadline: Duration, pred: impl Fn(&MediaEvent) -> bool) -> MediaEvent {
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if pred(&e) => return e,
            Ok(_) => {}
            Err(e) => panic!("event not seen within {deadline:?}: {e}"),
        }
    }
}

pub fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("qv-{name}-")).tempdir().unwrap()
}
