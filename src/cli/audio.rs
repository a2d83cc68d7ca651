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

/// What to do instead of a sound card, for `call` and `listen` (which have `--input` / `--output`).
pub fn no_sound_card_advice(config_file: &Path) -> String {
    format!(
        "Without a sound card, send a WAV file (or silence) and write what you hear to a file (or nowhere): \
         `--input FILE.wav --output FILE.wav` (or `--input silence --output null`); to make it the default, set \
         `input = \"FILE.wav\"` and `output = \"null\"` under [audio] in {}.",
        config_file.display()
    )
}

/// Opens and closes the devices among `input` and `output` (files, silence and null need no check).
///
/// Fails with a message naming the device that cannot be opened and what to use instead.
pub fn check_devices(input: &AudioIn, output: &AudioOut, config_file: &Path) -> Result<(), String> {
    if let AudioIn::Device(name) = input
        && let Err(e) = CpalSource::open(name.as_deref(), PROBE_FRAME)
    {
        let which = name.as_deref().unwrap_or("default");
        return Err(format!(
            "the microphone ({which}) cannot be opened: {}.\n{}",
            detail(&e),
            no_sound_card_advice(config_file)
        ));
    }
    if let AudioOut::Device(name) = output
        && let Err(e) = CpalSink::open(name.as_deref(), PROBE_FRAME)
    {
        let which = name.as_deref().unwrap_or("default");
        return Err(format!(
            "the speaker ({which}) cannot be opened: {}.\n{}",
            detail(&e),
            no_sound_card_advice(config_file)
        ));
    }
    Ok(())
}
