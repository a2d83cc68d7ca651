//! Audio in and out: the [`audio::AudioSource`] / [`audio::AudioSink`] traits with their WAV, null and echo
//! backends, and sound devices through cpal ([`device`]).

pub mod audio;
pub mod device;
pub mod echo;
