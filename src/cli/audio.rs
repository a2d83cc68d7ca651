//! Checks, before a call is dialled or answered, that the configured microphone and speaker can be opened,
//! and the advice for a machine without a sound card, in flags and config keys that exist.

use std::path::Path;

use qvoice::media::{AudioError, AudioIn, AudioOut, CpalSink, CpalSource};

/// Samples in one 20 ms frame at 48 kHz: the block size the probe opens devices with.
const PROBE_FRAME: usize = 960;

/// What went wrong with a device, without the advice the media engine appends.
pub fn detail(e: &AudioError) -> String {
    match e {
        AudioError::NoDevice(d) => d.trim_end_matches('.').to_owned(),
        other => other.to_string().trim_end_matches('.').to_owned(),
    }
}

/// What to do instead of a sound card (`qvoice`, `call` and `listen` all have `--input` / `--output`).
pub fn no_sound_card_advice(config_file: &Path) -> String {
    format!(
        "Without a sound card, send a WAV file (or silence) and write what you hear to a file (or nowhere): \
         `--input FILE.wav --output FILE.wav` (or `--input silence --output null`); to make it the default, set \
         `input = \"FILE.wav\"` and `output = \"null\"` under [audio] in {}.",
        config_file.display()
    )
}

/// A device that cannot be opened.
#[derive(Debug)]
pub struct DeviceProblem {
    /// `microphone` or `speaker`.
    pub what: &'static str,
    /// The device's name (`default` for the default one).
    pub name: String,
    /// What the audio backend said.
    pub detail: String,
}

impl DeviceProblem {
    /// The full text for a terminal: the problem, then what to use instead.
    pub fn message(&self, config_file: &Path) -> String {
        format!(
            "the {} ({}) cannot be opened: {}.\n{}",
            self.what,
            self.name,
            self.detail,
            no_sound_card_advice(config_file)
        )
    }

    /// One line for the TUI's log pane, the advice first so a narrow pane shows it.
    pub fn line(&self) -> String {
        format!(
            "no usable {} ({}): start qvoice with --input FILE.wav --output null, or set [audio] input/output \
             in config.toml ({})",
            self.what, self.name, self.detail
        )
    }
}

/// Opens and closes the devices among `input` and `output` (files, silence and null need no check).
///
/// Fails with the first device that cannot be opened.
pub fn check_devices(input: &AudioIn, output: &AudioOut) -> Result<(), DeviceProblem> {
    let problem = |what, name: &Option<String>, e: &AudioError| DeviceProblem {
        what,
        name: name.clone().unwrap_or_else(|| "default".into()),
        detail: detail(e),
    };
    if let AudioIn::Device(name) = input
        && let Err(e) = CpalSource::probe(name.as_deref(), PROBE_FRAME)
    {
        return Err(problem("microphone", name, &e));
    }
    if let AudioOut::Device(name) = output
        && let Err(e) = CpalSink::probe(name.as_deref(), PROBE_FRAME)
    {
        return Err(problem("speaker", name, &e));
    }
    Ok(())
}
