//! Adaptive jitter buffer: pure code driven by an injected clock (`now` is always an argument).
//!
//! Frames are keyed by their 48 kHz media timestamp, so reordering is undone and duplicates are spotted
//! regardless of transport counters. The playout thread calls [`JitterBuffer::pop`] once per device frame;
//! each call yields the frame to decode, or a concealment instruction (Opus FEC from the following packet
//! when it is already here, PLC otherwise).
//!
//! Adaptation follows NetEq's idea of measuring what matters: for every frame played we record how long it
//! waited between arrival and playout. If over a whole window the *shortest* wait still exceeded one frame
//! plus a jitter-dependent safety margin, one frame of delay is unnecessary and the next quiet frame is
//! dropped (shrinking during silence). If the next frame is missing and nothing newer has arrived
//! (underrun), or a frame arrives after its slot was played (late), playout is stretched by one concealed
//! frame so later packets get one frame more time. While frames are being lost (smoothed rate above 1 %)
//! the shrink rule keeps one more frame, so the packet after a gap is usually buffered and the gap can be
//! rebuilt with Opus FEC instead of oscillating between stretching and shrinking.
//! Playback starts when every buffered frame would wait at least `start_delay` (4 ms, or twice the arrival
//! jitter seen so far) and the
//! queue is capped at `max_delay`, so it never grows without bound. Storage is a fixed ring allocated once.

use std::time::{Duration, Instant};

use crate::media::codec::MAX_ENCODED;

/// Ring capacity in frames (1.28 s at 20 ms); a frame further ahead than this forces a resync.
pub const CAPACITY: usize = 64;
/// An underrun this long after the previous one is taken as a one-off: concealed, not stretched for.
const ONE_OFF_AFTER: Duration = Duration::from_secs(10);
/// Consecutive underruns within this span of the first belong to the same one-off (about three frames).
const ONE_OFF_SPAN: Duration = Duration::from_millis(50);
/// How long after stretching for a late frame the buffer does not shrink.
const CALM_AFTER_STRETCH: Duration = Duration::from_secs(20);
/// Smoothed loss rate above which one extra frame is kept for FEC.
const LOSSY: f64 = 0.01;

/// Tuning of a jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Duration of one frame.
    pub frame: Duration,
    /// Samples per frame on the 48 kHz media clock.
    pub frame_samples: u32,
    /// Wait every buffered frame gets when playback starts (see `ready_to_start`); later frames arriving
    /// on the same schedule wait between this and this plus one frame.
    pub start_delay: Duration,
    /// Upper bound on buffered audio; older frames are discarded beyond it.
    pub max_delay: Duration,
    /// Smallest safety margin kept on top of one frame before shrinking.
    pub min_margin: Duration,
    /// Frames played per adaptation window.
    pub window: u32,
}

impl JitterConfig {
    /// Defaults for `frame_ms` frames: start with 4 ms of wait, or twice the arrival jitter when more (no less
    /// than the shrink margin, so a steady stream never starts with a frame to shed), cap at 300 ms, 2 s
    /// adaptation window.
    pub fn for_frame_ms(frame_ms: u8) -> Self {
        let frame = Duration::from_millis(u64::from(frame_ms.max(1)));
        let frames_2s = (2_000 / u32::from(frame_ms.max(1))).max(10);
        Self {
            frame,
            frame_samples: u32::from(frame_ms) * 48,
            start_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(300),
            min_margin: Duration::from_millis(4),
            window: frames_2s,
        }
    }
}

/// What [`JitterBuffer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Accepted,
    /// The same timestamp is already buffered.
    Duplicate,
    /// Its slot was already played or concealed.
    Late,
    /// Larger than any codec frame.
    TooLarge,
}

/// What to play for the current device frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<'a> {
    /// Nothing to play yet (before the first frame or while rebuffering): output silence.
    Idle,
    /// Decode this frame.
    Frame(&'a [u8]),
    /// Conceal a missing frame; `fec` is the following packet when it is available for Opus FEC.
    Conceal {
        /// The packet after the gap, when buffered.
        fec: Option<&'a [u8]>,
    },
}

