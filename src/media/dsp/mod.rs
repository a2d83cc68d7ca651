//! Signal processing on the engine threads, pure and tested on virtual clocks: the adaptive jitter buffer,
//! integer-ratio resampling for WAV files, playout clock-drift compensation, and even send times for capture
//! devices that deliver uneven chunks.

pub mod drift;
pub mod jitter;
pub mod pacer;
pub mod resample;
