//! The media transport: a sans-IO state machine in the shape of str0m's `Rtc` and quinn-proto's
//! `Connection`. It owns the call's `MediaCrypto`, the candidate pairs and their connectivity checks,
//! path selection, the TURN client of our relay allocation, receive statistics and every timer; it never
//! touches a socket or a clock. [`net`] is the one socket owner that drives it.
//!
//! Call order (the driver's loop): feed each datagram to [`Transport::handle_datagram`] (it returns the
//! audio payload when the datagram was an audio frame), each encoded frame to [`Transport::send_audio`],
//! call [`Transport::handle_timeout`] when [`Transport::poll_timeout`] is reached (calling it early is
//! harmless), then drain [`Transport::poll_transmit`] onto the socket and [`Transport::poll_event`].
//!
//! Audio is sent only once a pair is selected (a check on it was answered, or the peer's authenticated
//! audio arrived on it): that moment is [`TransportEvent::PathUp`], the engine's "path up" signal.
//!
//! Submodules: [`candidates`] (types, priorities, gathering), [`checks`] (pairs and checks), [`path`]
//! (selection), [`rx_stats`], [`timers`], [`net`].

pub mod candidates;
pub mod checks;
pub mod net;
pub mod path;
pub mod rx_stats;
pub mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qvoice_proto::frame::{AudioPayload, MAX_DATAGRAM, OVERHEAD, Probe, StatsReport};
use qvoice_proto::{Candidate, FrameType, MediaCrypto};
use stun_proto::types::message::{BINDING, Message, MessageWriteVec};
use stun_proto::types::prelude::*;
use turn_client_proto::api::{TurnClientApi, TurnEvent, TurnRecvRet};
use turn_client_proto::prelude::DelayedTransmitBuild;
use turn_client_proto::types::TransportType;

pub use candidates::{Base, Gathered, Gatherer, PathKind, RelayAllocation, RemoteKind, TurnServer};
pub use path::PathInfo;

use self::checks::{CheckList, PairState};
use self::path::PathSelector;
use self::rx_stats::RxStats;
use self::timers::{CHECK_TIMEOUT, RELAY_KEEPALIVE, REPORT_INTERVAL, Sans};
use crate::media::codec::MAX_ENCODED;
use crate::media::metrics::Counters;

/// Largest media datagram we seal: a PCM 40 ms frame plus timestamp and AEAD overhead.
pub const MAX_SEND: usize = MAX_ENCODED + AudioPayload::HEADER + OVERHEAD;
/// Room for the TURN framing around a media datagram (a Send indication to an IPv6 peer needs 48 bytes;
/// ChannelData 4).
const TURN_OVERHEAD: usize = 64;
/// Largest datagram the transport emits or accepts.
pub const MAX_WIRE: usize = MAX_DATAGRAM + TURN_OVERHEAD;
/// Datagrams the transmit queue holds before it drops (and counts) new ones.
const OUT_QUEUE: usize = 64;

/// Everything the transport needs for one call.
#[derive(Debug)]
pub struct TransportConfig {
    /// Per-call media keys.
    pub crypto: MediaCrypto,
    /// The peer's signed candidates (from the OFFER or ANSWER).
    pub remote: Vec<Candidate>,
    /// We placed the call (ICE's controlling agent: the callee follows our path choice).
    pub controlling: bool,
    /// Our socket can send to IPv6 addresses.
    pub host_v6: bool,
    /// Our TURN allocation from gathering.
    pub relay: Option<RelayAllocation>,
    /// How long without an authenticated frame (after the path is up) before [`TransportEvent::PeerSilent`].
    pub silence_timeout: Duration,
    /// Samples per audio frame at 48 kHz (for receive statistics).
    pub frame_samples: usize,
}

/// What the transport reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// The first pair was selected: audio may flow.
    PathUp(PathInfo),
    /// Media moved to another pair (upgrade to direct, fallback to the relay, or the peer rebound).
    PathChanged {
        /// Previous path.
        from: PathInfo,
        /// New path.
        to: PathInfo,
    },
    /// No pair worked by the check timeout; the text says what was tried and what to do.
    NoPath(String),
    /// No authenticated frame for this long (after the path was up).
    PeerSilent(Duration),
    /// Frames arrive again.
    PeerResumed,
    /// The peer sent BYE.
    PeerBye,
}

