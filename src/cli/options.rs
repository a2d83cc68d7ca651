//! The one merge of the config file and command-line overrides into the session driver's options.

use std::time::Duration;

use qvoice::config::{Config, Paths};
use qvoice::media::{AudioIn, AudioOut, Impairment};
use qvoice::session::SessionOptions;
use qvoice::session::store::{ContactBook, Keystore};
use qvoice_proto::Codec;

use super::UsageError;
use super::args::IoArgs;

/// Builds session options from the config file and command-line overrides.
pub fn session_options(paths: &Paths, cfg: &Config, io: &IoArgs) -> anyhow::Result<SessionOptions> {
    let ks = Keystore::load(&paths.data_dir)?;
    let contacts = ContactBook::load(&paths.data_dir)?;
    let mut opts = SessionOptions::new(cfg.registry.url.clone(), ks, contacts);
    opts.display_name = cfg.registry.display_name.clone();
    opts.input = AudioIn::from_spec(io.input.as_deref().unwrap_or(&cfg.audio.input));
    opts.output = AudioOut::from_spec(io.output.as_deref().unwrap_or(&cfg.audio.output));
    opts.record_dir = io.record_dir.clone().or_else(|| cfg.recording.dir.clone());
    opts.record_on = io.record_dir.is_some() || cfg.recording.enabled;
    let codec_name = io.codec.as_deref().unwrap_or(&cfg.audio.codec);
    let first = Codec::from_name(codec_name)
        .ok_or_else(|| UsageError(format!("unknown codec {codec_name:?}; use opus or pcm")))?;
    let durations = qvoice::config::frame_durations(first);
    if !durations.contains(&cfg.audio.frame_ms) {
        return Err(UsageError(format!(
            "--codec {codec_name} cannot run [audio] frame_ms = {} from config.toml; use another codec or set \
             frame_ms to {}",
            cfg.audio.frame_ms,
            qvoice::config::list(&durations)
        ))
        .into());
    }
    opts.codecs = vec![first];
    opts.codecs.extend([Codec::Opus, Codec::Pcm16].into_iter().filter(|c| *c != first));
    opts.frame_ms = cfg.audio.frame_ms;
    opts.obfuscation = cfg.media.obfuscation;
    opts.media_port = cfg.media.port;
    opts.peer_timeout = Duration::from_secs(io.peer_timeout.unwrap_or(cfg.media.peer_timeout_s).max(1));
    opts.poll_fallback = cfg.registry.poll_fallback;
    if cfg.registry.prekey_rotation_days > 0 {
        opts.prekey_max_age = Some(Duration::from_secs(u64::from(cfg.registry.prekey_rotation_days) * 86_400));
    }
    opts.impairment = Impairment {
        loss_pct: io.sim_loss,
        burst_len: io.sim_burst.max(1.0),
        delay: io.sim_delay.unwrap_or_default(),
        jitter: io.sim_jitter.unwrap_or_default(),
        seed: io.sim_seed,
        ..Impairment::default()
    };
    Ok(opts)
}