/// Counters kept by the buffer (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames accepted.
    pub accepted: u64,
    /// Frames played from a received packet.
    pub played: u64,
    /// Frames concealed because they were lost or not yet here.
    pub concealed: u64,
    /// Concealed frames that used FEC from the following packet.
    pub fec_recovered: u64,
    /// Frames that arrived after their slot.
    pub late: u64,
    /// Duplicate frames dropped.
    pub duplicates: u64,
    /// Pops that found the buffer empty while playing.
    pub underruns: u64,
    /// Frames dropped to shrink the delay.
    pub shrink_drops: u64,
    /// Frames dropped because the queue exceeded `max_delay`.
    pub overflow_drops: u64,
    /// Resynchronisations after a timestamp jump.
    pub resyncs: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    present: bool,
    index: u64,
    arrival: Instant,
    len: u16,
    data: [u8; MAX_ENCODED],
}

/// The adaptive jitter buffer. See the module docs.
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot]>,
    started: bool,
    next: u64,
    highest: Option<u64>,
    highest_arrival: Instant,
    last_ts: u32,
    last_ext: u64,
    epoch: Option<Instant>,
    prev_transit_us: Option<i64>,
    jitter_us: f64,
    window_left: u32,
    window_min_wait: Duration,
    shrink_pending: bool,
    /// No shrinking before this instant: set when playout had to stretch for a late frame.
    calm_until: Option<Instant>,
    /// When a frame was last not there in time (an underrun, or a frame that came after its slot).
    last_underrun: Option<Instant>,
    /// When the current one-off lateness began (see `ONE_OFF_SPAN`).
    one_off_since: Option<Instant>,
    /// The last frame skipped as a one-off late frame: when it arrives it is dropped without stretching.
    forgiven: Option<u64>,
    grow_pending: bool,
    empty_pops: u32,
    wait_ewma_us: f64,
    loss_ewma: f64,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("started", &self.started)
            .field("next", &self.next)
            .field("depth", &self.depth_frames())
            .field("stats", &self.stats)
            .finish()
    }
}

impl JitterBuffer {
    /// An empty buffer; allocates its ring once.
    pub fn new(cfg: JitterConfig, now: Instant) -> Self {
        let empty = Slot { present: false, index: 0, arrival: now, len: 0, data: [0; MAX_ENCODED] };
        Self {
            cfg,
            slots: vec![empty; CAPACITY].into_boxed_slice(),
            started: false,
            next: 0,
            highest: None,
            highest_arrival: now,
            last_ts: 0,
            last_ext: 0,
            epoch: None,
            prev_transit_us: None,
            jitter_us: 0.0,
            window_left: cfg.window,
            window_min_wait: Duration::MAX,
            shrink_pending: false,
            calm_until: None,
            last_underrun: None,
            one_off_since: None,
            forgiven: None,
            grow_pending: false,
            empty_pops: 0,
            wait_ewma_us: 0.0,
            loss_ewma: 0.0,
            stats: JitterStats::default(),
        }
    }

    fn max_frames(&self) -> u64 {
        (self.cfg.max_delay.as_micros() / self.cfg.frame.as_micros().max(1)).clamp(1, CAPACITY as u128 - 1) as u64
    }

    /// Notes a frame that was not there in time and says whether it is a one-off: the first in
    /// `ONE_OFF_AFTER`, or one of the frames a single hiccup delayed together (within `ONE_OFF_SPAN` of
    /// the first).
    fn lateness_is_one_off(&mut self, now: Instant) -> bool {
        let in_one_off = self.one_off_since.is_some_and(|t| now.saturating_duration_since(t) < ONE_OFF_SPAN);
        let quiet_before = self.last_underrun.is_none_or(|t| now.saturating_duration_since(t) > ONE_OFF_AFTER);
        if quiet_before {
            self.one_off_since = Some(now);
        }
        self.last_underrun = Some(now);
        quiet_before || in_one_off
    }

    /// Before playout starts, drops the oldest frames while the newest one would wait more than a frame
    /// beyond `start_delay`: frames that came in a burst (a capture device delivering its first periods
    /// at once after a slow start) are behind the schedule the stream then keeps, and playing them would
    /// keep that excess for the whole call, or shed it later with an audible step.
    /// Only frames that arrived in order are judged: with reordering, the newest frame's arrival says
    /// little about when the next ones will come.
    fn skip_start_excess(&mut self, now: Instant, highest: u64) {
        let Some(newest) = self.slot(highest).map(|s| s.arrival) else { return };
        let mut prev: Option<Instant> = None;
        for i in self.next..=highest {
            let Some(a) = self.slot(i).map(|s| s.arrival) else { return };
            if prev.is_some_and(|p| a < p) {
                return;
            }
            prev = Some(a);
        }
        while self.next < highest {
            let behind = u32::try_from(highest - self.next).unwrap_or(u32::MAX);
            let wait = now.saturating_duration_since(newest).saturating_add(self.cfg.frame.saturating_mul(behind));
            if wait < self.start_wait() + self.cfg.frame {
                break;
            }
            self.clear(self.next);
            self.next += 1;
            self.stats.shrink_drops += 1;
        }
    }

