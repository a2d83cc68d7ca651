//! Media-engine harness: runs a paced loopback call between two engines in this process for N seconds
//! (real UDP on 127.0.0.1, keys from a real handshake, WAV speech with chirps in, WAV out) and prints
//! mouth-to-ear latency from the chirps, wire kbit/s per direction, CPU % per engine, peak RSS and, when
//! the PyPI `pesq` package is installed, PESQ-WB of the received speech (`scripts/pesq_score.py`).
//!
//! `cargo run --release --bin qvoice-media-bench -- --codec opus --loss 10 --seconds 20`

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use qvoice::media::{AudioIn, AudioOut, CodecKind, Impairment, MediaConfig, MediaEngine, MediaEvent, MetricsSnapshot};
use qvoice_proto::{
    Answer, Callee, CalleeParams, Caller, CallerParams, Candidate, Codec, IdentitySecret, Offer, PrekeySecret, Reveal,
    SessionKeys, Username,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const RATE: u32 = 16_000;

#[derive(Debug, Parser)]
#[command(about = "Paced loopback call between two qvoice media engines, with latency/bitrate/CPU/PESQ figures")]
struct Args {
    /// Codec: opus or pcm.
    #[arg(long, default_value = "opus")]
    codec: String,
    /// Frame duration in ms.
    #[arg(long, default_value_t = 20)]
    frame_ms: u8,
    /// Simulated loss in percent (both directions).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Mean loss burst length in packets (1 = random loss).
    #[arg(long, default_value_t = 1.0)]
    burst: f64,
    /// Simulated jitter in ms (uniform extra delay per datagram).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Phase of each receiver's playout clock behind the shared capture epoch, in ms (0 = worst case:
    /// every frame waits a full period). Mouth-to-ear figures include it.
    #[arg(long, default_value_t = 0.0)]
    phase_ms: f64,
    /// Call length in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Where the input/output WAV files are written (default: a temporary directory).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let codec = match args.codec.as_str() {
        "opus" => CodecKind::Opus,
        "pcm" => CodecKind::Pcm,
        other => bail!("unknown codec {other:?}: use opus or pcm"),
    };
    let tmp;
    let dir = match &args.out_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = std::env::temp_dir().join(format!("qvoice-media-bench-{}", std::process::id()));
            std::fs::create_dir_all(&tmp).context("creating a temporary directory")?;
            tmp
        }
    };
    let (input, chirps) = build_input(&dir, args.seconds).context("building the input WAV")?;
    let imp = Impairment {
        loss_pct: args.loss,
        burst_len: args.burst,
        jitter: Duration::from_millis(args.jitter_ms),
        ..Impairment::default()
    };

    let sa = UdpSocket::bind("127.0.0.1:0").context("binding socket A")?;
    let sb = UdpSocket::bind("127.0.0.1:0").context("binding socket B")?;
    let proto_codec = if codec == CodecKind::Opus { Codec::Opus } else { Codec::Pcm16 };
    let (ka, kb) = handshake(proto_codec, args.frame_ms, &sa, &sb).context("handshake")?;
    let epoch = Instant::now() + Duration::from_millis(300);
    let (a_out, b_out) = (dir.join("a_received.wav"), dir.join("b_received.wav"));
    let mk = |label: &str, keys: SessionKeys, sock: UdpSocket, out: &Path, seed: u64| {
        let peers = keys.peer_candidates.clone();
        let mut cfg = MediaConfig::new(keys.media, sock, peers);
        cfg.codec = codec;
        cfg.frame_ms = keys.frame_ms;
        cfg.input = AudioIn::Wav(input.clone());
        cfg.output = AudioOut::Wav { path: out.to_path_buf(), rate: Some(RATE) };
        cfg.impairment = Impairment { seed, ..imp };
        cfg.epoch = Some(epoch);
        cfg.output_phase = Duration::from_secs_f64(args.phase_ms / 1000.0);
        cfg.label = label.into();
        cfg
    };
    let started = Instant::now();
    let cpu0 = thread_cpu_ticks()?;
    let mut a = MediaEngine::start(mk("A", ka, sa, &a_out, 11)).context("starting engine A")?;
    let b = MediaEngine::start(mk("B", kb, sb, &b_out, 22)).context("starting engine B")?;
    let events = a.take_events().context("engine A events")?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 10);
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(MediaEvent::InputEnded) => break,
            Ok(MediaEvent::Failed(e)) => bail!("engine A failed: {e}"),
            Ok(_) => {}
            Err(_) => bail!("the call did not finish in time"),
        }
    }
    // Sample per-thread CPU before stopping: finished threads vanish from /proc.
    let cpu1 = thread_cpu_ticks()?;
    let wall = started.elapsed().as_secs_f64();
    let ma = a.stop().context("stopping engine A")?;
    let mb = b.stop().context("stopping engine B")?;
    let tck = clk_tck();
    let cpu = |label: &str| {
        let used: u64 = cpu1
            .iter()
            .filter(|(name, _, _)| name.starts_with(&format!("{label}-")))
            .map(|(_, tid, t)| t - cpu0.iter().find(|(_, t0, _)| t0 == tid).map_or(0, |x| x.2))
            .sum();
        used as f64 / tck / wall * 100.0
    };
    let (cpu_a, cpu_b) = (cpu("A"), cpu("B"));
    let rss_kb = peak_rss_kb();

    let (inp, _) = read_wav(&input)?;
    let m2e = |out: &Path| -> Result<Vec<f64>> {
        let (o, _) = read_wav(out)?;
        Ok(chirps
            .iter()
            .filter_map(|&p| {
                let (d, score) = chirp_delay(&o, p, RATE as usize / 2);
                (score > 0.6).then_some(d as f64 * 1000.0 / f64::from(RATE) + args.phase_ms)
            })
            .collect())
    };
    let (m2e_ab, m2e_ba) = (m2e(&b_out)?, m2e(&a_out)?);
    let pesq_ab = pesq(&input, &b_out);
    let pesq_ba = pesq(&input, &a_out);
    let _ = inp;

    let summary = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "codec": codec.name(), "frame_ms": args.frame_ms, "loss_pct": args.loss, "jitter_ms": args.jitter_ms,
        "phase_ms": args.phase_ms,
        "seconds": wall,
        "mouth_to_ear_ms": { "a_to_b": stats(&m2e_ab), "b_to_a": stats(&m2e_ba) },
        "wire_kbps": { "a_to_b": ma.send_wire_kbps, "b_to_a": mb.send_wire_kbps },
        "payload_kbps": { "a_to_b": ma.send_payload_kbps, "b_to_a": mb.send_payload_kbps },
        "cpu_pct_of_one_core": { "a": cpu_a, "b": cpu_b },
        "peak_rss_mb_process": rss_kb as f64 / 1024.0,
        "pesq_wb": { "a_to_b": pesq_ab, "b_to_a": pesq_ba },
        "metrics_b": mb, "metrics_a": ma,
    });
    if args.json {
        println!("{summary}");
    } else {
        report(&summary, &mb, &ma);
        println!("files: {}", dir.display());
    }
    Ok(())
}

