//! Signal processing on the engine threads, pure and tested on virtual clocks: the adaptive jitter buffer,
//! integer-ratio resampling for WAV files, and playout clock-drift compensation.

pub mod drift;
pub mod jitter;
pub mod resample;