    /// Whether starting playout now gives every buffered frame at least `start_delay` of wait. Frame `k`
    /// after `next` plays `k` frames from now, so it waits `now - arrival + k * frame`; later frames follow
    /// the latest of these schedules. Counting frames instead would be fooled by a burst (a sound server
    /// that delivers its first capture periods at once): the burst would start playout with no wait at all
    /// for the frames that follow it.
    fn ready_to_start(&self, now: Instant, highest: u64) -> bool {
        if self.slot(self.next).is_none() {
            return false;
        }
        for k in 0..=highest.saturating_sub(self.next).min(CAPACITY as u64 - 1) {
            let Some(arrival) = self.slot(self.next + k).map(|s| s.arrival) else { continue };
            if now.saturating_duration_since(arrival) + self.cfg.frame * (k as u32) < self.start_wait() {
                return false;
            }
        }
        true
    }

    /// The wait playout starts with: `start_delay`, or more when arrivals already showed jitter.
    fn start_wait(&self) -> Duration {
        self.cfg.start_delay.max(self.margin())
    }

    fn start_frames(&self) -> u64 {
        (self.cfg.start_delay.as_micros().div_ceil(self.cfg.frame.as_micros().max(1))).max(1) as u64
    }

    /// Extends a wrapping 32-bit timestamp to a frame index that only moves by the signed difference.
    fn index_of(&mut self, ts: u32) -> u64 {
        let fs = u64::from(self.cfg.frame_samples.max(1));
        if self.highest.is_none() && self.epoch.is_none() {
            self.last_ts = ts;
            // Start far from zero so early reordered frames never underflow.
            self.last_ext = 1 << 40;
        }
        let delta = i64::from(ts.wrapping_sub(self.last_ts) as i32);
        let ext = (self.last_ext as i64 + delta).max(0) as u64;
        if delta > 0 {
            self.last_ts = ts;
            self.last_ext = ext;
        }
        ext / fs
    }

    fn slot(&self, index: u64) -> Option<&Slot> {
        let s = &self.slots[(index % CAPACITY as u64) as usize];
        (s.present && s.index == index).then_some(s)
    }

    fn clear(&mut self, index: u64) {
        let s = &mut self.slots[(index % CAPACITY as u64) as usize];
        if s.index == index {
            s.present = false;
        }
    }

    fn resync(&mut self, index: u64) {
        for s in self.slots.iter_mut() {
            s.present = false;
        }
        self.stats.resyncs += 1;
        self.started = false;
        self.next = index;
        self.highest = None;
    }