fn report(s: &serde_json::Value, mb: &MetricsSnapshot, ma: &MetricsSnapshot) {
    println!(
        "codec {} {} ms, loss {}%, jitter {} ms, {:.1} s",
        s["codec"],
        s["frame_ms"],
        s["loss_pct"],
        s["jitter_ms"],
        s["seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "mouth-to-ear ms (median/min/max over chirps): A→B {}  B→A {}",
        s["mouth_to_ear_ms"]["a_to_b"], s["mouth_to_ear_ms"]["b_to_a"]
    );
    println!(
        "wire kbit/s: A→B {:.1}  B→A {:.1}   (payload {:.1} / {:.1})",
        ma.send_wire_kbps, mb.send_wire_kbps, ma.send_payload_kbps, mb.send_payload_kbps
    );
    println!(
        "CPU % of one core: A {:.2}  B {:.2}",
        s["cpu_pct_of_one_core"]["a"].as_f64().unwrap_or(0.0),
        s["cpu_pct_of_one_core"]["b"].as_f64().unwrap_or(0.0)
    );
    println!("peak RSS (whole process, both engines): {:.1} MB", s["peak_rss_mb_process"].as_f64().unwrap_or(0.0));
    println!("PESQ-WB: A→B {}  B→A {}", s["pesq_wb"]["a_to_b"], s["pesq_wb"]["b_to_a"]);
    println!(
        "B received: loss {:.1}%  late {:.1}%  concealed {:.1}%  FEC {}  jitter {:.1} ms  JB wait {:.1} ms  MOS {:.2}",
        mb.loss_pct, mb.late_pct, mb.concealed_pct, mb.fec_recovered, mb.jitter_ms, mb.jb_wait_ms, mb.mos
    );
}

fn stats(v: &[f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    serde_json::json!({ "median": s[s.len() / 2], "min": s[0], "max": s[s.len() - 1], "n": s.len() })
}

fn handshake(codec: Codec, frame_ms: u8, a: &UdpSocket, b: &UdpSocket) -> Result<(SessionKeys, SessionKeys)> {
    let mut rng = StdRng::seed_from_u64(7);
    let (ida, idb) = (IdentitySecret::generate(&mut rng), IdentitySecret::generate(&mut rng));
    let prekeys = vec![PrekeySecret::generate(&mut rng, 1)];
    let now = 1_790_000_000_000;
    let (caller, offer) = Caller::start(
        &mut rng,
        now,
        &ida,
        CallerParams {
            caller: Username::parse("alice")?,
            callee: Username::parse("bob")?,
            codecs: vec![codec.into()],
            frame_ms,
            candidates: vec![Candidate::host(a.local_addr()?)],
            obfuscation: false,
        },
        &idb.public(),
        &prekeys[0].sign(&idb, now + qvoice_proto::PREKEY_LIFETIME_MS),
    )?;
    let offer = Offer::parse(offer.to_bytes())?;
    let params = CalleeParams {
        callee: Username::parse("bob")?,
        codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
        candidates: vec![Candidate::host(b.local_addr()?)],
        obfuscation: false,
    };
    let (callee, answer) = Callee::on_offer(&mut rng, now + 40, &idb, &ida.public(), &offer, params)?;
    let (reveal, ck) = caller.on_answer(&mut rng, &Answer::parse(answer.to_bytes())?)?;
    let sk = callee.on_reveal(&Reveal::parse(reveal.to_bytes())?, &prekeys)?;
    Ok((ck, sk))
}

fn read_wav(path: &Path) -> Result<(Vec<f64>, u32)> {
    let mut r = hound::WavReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let rate = r.spec().sample_rate;
    let s = r.samples::<i16>().map(|s| s.map(f64::from)).collect::<Result<Vec<_>, _>>()?;
    Ok((s, rate))
}

fn chirp() -> Vec<f64> {
    let n = RATE as usize * 60 / 1000;
    let (f0, f1) = (400.0, 3_400.0);
    let dur = n as f64 / f64::from(RATE);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let phase = 2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur));
            phase.sin() * (std::f64::consts::PI * i as f64 / n as f64).sin() * 16_000.0
        })
        .collect()
}