/// An audio frame that arrived and authenticated.
#[derive(Debug)]
pub struct RxAudio<'a> {
    /// 48 kHz sample clock of its first sample.
    pub timestamp: u32,
    /// The encoded frame.
    pub data: &'a [u8],
}

/// A datagram to put on the socket.
#[derive(Clone, Copy)]
pub struct Transmit {
    /// Destination (the peer, or our TURN server for relayed frames and TURN control).
    pub to: SocketAddr,
    /// A peer frame (possibly TURN-wrapped), as opposed to STUN/TURN control: only these go through the
    /// impairment simulation.
    pub media: bool,
    len: usize,
    data: [u8; MAX_WIRE],
}

impl Transmit {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmit").field("to", &self.to).field("media", &self.media).field("len", &self.len).finish()
    }
}

/// The per-call transport state machine.
pub struct Transport {
    crypto: MediaCrypto,
    counters: Arc<Counters>,
    start: Instant,
    checks: CheckList,
    selector: PathSelector,
    path: Option<PathInfo>,
    relay: Option<RelayAllocation>,
    /// Peer IPs we asked the relay to permit (asked once each; the TURN client refreshes them).
    permitted: Vec<std::net::IpAddr>,
    rx: RxStats,
    out: VecDeque<Transmit>,
    events: VecDeque<TransportEvent>,
    newest_counter: Option<u64>,
    probe_seq: u32,
    last_rx: Instant,
    last_tx: Instant,
    silent: bool,
    silence_timeout: Duration,
    next_report: Instant,
    next_relay_keepalive: Instant,
    no_path_reported: bool,
    seal_buf: [u8; MAX_SEND],
    open_buf: [u8; MAX_DATAGRAM],
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("path", &self.path).field("pairs", &self.checks.pairs().len()).finish()
    }
}

impl Transport {
    /// A transport starting its checks at `now`. `counters` are the engine's shared metrics.
    pub fn new(cfg: TransportConfig, counters: Arc<Counters>, now: Instant) -> Self {
        let checks = CheckList::new(&cfg.remote, cfg.host_v6, cfg.relay.is_some(), now);
        let mut t = Self {
            crypto: cfg.crypto,
            counters,
            start: now,
            checks,
            selector: PathSelector::new(now, cfg.controlling),
            path: None,
            relay: cfg.relay,
            permitted: Vec::new(),
            rx: RxStats::new(now, cfg.frame_samples),
            out: VecDeque::with_capacity(OUT_QUEUE),
            events: VecDeque::new(),
            newest_counter: None,
            probe_seq: 0,
            last_rx: now,
            last_tx: now,
            silent: false,
            silence_timeout: cfg.silence_timeout,
            next_report: now + REPORT_INTERVAL,
            next_relay_keepalive: now + RELAY_KEEPALIVE,
            no_path_reported: false,
            seal_buf: [0; MAX_SEND],
            open_buf: [0; MAX_DATAGRAM],
        };
        // Let the peer's checks through our relay: permissions for every IPv4 address it signed.
        for c in &cfg.remote {
            t.permit(now, c.addr());
        }
        t
    }

    /// The path media uses now.
    pub fn path(&self) -> Option<PathInfo> {
        self.path
    }

    /// The candidate pairs (for tests and diagnostics).
    pub fn pairs(&self) -> &[checks::Pair] {
        self.checks.pairs()
    }