    /// Stores the frame with media timestamp `ts` that arrived at `now`.
    pub fn push(&mut self, now: Instant, ts: u32, data: &[u8]) -> PushOutcome {
        if data.len() > MAX_ENCODED {
            return PushOutcome::TooLarge;
        }
        let index = self.index_of(ts);
        let epoch = *self.epoch.get_or_insert(now);
        match self.highest {
            None => {
                if !self.started || index >= self.next {
                    if !self.started {
                        self.next = index;
                    }
                } else {
                    self.stats.late += 1;
                    return PushOutcome::Late;
                }
            }
            Some(_) if index < self.next => {
                if self.started {
                    self.stats.late += 1;
                    // Skipped as a one-off already, or the first lateness in a while: no stretch.
                    let forgiven = self.forgiven.is_some_and(|f| index <= f && f - index < 3);
                    if self.next - index <= 3 && !forgiven && !self.lateness_is_one_off(now) {
                        self.grow_pending = true;
                        self.calm_until = Some(now + CALM_AFTER_STRETCH);
                    }
                    return PushOutcome::Late;
                }
                // Before playback starts an earlier frame simply moves the start back.
                if self.next - index >= CAPACITY as u64 {
                    self.resync(index);
                } else {
                    self.next = index;
                }
            }
            Some(_) if index >= self.next + CAPACITY as u64 => self.resync(index),
            Some(_) => {}
        }
        if self.slot(index).is_some() {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        let s = &mut self.slots[(index % CAPACITY as u64) as usize];
        s.present = true;
        s.index = index;
        s.arrival = now;
        s.len = data.len() as u16;
        s.data[..data.len()].copy_from_slice(data);
        if self.highest.is_none_or(|h| index >= h) {
            self.highest_arrival = now;
        }
        self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
        self.stats.accepted += 1;
        // RFC 3550 interarrival jitter on the frame clock.
        let arrival_us = now.saturating_duration_since(epoch).as_micros() as i64;
        let transit = arrival_us - (index as i64) * self.cfg.frame.as_micros() as i64;
        if let Some(prev) = self.prev_transit_us {
            let d = (transit - prev).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.prev_transit_us = Some(transit);
        PushOutcome::Accepted
    }

    /// Frames from the next one to play up to the newest received (holes included).
    pub fn depth_frames(&self) -> u64 {
        match self.highest {
            Some(h) if h >= self.next => h - self.next + 1,
            _ => 0,
        }
    }

    /// Buffered audio in milliseconds.
    pub fn depth_ms(&self) -> f64 {
        self.depth_frames() as f64 * self.cfg.frame.as_secs_f64() * 1000.0
    }

    /// Mean time a played frame waited in the buffer, in milliseconds (exponentially weighted).
    pub fn mean_wait_ms(&self) -> f64 {
        self.wait_ewma_us / 1000.0
    }

    /// RFC 3550 interarrival jitter in microseconds.
    pub fn jitter_us(&self) -> u32 {
        self.jitter_us as u32
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Whether playout has started.
    pub fn is_playing(&self) -> bool {
        self.started
    }

    fn margin(&self) -> Duration {
        // Two mean deviations cover most of the arrival spread the window did not see.
        Duration::from_micros((2.0 * self.jitter_us) as u64).max(self.cfg.min_margin)
    }

    fn note_wait(&mut self, now: Instant, wait: Duration) {
        self.window_min_wait = self.window_min_wait.min(wait);
        let w = wait.as_micros() as f64;
        self.wait_ewma_us += (w - self.wait_ewma_us) / 16.0;
        self.window_left = self.window_left.saturating_sub(1);
        if self.window_left == 0 {
            // Under loss keep one extra frame so the packet after a gap is usually here to rebuild the
            // gap with FEC; without that the buffer would oscillate (stretch on every loss, shrink later).
            let keep = if self.loss_ewma > LOSSY { self.cfg.frame * 2 } else { self.cfg.frame };
            let calm = self.calm_until.is_none_or(|t| now >= t);
            if calm && self.window_min_wait > keep + self.margin() {
                self.shrink_pending = true;
            }
            self.window_left = self.cfg.window;
            self.window_min_wait = Duration::MAX;
        }
    }

    /// The frame to play at `now`. `quiet` says the previously played frame was near-silent, which makes
    /// it a good moment to drop a frame when the buffer holds more than it needs.
    pub fn pop(&mut self, now: Instant, quiet: bool) -> Pop<'_> {
        let Some(highest) = self.highest else { return Pop::Idle };
        if !self.started {
            self.skip_start_excess(now, highest);
            if self.ready_to_start(now, highest) {
                self.started = true;
                self.empty_pops = 0;
            } else {
                return Pop::Idle;
            }
        }
        // Cap the queue: discard the oldest frames beyond max_delay.
        while self.depth_frames() > self.max_frames() {
            self.clear(self.next);
            self.next += 1;
            self.stats.overflow_drops += 1;
        }
        if self.grow_pending {
            self.grow_pending = false;
            self.stats.concealed += 1;
            return Pop::Conceal { fec: None };
        }
        if self.slot(self.next).is_some() {
            self.empty_pops = 0;
            let depth = self.depth_frames();
            let can_drop = self.shrink_pending
                && self.slot(self.next + 1).is_some()
                && (quiet || depth > 2 * self.start_frames() + 2);
            if can_drop {
                self.shrink_pending = false;
                self.clear(self.next);
                self.next += 1;
                self.stats.shrink_drops += 1;
            }
            let index = self.next;
            self.next += 1;
            let arrival = self.slots[(index % CAPACITY as u64) as usize].arrival;
            self.note_wait(now, now.saturating_duration_since(arrival));
            self.stats.played += 1;
            self.loss_ewma -= self.loss_ewma / 64.0;
            let s = &mut self.slots[(index % CAPACITY as u64) as usize];
            s.present = false;
            return Pop::Frame(&s.data[..usize::from(s.len)]);
        }
        self.stats.concealed += 1;
        if highest > self.next {
            // Lost (or still in flight behind newer frames): move on, with FEC when the next packet is here.
            self.next += 1;
            self.loss_ewma += (1.0 - self.loss_ewma) / 64.0;
            self.empty_pops = 0;
            if self.slot(self.next).is_some() {
                self.stats.fec_recovered += 1;
            }
            let fec = self.slot(self.next).map(|s| &s.data[..usize::from(s.len)]);
            return Pop::Conceal { fec };
        }
        // Nothing newer is here. If the frame is overdue by much more than the arrival jitter explains it
        // was lost rather than delayed: conceal and move on (at most two frames this way), so a loss does
        // not add delay.
        let expected = self.highest_arrival + self.cfg.frame * (self.next - highest) as u32;
        let overdue = now.saturating_duration_since(expected);
        if self.next <= highest + 2 && overdue > self.cfg.frame / 2 + self.margin() {
            self.next += 1;
            self.loss_ewma += (1.0 - self.loss_ewma) / 64.0;
            // Losses go on (not a one-off), and the packet after a lost one is not here in time to rebuild it
            // with FEC: keep one frame more (the shrink rule keeps it while losses go on).
            if !self.lateness_is_one_off(now) && self.loss_ewma > LOSSY {
                self.grow_pending = true;
                self.calm_until = Some(now + CALM_AFTER_STRETCH);
            }
            return Pop::Conceal { fec: None };
        }
        // Underrun: conceal without advancing so the late frame can still play (stretching by a frame).
        // A frame this late will come again (a descheduled thread, a sound server's timer): the frame
        // of delay just added is kept for a while instead of being taken back at the next quiet moment,
        // which would make the delay step down and up again (each step is an audible skip).
        self.stats.underruns += 1;
        self.loss_ewma += (1.0 - self.loss_ewma) / 64.0;
        self.shrink_pending = false;
        if self.empty_pops == 0 && self.lateness_is_one_off(now) {
            // The first late frame in a while (a thread descheduled for a moment on either side) is
            // concealed and skipped, like a lost one: stretching would add a frame of delay for the rest
            // of the call, and taking it back later is a second step. If it comes, it is dropped.
            self.forgiven = Some(self.next);
            self.next += 1;
            return Pop::Conceal { fec: None };
        }
        self.calm_until = Some(now + CALM_AFTER_STRETCH);
        self.empty_pops += 1;
        if self.empty_pops * self.cfg.frame.as_millis() as u32 >= 200 {
            // The sender paused (or the path died): rebuffer from scratch when audio returns.
            self.started = false;
            self.highest = None;
        }
        Pop::Conceal { fec: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Out {
        Idle,
        Frame(u32),
        Conceal(bool),
    }

    struct Run {
        out: Vec<Out>,
        jb: JitterBuffer,
        max_depth: u64,
    }

    /// Tiny deterministic generator so the tests need no RNG crate.
    struct Lcg(u64);
    impl Lcg {
        fn next_f64(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Sender emits frame i when its last sample is captured, at (i+1)*period; `arrivals(i)` gives the
    /// network delays of each copy (empty = lost). The receiver pops every 20 ms of its own clock.
    fn simulate(frames: u32, period_us: f64, ticks: u32, arrivals: impl Fn(u32) -> Vec<u64>) -> Run {
        simulate_q(frames, period_us, ticks, true, arrivals)
    }

    /// `quiet` is what the playout side reports about the frames it plays.
    fn simulate_q(frames: u32, period_us: f64, ticks: u32, quiet_out: bool, arrivals: impl Fn(u32) -> Vec<u64>) -> Run {
        let t0 = Instant::now();
        let cfg = JitterConfig::for_frame_ms(20);
        let mut jb = JitterBuffer::new(cfg, t0);
        let mut events: Vec<(u64, u32)> = Vec::new();
        for i in 0..frames {
            let sent = ((i + 1) as f64 * period_us) as u64;
            for d in arrivals(i) {
                events.push((sent + d, i));
            }
        }
        events.sort();
        let mut ev = events.into_iter().peekable();
        let mut out = Vec::new();
        let mut max_depth = 0;
        let mut quiet = true;
        for k in 0..ticks {
            let now_us = u64::from(k) * 20_000;
            while let Some(&(at, i)) = ev.peek() {
                if at > now_us {
                    break;
                }
                ev.next();
                jb.push(t0 + Duration::from_micros(at), i * 960, &i.to_le_bytes());
            }
            max_depth = max_depth.max(jb.depth_frames());
            let o = match jb.pop(t0 + Duration::from_micros(now_us), quiet) {
                Pop::Idle => Out::Idle,
                Pop::Frame(d) => Out::Frame(u32::from_le_bytes(d.try_into().unwrap())),
                Pop::Conceal { fec } => Out::Conceal(fec.is_some()),
            };
            quiet = quiet_out;
            out.push(o);
        }
        Run { out, jb, max_depth }
    }

    fn played(r: &Run) -> Vec<u32> {
        r.out.iter().filter_map(|o| if let Out::Frame(i) = o { Some(*i) } else { None }).collect()
    }

    fn strictly_increasing(v: &[u32]) -> bool {
        v.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn in_order_plays_everything_with_less_than_a_frame_of_wait() {
        // Frames arrive 3 ms after capture; pops are on a 20 ms grid. Playout starts at the first pop that
        // gives the first frame 4 ms of wait (40 ms: 17 ms), and every later frame waits the same 17 ms.
        let r = simulate(500, 20_000.0, 495, |_| vec![3_000]);
        let p = played(&r);
        assert!(strictly_increasing(&p));
        assert!(p.len() >= 490, "played {}", p.len());
        let s = r.jb.stats();
        assert_eq!((s.concealed, s.underruns, s.shrink_drops), (0, 0, 0), "{s:?}");
        assert!((16.0..18.0).contains(&r.jb.mean_wait_ms()), "wait {}", r.jb.mean_wait_ms());
        assert!(r.max_depth <= 2);
        assert_eq!(r.out[..2], [Out::Idle, Out::Idle]);
        assert_eq!(r.out[2], Out::Frame(0));
    }

    #[test]
    fn frames_that_came_in_a_burst_at_the_start_are_skipped() {
        // Frames 0 and 1 come together with frame 2 (a capture device delivering its first periods at once
        // after a slow start), the rest on time. Playing from frame 0 would make every later frame wait
        // 57 ms for the whole call (nothing is shed while the listener hears speech); the two stale
        // frames are skipped instead and frames wait 17 ms.
        let r = simulate_q(300, 20_000.0, 295, false, |i| {
            vec![if i < 3 { 63_000 - (u64::from(i) + 1) * 20_000 } else { 3_000 }]
        });
        let s = r.jb.stats();
        assert_eq!((s.concealed, s.underruns, s.shrink_drops), (0, 0, 2), "{s:?}");
        assert_eq!(played(&r)[0], 2);
        assert!(strictly_increasing(&played(&r)));
        assert!((16.0..18.0).contains(&r.jb.mean_wait_ms()), "wait {}", r.jb.mean_wait_ms());
    }

    #[test]
    fn a_one_off_late_frame_is_concealed_without_adding_delay() {
        // Frames wait 17 ms; frame 150 comes 30 ms late (a thread descheduled for a moment): its slot is
        // concealed, the frame is dropped when it comes, and the delay does not change.
        let r = simulate(400, 20_000.0, 395, |i| vec![if i == 150 { 33_000 } else { 3_000 }]);
        let s = r.jb.stats();
        assert_eq!((s.late, s.concealed, s.shrink_drops), (1, 1, 0), "{s:?}");
        assert!((16.0..18.0).contains(&r.jb.mean_wait_ms()), "wait {}", r.jb.mean_wait_ms());
        let p = played(&r);
        assert!(strictly_increasing(&p) && !p.contains(&150));
        assert_eq!(p.len() as u32 + 1, p.last().unwrap() + 1, "only frame 150 is missing");
    }

    #[test]
    fn a_frame_of_delay_added_for_late_frames_is_kept_for_a_while() {
        // Frames 150 and 250 both come 30 ms late: the first is a one-off, the second makes playout
        // stretch by a frame. The wait is 37 ms from then on, and that frame is kept for 20 s rather than
        // dropped at the next quiet moment (a step down, then up again at the next late frame).
        let late = |i| vec![if i == 150 || i == 250 { 33_000 } else { 3_000 }];
        let r = simulate(1_200, 20_000.0, 1_195, late);
        let s = r.jb.stats();
        assert_eq!((s.late, s.shrink_drops), (2, 0), "{s:?}");
        assert!(r.jb.mean_wait_ms() > 30.0, "wait {}", r.jb.mean_wait_ms());
        // After the calm period the excess goes.
        let r = simulate(1_600, 20_000.0, 1_595, late);
        let s = r.jb.stats();
        assert_eq!((s.late, s.shrink_drops), (2, 1), "{s:?}");
        assert!(strictly_increasing(&played(&r)));
    }

    #[test]
    fn excess_delay_is_only_shed_in_silence() {
        // The network delay drops by 40 ms after the first frames: later frames wait ~57 ms, two frames
        // more than needed. While the listener hears speech nothing is dropped...
        let slower_first = |i| vec![if i < 10 { 43_000 } else { 3_000 }];
        let r = simulate_q(500, 20_000.0, 495, false, slower_first);
        let p = played(&r);
        assert_eq!(r.jb.stats().shrink_drops, 0);
        assert_eq!(r.jb.stats().concealed, 0);
        assert_eq!(p.len() as u32, p.last().unwrap() + 1, "every frame played");
        assert!(r.jb.mean_wait_ms() > 50.0, "wait {}", r.jb.mean_wait_ms());
        // ...in silence the excess goes, one frame at a time.
        let r = simulate(500, 20_000.0, 495, slower_first);
        assert_eq!(r.jb.stats().shrink_drops, 2, "{:?}", r.jb.stats());
        assert!(r.jb.mean_wait_ms() < 20.0, "wait {}", r.jb.mean_wait_ms());
        assert!(strictly_increasing(&played(&r)));
    }

    #[test]
    fn reordered_pairs_are_put_back_in_order_without_loss() {
        // Every odd frame overtakes its predecessor.
        let r = simulate(300, 20_000.0, 295, |i| vec![if i % 2 == 0 { 26_000 } else { 2_000 }]);
        let p = played(&r);
        assert!(strictly_increasing(&p));
        let s = r.jb.stats();
        assert_eq!(s.late, 0, "{s:?}");
        assert_eq!(s.concealed, 0, "{s:?}");
        assert_eq!(p.len() as u64 + s.shrink_drops, u64::from(*p.last().unwrap()) + 1);
    }

    #[test]
    fn duplicates_are_dropped_and_each_frame_plays_once() {
        let r = simulate(200, 20_000.0, 195, |_| vec![3_000, 9_000]);
        let p = played(&r);
        assert!(strictly_increasing(&p));
        let s = r.jb.stats();
        assert!(s.duplicates >= 190, "{s:?}");
        assert_eq!(s.concealed, 0);
    }

    #[test]
    fn a_late_frame_is_dropped_counted_and_concealed() {
        let r = simulate(200, 20_000.0, 205, |i| vec![if i == 100 { 300_000 } else { 3_000 }]);
        let p = played(&r);
        assert!(!p.contains(&100));
        assert!(strictly_increasing(&p));
        let s = r.jb.stats();
        assert_eq!(s.late, 1, "{s:?}");
        assert!(s.concealed >= 1);
    }

    #[test]
    fn random_loss_is_concealed_with_fec_when_the_next_packet_is_here() {
        let mut rng = Lcg(7);
        let lost: Vec<bool> = (0..1_000).map(|_| rng.next_f64() < 0.1).collect();
        let r = simulate(1_000, 20_000.0, 1_005, |i| if lost[i as usize] { vec![] } else { vec![3_000] });
        let n_lost = lost[..990].iter().filter(|&&l| l).count() as u64;
        let s = r.jb.stats();
        let p = played(&r);
        assert!(strictly_increasing(&p));
        assert!(p.iter().all(|&i| !lost[i as usize]));
        assert!(s.concealed >= n_lost, "{s:?} lost {n_lost}");
        // Concealment beyond the losses themselves (stretching) stays small.
        assert!(s.concealed <= n_lost + n_lost / 2 + 5, "{s:?} lost {n_lost}");
        assert!(s.fec_recovered > n_lost * 8 / 10, "{s:?}");
        // The buffer settles at one extra frame: it stretches only for double losses (~1 % of frames) and
        // shrinks only to undo those, instead of stretching on every loss.
        assert!(s.underruns < n_lost / 8 && s.shrink_drops <= s.underruns + 1, "{s:?}");
        assert!(r.max_depth <= 6);
    }

    #[test]
    fn burst_loss_conceals_the_burst_and_resumes() {
        let r = simulate(300, 20_000.0, 305, |i| if (150..158).contains(&i) { vec![] } else { vec![3_000] });
        let p = played(&r);
        assert!(strictly_increasing(&p));
        assert!(p.contains(&149) && p.contains(&158) && p.contains(&200));
        assert!(r.jb.stats().concealed >= 8);
        assert!(r.jb.is_playing());
    }

    #[test]
    fn jitter_grows_the_wait_and_keeps_late_frames_rare() {
        let mut rng = Lcg(42);
        let delays: Vec<u64> = (0..3_000).map(|_| 2_000 + (rng.next_f64() * 30_000.0) as u64).collect();
        let r = simulate(3_000, 20_000.0, 3_010, |i| vec![delays[i as usize]]);
        let s = r.jb.stats();
        assert!(strictly_increasing(&played(&r)));
        let late_pct = s.late as f64 / 3_000.0 * 100.0;
        assert!(late_pct < 2.0, "late {late_pct}% {s:?}");
        let calm = simulate(3_000, 20_000.0, 3_010, |_| vec![2_000]);
        assert!(r.jb.mean_wait_ms() > calm.jb.mean_wait_ms() + 5.0);
        assert!(r.jb.jitter_us() > 5_000, "jitter {}", r.jb.jitter_us());
        assert!(r.max_depth <= 6, "depth {}", r.max_depth);
    }

    #[test]
    fn clock_drift_either_way_keeps_depth_bounded() {
        // Sender 1 % fast: the surplus is dropped in silence.
        let fast = simulate(6_060, 19_800.0, 6_000, |_| vec![3_000]);
        assert!(fast.max_depth <= 5, "fast depth {}", fast.max_depth);
        assert!(fast.jb.stats().shrink_drops >= 40, "{:?}", fast.jb.stats());
        // Sender 1 % slow: underruns are stretched over, never unbounded delay.
        let slow = simulate(5_940, 20_200.0, 6_000, |_| vec![3_000]);
        assert!(slow.max_depth <= 5, "slow depth {}", slow.max_depth);
        let s = slow.jb.stats();
        assert!(s.underruns >= 40 && s.underruns <= 120, "{s:?}");
        assert!(strictly_increasing(&played(&slow)));
    }

    #[test]
    fn depth_is_capped_at_max_delay() {
        // A stall then a flood of 40 frames at once.
        let r = simulate(200, 20_000.0, 195, |i| {
            let sent = u64::from(i + 1) * 20_000;
            vec![if i >= 50 { 1_900_000u64.saturating_sub(sent).max(3_000) } else { 3_000 }]
        });
        let cap = (300 / 20) as u64;
        assert!(r.max_depth > cap, "the flood must exceed the cap for this test to mean anything");
        // Shed by the cap, or skipped when playout restarts after the stall.
        let s = r.jb.stats();
        assert!(s.overflow_drops + s.shrink_drops > 0, "{s:?}");
        assert!(r.jb.depth_frames() <= cap);
        assert!(strictly_increasing(&played(&r)));
    }

    #[test]
    fn playout_that_starts_late_begins_with_the_newest_frames() {
        // The sound device starts calling back 2 s into the call: 100 frames are waiting by then. Playout
        // starts at once with a normal wait, from the newest frames.
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(20), t0);
        for i in 0..100u32 {
            jb.push(t0 + Duration::from_millis(20 * u64::from(i) + 3), i * 960, &i.to_le_bytes());
        }
        let mut first = None;
        for k in 0..10u32 {
            let now = t0 + Duration::from_millis(2_000 + 20 * u64::from(k));
            let i = 100 + k;
            if let Pop::Frame(d) = jb.pop(now, false) {
                first.get_or_insert(u32::from_le_bytes(d.try_into().unwrap()));
            }
            jb.push(now + Duration::from_millis(3), i * 960, &i.to_le_bytes());
        }
        assert!(matches!(first, Some(98 | 99)), "{first:?} {:?}", jb.stats());
        assert!(jb.depth_frames() <= 2, "{:?}", jb.stats());
    }

    #[test]
    fn timestamps_wrap_around() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(20), t0);
        let base = u32::MAX - 960 * 2 + 1;
        let mut got = Vec::new();
        for k in 0..6u32 {
            let at = t0 + Duration::from_millis(20 * u64::from(k));
            assert_eq!(jb.push(at, base.wrapping_add(k * 960), &[k as u8]), PushOutcome::Accepted);
            if let Pop::Frame(d) = jb.pop(at + Duration::from_millis(10), false) {
                got.push(d[0]);
            }
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(20), t0);
        assert_eq!(jb.push(t0, 0, &[0; MAX_ENCODED + 1]), PushOutcome::TooLarge);
    }
}
