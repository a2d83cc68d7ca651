//! Audio in and out: the [`audio::AudioSource`] / [`audio::AudioSink`] traits with their WAV, null and echo
//! backends, and sound devices through cpal ([`device`], native JACK clients in [`jack_client`]).

pub mod audio;
pub mod device;
pub mod echo;
pub mod jack_client;