    fn now_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Handles one datagram that arrived from `from`. Returns the audio payload when it was an
    /// authenticated audio frame; everything else (checks, TURN traffic, reports) is handled inside.
    /// Malformed, unauthenticated and replayed datagrams are dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<RxAudio<'_>> {
        if data.len() > MAX_WIRE {
            Counters::add(&self.counters.malformed, 1);
            return None;
        }
        let relay_server = self.relay.as_ref().map(|r| r.server);
        if relay_server == Some(from) {
            let sn = Sans::at(self.start, now);
            let relay = self.relay.as_mut()?;
            let t = turn_client_proto::api::Transmit::new(data, TransportType::Udp, from, relay.client.local_addr());
            match relay.client.recv(t, sn) {
                TurnRecvRet::PeerData(pd) => {
                    let peer = pd.peer;
                    let mut buf = [0u8; MAX_DATAGRAM];
                    let inner = pd.data();
                    if inner.len() > MAX_DATAGRAM {
                        Counters::add(&self.counters.malformed, 1);
                        return None;
                    }
                    buf[..inner.len()].copy_from_slice(inner);
                    let n = inner.len();
                    return self.on_frame(now, Base::Relay, peer, &buf[..n], data.len());
                }
                TurnRecvRet::Handled => self.drain_relay(now),
                // Our own keepalive's answers and ICMP relayed by the server.
                TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => tracing::debug!("relay datagram ignored"),
            }
            return None;
        }
        if is_stun(data) {
            // A late answer to a gathering request: nothing to do.
            return None;
        }
        tracing::trace!(%from, len = data.len(), "datagram");
        self.on_frame(now, Base::Host, from, data, data.len())
    }

    fn on_frame(
        &mut self,
        now: Instant,
        base: Base,
        from: SocketAddr,
        dgram: &[u8],
        wire_len: usize,
    ) -> Option<RxAudio<'_>> {
        let counters = Arc::clone(&self.counters);
        let c = &*counters;
        let opened = match self.crypto.open(dgram, &mut self.open_buf) {
            Ok(o) => o,
            Err(e) => {
                let counter = match e {
                    qvoice_proto::Error::TagFailure => &c.unauthenticated,
                    qvoice_proto::Error::Replay | qvoice_proto::Error::TooOld => &c.replayed,
                    _ => &c.malformed,
                };
                Counters::add(counter, 1);
                return None;
            }
        };
        let (ftype, plen, counter) = (opened.ftype, opened.payload.len(), opened.counter);
        Counters::add(&c.wire_bytes_received, wire_len as u64);
        self.last_rx = now;
        if self.silent {
            self.silent = false;
            self.events.push_back(TransportEvent::PeerResumed);
        }
        let newest = self.newest_counter.is_none_or(|n| counter > n);
        if newest {
            self.newest_counter = Some(counter);
        }
        match ftype {
            FrameType::Audio => {
                let (timestamp, len) = match AudioPayload::parse(&self.open_buf[..plen]) {
                    Ok(a) if a.data.len() <= MAX_ENCODED => (a.timestamp, a.data.len()),
                    _ => {
                        Counters::add(&c.malformed, 1);
                        return None;
                    }
                };
                if newest {
                    self.follow(now, base, from);
                }
                self.rx.note_audio(timestamp, now, c);
                if c.frames_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    Counters::set(&c.first_rx_us, self.now_us(now) + 1);
                }
                Counters::add(&c.payload_bytes_received, len as u64);
                let h = AudioPayload::HEADER;
                return Some(RxAudio { timestamp, data: &self.open_buf[h..h + len] });
            }
            FrameType::Probe => match Probe::parse(&self.open_buf[..plen]) {
                Ok(p) => {
                    tracing::debug!(?base, %from, "probe received");
                    // Answer on the path the probe came in on: that is the path being tested.
                    self.send_frame(now, FrameType::ProbeAck, &p.to_bytes(), base, from);
                    let pair = self.checks.find(base, from).or_else(|| {
                        let added = self.checks.add_peer_reflexive(base, from, now);
                        if added.is_some() {
                            self.permit(now, from);
                        }
                        added
                    });
                    if let Some(i) = pair {
                        self.checks.trigger(i, now);
                    }
                }
                Err(_) => Counters::add(&c.malformed, 1),
            },
            FrameType::ProbeAck => match Probe::parse(&self.open_buf[..plen]) {
                Ok(p) => {
                    let i = (p.id & 0xff) as usize;
                    let symmetric = self.checks.get(i).is_some_and(|pair| pair.base == base && pair.remote == from);
                    tracing::debug!(?base, %from, pair = i, symmetric, "probe answered");
                    if symmetric {
                        let rtt = Duration::from_micros(self.now_us(now).saturating_sub(p.sent_us));
                        self.checks.succeeded(i, now, Some(rtt));
                        if self.selector.selected() == Some(i) || self.path.is_none() {
                            Counters::set(&c.rtt_us, rtt.as_micros() as u64);
                        }
                        self.reselect(now);
                    }
                }
                Err(_) => Counters::add(&c.malformed, 1),
            },
            FrameType::Stats => match StatsReport::parse(&self.open_buf[..plen]) {
                Ok(r) => {
                    Counters::set(&c.peer_loss_permille, u64::from(r.loss_permille));
                    Counters::set(&c.peer_jitter_us, u64::from(r.jitter_us));
                }
                Err(_) => Counters::add(&c.malformed, 1),
            },
            FrameType::Bye => self.events.push_back(TransportEvent::PeerBye),
            FrameType::Keepalive => {}
        }
        None
    }

    /// The peer's newest audio came on `(base, from)`. `known` (for the selector) means an address the
    /// peer signed: audio from any other address is the peer's NAT rebinding, which both sides follow.
    fn follow(&mut self, now: Instant, base: Base, from: SocketAddr) {
        let (i, known) = match self.checks.find(base, from) {
            Some(i) => (i, self.checks.get(i).is_some_and(|p| matches!(p.kind, RemoteKind::Signed(_)))),
            None => match self.checks.add_peer_reflexive(base, from, now) {
                Some(i) => {
                    self.permit(now, from);
                    (i, false)
                }
                None => return,
            },
        };
        if self.selector.follow_audio(i, known) {
            self.checks.succeeded(i, now, None);
            if let Some(old) = self.path
                && old.remote != from
            {
                Counters::add(&self.counters.peer_address_changes, 1);
            }
            self.selected_changed(now, i);
        }
    }

    fn permit(&mut self, now: Instant, peer: SocketAddr) {
        let sn = Sans::at(self.start, now);
        if let Some(r) = &mut self.relay
            && peer.is_ipv4()
            && !self.permitted.contains(&peer.ip())
        {
            self.permitted.push(peer.ip());
            if let Err(e) = r.client.create_permission(TransportType::Udp, peer.ip(), sn) {
                tracing::debug!(ip = %peer.ip(), error = %e, "relay permission not requested");
            }
        }
        self.drain_relay(now);
    }

    fn reselect(&mut self, now: Instant) {
        if let Some(i) = self.selector.update(&self.checks, now) {
            self.selected_changed(now, i);
        } else if self.selector.selected().is_none() && self.path.is_some() {
            // Everything broke; keep the last path for reporting, checks go on until consent returns.
        }
    }

    fn selected_changed(&mut self, now: Instant, i: usize) {
        let Some(p) = self.checks.get(i).copied() else { return };
        tracing::debug!(pair = i, ?p.base, remote = %p.remote, "selected");
        self.checks.selected(i, now);
        let info = PathInfo {
            kind: p.path_kind(),
            base: p.base,
            remote: p.remote,
            relay_server: (p.base == Base::Relay).then(|| self.relay.as_ref().map(|r| r.server)).flatten(),
        };
        if p.base == Base::Relay {
            // A channel cuts the relay's per-packet framing from 36 bytes to 4.
            let sn = Sans::at(self.start, now);
            if let Some(r) = &mut self.relay {
                let _ = r.client.bind_channel(TransportType::Udp, p.remote, sn);
            }
            self.drain_relay(now);
        }
        match self.path.replace(info) {
            None => self.events.push_back(TransportEvent::PathUp(info)),
            Some(old) if old != info => self.events.push_back(TransportEvent::PathChanged { from: old, to: info }),
            Some(_) => {}
        }
    }

    /// Seals and queues one audio frame on the selected path. Returns false (nothing sent) while no
    /// path is up, or when sealing or the relay refused.
    pub fn send_audio(&mut self, now: Instant, timestamp: u32, data: &[u8]) -> bool {
        let Some(path) = self.path else { return false };
        let mut payload = [0u8; MAX_ENCODED + AudioPayload::HEADER];
        let Ok(n) = (AudioPayload { timestamp, data }).write_to(&mut payload) else {
            Counters::add(&self.counters.malformed, 1);
            return false;
        };
        if !self.send_frame(now, FrameType::Audio, &payload[..n], path.base, path.remote) {
            return false;
        }
        let c = &self.counters;
        if c.frames_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            Counters::set(&c.first_tx_us, self.now_us(now) + 1);
        }
        Counters::add(&c.payload_bytes_sent, data.len() as u64);
        true
    }

    /// Queues a BYE on the selected path (best effort: the peer's silence timeout is the fallback).
    pub fn send_bye(&mut self, now: Instant) {
        if let Some(p) = self.path {
            self.send_frame(now, FrameType::Bye, &[0], p.base, p.remote);
        }
    }

    fn send_frame(&mut self, now: Instant, ftype: FrameType, payload: &[u8], base: Base, to: SocketAddr) -> bool {
        let n = match self.crypto.seal(ftype, payload, &mut self.seal_buf) {
            Ok(n) => n,
            Err(_) => {
                Counters::add(&self.counters.socket_errors, 1);
                return false;
            }
        };
        self.last_tx = now;
        if self.out.len() >= OUT_QUEUE {
            Counters::add(&self.counters.queue_full_drops, 1);
            return false;
        }
        let mut t = Transmit { to, media: true, len: n, data: [0; MAX_WIRE] };
        match base {
            Base::Host => t.data[..n].copy_from_slice(&self.seal_buf[..n]),
            Base::Relay => {
                let sn = Sans::at(self.start, now);
                let Some(r) = &mut self.relay else { return false };
                match r.client.send_to(TransportType::Udp, to, &self.seal_buf[..n], sn) {
                    Ok(Some(tb)) => {
                        let len = tb.data.len();
                        if len > MAX_WIRE {
                            Counters::add(&self.counters.socket_errors, 1);
                            return false;
                        }
                        t.to = tb.to;
                        t.len = len;
                        tb.data.write_into(&mut t.data[..len]);
                    }
                    Ok(None) => return true,
                    Err(e) => {
                        tracing::debug!(%to, error = %e, "relay send refused");
                        // No permission yet (it is being created) or the allocation is gone.
                        Counters::add(&self.counters.socket_errors, 1);
                        return false;
                    }
                }
            }
        }
        self.out.push_back(t);
        true
    }

    fn send_probe(&mut self, now: Instant, i: usize) {
        let Some(p) = self.checks.get(i).copied() else { return };
        if p.base == Base::Relay {
            let ok = self.relay.as_ref().is_some_and(|r| r.client.have_permission(TransportType::Udp, p.remote.ip()));
            if !ok {
                // The permission is on its way (or the relay refused it): nothing can pass yet.
                tracing::trace!(pair = i, remote = %p.remote, "no relay permission yet");
                self.permit(now, p.remote);
                return;
            }
        }
        self.probe_seq = self.probe_seq.wrapping_add(1);
        let id = (self.probe_seq << 8) | (i as u32 & 0xff);
        let probe = Probe { id, sent_us: self.now_us(now) }.to_bytes();
        let sent = self.send_frame(now, FrameType::Probe, &probe, p.base, p.remote);
        tracing::trace!(pair = i, base = ?p.base, remote = %p.remote, sent, "probe");
    }

    fn drain_relay(&mut self, now: Instant) {
        let sn = Sans::at(self.start, now);
        let Some(r) = &mut self.relay else { return };
        while let Some(t) = r.client.poll_transmit(sn) {
            let d = t.data.as_ref();
            if d.len() > MAX_WIRE || self.out.len() >= OUT_QUEUE {
                Counters::add(&self.counters.queue_full_drops, 1);
                continue;
            }
            let mut out = Transmit { to: t.to, media: false, len: d.len(), data: [0; MAX_WIRE] };
            out.data[..d.len()].copy_from_slice(d);
            self.out.push_back(out);
        }
        while let Some(ev) = r.client.poll_event() {
            match ev {
                TurnEvent::PermissionCreateFailed(_, ip) => tracing::debug!(%ip, "the relay refused a permission"),
                TurnEvent::ChannelCreateFailed(_, peer) => tracing::debug!(%peer, "relay channel not bound"),
                other => tracing::debug!(?other, "relay"),
            }
        }
    }

    /// Advances checks, selection, reports and the relay's refreshes to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(r) = &mut self.relay {
            let _ = r.client.poll(Sans::at(self.start, now));
        }
        self.drain_relay(now);
        if let Some(i) = self.checks.next_check(now, self.selector.selected()) {
            self.send_probe(now, i);
        }
        self.reselect(now);
        if self.path.is_none() && !self.no_path_reported && now >= self.start + CHECK_TIMEOUT {
            self.no_path_reported = true;
            self.events.push_back(TransportEvent::NoPath(self.no_path_reason()));
        }
        if now >= self.next_report {
            self.next_report = now + REPORT_INTERVAL;
            self.housekeeping(now);
        }
        if now >= self.next_relay_keepalive {
            self.next_relay_keepalive = now + RELAY_KEEPALIVE;
            let relayed_now = self.path.is_some_and(|p| p.base == Base::Relay);
            if let Some(server) = self.relay.as_ref().map(|r| r.server)
                && !relayed_now
                && self.out.len() < OUT_QUEUE
            {
                let req = Message::builder_request(BINDING, MessageWriteVec::new()).finish().to_vec();
                let mut t = Transmit { to: server, media: false, len: req.len(), data: [0; MAX_WIRE] };
                t.data[..req.len()].copy_from_slice(&req);
                self.out.push_back(t);
            }
        }
    }

    fn no_path_reason(&self) -> String {
        let tried = self.checks.pairs().len();
        let secs = CHECK_TIMEOUT.as_secs();
        match &self.relay {
            None => format!(
                "no media path: none of {tried} address pairs answered in {secs} s; configure a TURN relay in the registry"
            ),
            Some(r) => format!(
                "no media path: none of {tried} address pairs answered in {secs} s, relay {} included",
                r.server
            ),
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let Some(path) = self.path else { return };
        let silent_for = now.saturating_duration_since(self.last_rx);
        if !self.silent && silent_for >= self.silence_timeout {
            self.silent = true;
            self.events.push_back(TransportEvent::PeerSilent(silent_for));
        }
        let report = self.rx.report();
        self.send_frame(now, FrameType::Stats, &report.to_bytes(), path.base, path.remote);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    /// When [`Transport::handle_timeout`] must run next.
    pub fn poll_timeout(&mut self, now: Instant) -> Instant {
        let mut t = self.next_report.min(self.next_relay_keepalive);
        if let Some(c) = self.checks.poll_timeout(self.selector.selected()) {
            t = t.min(c);
        }
        if self.path.is_none() && !self.no_path_reported {
            t = t.min(self.start + CHECK_TIMEOUT);
        }
        if let Some(r) = &mut self.relay
            && let turn_client_proto::api::TurnPollRet::WaitUntil(w) = r.client.poll(Sans::at(self.start, now))
        {
            t = t.min(Sans::to_std(self.start, w));
        }
        t
    }

    /// Whether every pair has failed and no path is up.
    pub fn is_dead(&self) -> bool {
        self.path.is_none() && self.checks.all_failed()
    }

    /// Pairs currently working.
    pub fn working_pairs(&self) -> usize {
        self.checks.pairs().iter().filter(|p| p.state == PairState::Succeeded).count()
    }
}

/// Whether a datagram is STUN (RFC 8489 §5: the magic cookie at bytes 4..8). Every STUN and TURN method
/// we use starts with byte 0x00 or 0x01, while a media frame starts with its version nibble (≥ 1), so
/// the two can never be confused.
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 0x10 && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

#[cfg(test)]
mod tests;