/// Chirp, 240 ms gap, 2.5 s of speech, 200 ms gap — repeated for `secs`; returns the file and chirp
/// positions.
fn build_input(dir: &Path, secs: u64) -> Result<(PathBuf, Vec<usize>)> {
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/speech16k.wav");
    let (speech, rate) = read_wav(&asset)?;
    if rate != RATE {
        bail!("{} must be 16 kHz", asset.display());
    }
    let total = RATE as usize * secs as usize;
    let seg = RATE as usize * 5 / 2;
    let c = chirp();
    let mut s = vec![0.0; RATE as usize * 3 / 10];
    let mut chirps = Vec::new();
    let mut at = 0usize;
    while s.len() + c.len() + seg + RATE as usize <= total {
        chirps.push(s.len());
        s.extend(&c);
        s.extend(std::iter::repeat_n(0.0, RATE as usize * 240 / 1000));
        for _ in 0..seg {
            s.push(speech[at % speech.len()]);
            at += 1;
        }
        s.extend(std::iter::repeat_n(0.0, RATE as usize / 5));
    }
    s.resize(total, 0.0);
    let path = dir.join("input.wav");
    let spec =
        hound::WavSpec { channels: 1, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&path, spec)?;
    for &x in &s {
        w.write_sample(x.clamp(-32_768.0, 32_767.0) as i16)?;
    }
    w.finalize()?;
    Ok((path, chirps))
}

fn ncc(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

fn chirp_delay(out: &[f64], pos: usize, max: usize) -> (usize, f64) {
    let c = chirp();
    (0..max)
        .filter(|&d| pos + d + c.len() <= out.len())
        .map(|d| (d, ncc(&c, &out[pos + d..pos + d + c.len()])))
        .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best })
}

fn pesq(reference: &Path, degraded: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pesq_score.py");
    let out = std::process::Command::new("python3").arg(&script).arg(reference).arg(degraded).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .map_or(serde_json::Value::Null, serde_json::Value::from),
        _ => serde_json::Value::String("n/a (pip install pesq numpy)".into()),
    }
}

/// (thread name, tid, utime+stime ticks) for every thread of this process (Linux /proc).
fn thread_cpu_ticks() -> Result<Vec<(String, u64, u64)>> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else { return Ok(v) };
    for e in rd.flatten() {
        let tid: u64 = e.file_name().to_string_lossy().parse().unwrap_or(0);
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default().trim().to_string();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |x| x.1);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        v.push((name, tid, ticks));
    }
    Ok(v)
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}
