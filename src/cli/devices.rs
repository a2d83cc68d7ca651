//! `qvoice devices`: the sound devices cpal sees, and whether the default ones really open.

use std::path::Path;

use qvoice::media::{AudioIn, AudioOut};

use super::audio::{check_devices, detail, no_sound_card_advice};

/// Lists devices; exit 5 when none can be used.
pub fn devices(config_file: &Path) -> anyhow::Result<u8> {
    match qvoice::media::list_devices_probed(true) {
        Ok(list) if !list.is_empty() => {
            println!("{:<7} {:<32} {:<26} DESCRIPTION", "", "NAME (--input/--output, [audio])", "NATIVE");
            for d in list {
                let caps = match (d.input, d.output) {
                    (true, true) => "in/out",
                    (true, false) => "in",
                    (false, true) => "out",
                    _ => "-",
                };
                let native = d.native.as_deref().unwrap_or("(cannot open now)");
                println!("{:<7} {:<32} {:<26} {}", caps, d.name, native, d.description);
            }
            // cpal lists `default` on a machine without a sound card; only opening it tells.
            match check_devices(&AudioIn::Device(None), &AudioOut::Device(None)) {
                Ok(()) => {
                    println!("the default microphone and speaker open; pick another with [audio] input / output");
                    Ok(0)
                }
                Err(problem) => {
                    println!("{}", problem.message(config_file));
                    Ok(5)
                }
            }
        }
        Ok(_) => {
            println!("no audio devices found.\n{}", no_sound_card_advice(config_file));
            Ok(5)
        }
        Err(e) => {
            println!("cannot list audio devices ({}).\n{}", detail(&e), no_sound_card_advice(config_file));
            Ok(5)
        }
    }
}
