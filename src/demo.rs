//! `qvoice demo`: a registry on 127.0.0.1 with a temporary database, an `echo` contact that answers
//! every call and plays back what it hears after a short delay, and a `you` identity for the TUI, all in
//! one process. Everything runs for real: signed registration, the hybrid handshake, Opus, encrypted UDP
//! on loopback. Without a sound card the microphone is a bundled speech clip, looped, and what comes back
//! from the echo is recorded to a WAV file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use qvoice_proto::Username;
use tokio::sync::mpsc;

use crate::media::{AudioIn, AudioOut, CpalSink, CpalSource, EchoLine};
use crate::session::store::{ContactBook, Keystore};
use crate::session::{SessionCommand, SessionEvent, SessionOptions};

/// The bundled speech clip (espeak-ng, 16 kHz mono), the microphone when there is no sound card.
const SPEECH_WAV: &[u8] = include_bytes!("../tests/assets/speech16k.wav");

/// How long the echo contact waits before playing back what it heard.
pub const ECHO_DELAY: Duration = Duration::from_millis(700);

/// A running demo world.
#[derive(Debug)]
pub struct Demo {
    pub registry: qvoice_registry::RunningRegistry,
    pub dir: PathBuf,
    /// What the demo says about audio, for the screen.
    pub audio_notice: String,
    echo_commands: mpsc::Sender<SessionCommand>,
    echo_task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether the default input and output devices can really be opened (cpal lists `alsa:default` on a
/// machine without a sound card and only fails when the stream is built).
pub fn sound_card_works() -> bool {
    CpalSource::probe(None, 960).is_ok() && CpalSink::probe(None, 960).is_ok()
}

impl Demo {
    /// Starts the registry and the echo contact in `dir`; returns them with the session options of the
    /// `you` user (for the TUI's session driver).
    ///
    /// Fails when the registry cannot start or the echo contact cannot register.
    pub async fn start(dir: &Path, use_devices: bool) -> anyhow::Result<(Self, SessionOptions)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cfg = qvoice_registry::Config::new(dir.join("registry.sqlite3"));
        cfg.bind = "127.0.0.1:0".parse().context("loopback address")?;
        let registry = qvoice_registry::spawn(cfg).await.context("starting the demo registry")?;
        let url = registry.url();

        let echo_keys = Keystore::create(&dir.join("echo"), Username::parse("echo")?, now_ms(), true)?;
        let mut echo = SessionOptions::new(url.clone(), echo_keys, ContactBook::load(&dir.join("echo"))?);
        echo.display_name = Some("Echo / sound test".into());
        echo.auto_answer = true;
        let line = EchoLine::new(ECHO_DELAY);
        echo.input = AudioIn::Echo(line.clone());
        echo.output = AudioOut::Echo(line);
        let (echo_commands, echo_rx) = mpsc::channel(8);
        let (echo_ev_tx, mut echo_events) = mpsc::channel(256);
        let echo_task = tokio::spawn(crate::session::run(echo, echo_rx, echo_ev_tx));
        // The echo contact must be online before anyone dials it.
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = echo_events.recv().await {
                if matches!(ev, SessionEvent::Connection { connected: true, .. }) {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(ready, Ok(true)) {
            anyhow::bail!("the echo contact did not come online");
        }
        tokio::spawn(async move {
            while let Some(ev) = echo_events.recv().await {
                tracing::debug!(?ev, "echo contact");
            }
        });

        let you_dir = dir.join("you");
        let you_keys = Keystore::create(&you_dir, Username::parse("you")?, now_ms(), true)?;
        let mut you = SessionOptions::new(url, you_keys, ContactBook::load(&you_dir)?);
        you.record_dir = Some(dir.join("recordings"));
        let audio_notice = if use_devices {
            you.input = AudioIn::Device(None);
            you.output = AudioOut::Device(None);
            "using the default microphone and speaker".to_owned()
        } else {
            let speech = dir.join("speech.wav");
            std::fs::write(&speech, SPEECH_WAV).context("writing the demo speech clip")?;
            let heard = dir.join("heard-from-echo.wav");
            // The clip loops, so the echo keeps talking for as long as the call lasts.
            you.input = AudioIn::WavLoop(speech);
            you.output = AudioOut::Wav { path: heard.clone(), rate: None };
            format!(
                "no sound card: the microphone is a bundled speech clip, played in a loop; what comes back is \
                 recorded to {}",
                heard.display()
            )
        };
        Ok((Self { registry, dir: dir.to_path_buf(), audio_notice, echo_commands, echo_task }, you))
    }

    /// Stops the echo contact and the registry.
    ///
    /// Fails when either did not stop cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.echo_commands.send(SessionCommand::Shutdown).await;
        self.echo_task.await.context("echo task panicked")??;
        self.registry.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo world works headless: `you` calls `echo`, hears itself back through the whole path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calling_echo_plays_our_audio_back() {
        let dir = tempfile::tempdir().unwrap();
        let (demo, mut you) = Demo::start(dir.path(), false).await.unwrap();
        you.metrics_interval = Duration::from_millis(200);
        let (tx, rx) = mpsc::channel(8);
        let (ev_tx, mut ev) = mpsc::channel(256);
        let task = tokio::spawn(crate::session::run(you, rx, ev_tx));
        tx.send(SessionCommand::Dial("echo".into())).await.unwrap();
        let mut received = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while received < 100 {
            match tokio::time::timeout_at(deadline, ev.recv()).await.unwrap().unwrap() {
                SessionEvent::Metrics { metrics, .. } => received = metrics.frames_received,
                SessionEvent::Ended { reason, .. } => panic!("call ended: {reason:?}"),
                _ => {}
            }
        }
        tx.send(SessionCommand::Hangup).await.unwrap();
        loop {
            if let SessionEvent::Ended { .. } = ev.recv().await.unwrap() {
                break;
            }
        }
        tx.send(SessionCommand::Shutdown).await.unwrap();
        task.await.unwrap().unwrap();
        demo.stop().await.unwrap();
        // The echo sent our speech back: the recording of what we heard is not silent.
        let heard = dir.path().join("heard-from-echo.wav");
        let mut r = hound::WavReader::open(&heard).unwrap();
        let peak = r.samples::<i16>().map(|s| s.unwrap().unsigned_abs()).max().unwrap();
        assert!(peak > 1000, "echo came back silent (peak {peak})");
    }

    /// The clip (6.7 s) loops: well after it first ends plus the echo delay, the echo still talks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_echo_keeps_talking_after_the_clip_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (demo, mut you) = Demo::start(dir.path(), false).await.unwrap();
        you.metrics_interval = Duration::from_millis(200);
        let (tx, rx) = mpsc::channel(8);
        let (ev_tx, mut ev) = mpsc::channel(256);
        let task = tokio::spawn(crate::session::run(you, rx, ev_tx));
        tx.send(SessionCommand::Dial("echo".into())).await.unwrap();
        // 20 ms frames: 500 received is 10 s of call.
        let mut received = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while received < 500 {
            match tokio::time::timeout_at(deadline, ev.recv()).await.unwrap().unwrap() {
                SessionEvent::Metrics { metrics, .. } => received = metrics.frames_received,
                SessionEvent::Ended { reason, .. } => panic!("call ended: {reason:?}"),
                _ => {}
            }
        }
        tx.send(SessionCommand::Hangup).await.unwrap();
        while !matches!(ev.recv().await.unwrap(), SessionEvent::Ended { .. }) {}
        tx.send(SessionCommand::Shutdown).await.unwrap();
        task.await.unwrap().unwrap();
        demo.stop().await.unwrap();
        let mut r = hound::WavReader::open(dir.path().join("heard-from-echo.wav")).unwrap();
        let rate = r.spec().sample_rate as usize;
        let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert!(samples.len() > 9 * rate, "only {} s heard", samples.len() / rate);
        // From 8.5 s on the clip has started over (6.7 s clip + 0.7 s echo delay + transport).
        let peak = samples[rate * 17 / 2..].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 1000, "the echo fell silent after the clip ended (peak {peak})");
    }
}
