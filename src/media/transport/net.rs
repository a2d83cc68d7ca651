//! The one owner of the call's UDP socket. Before the handshake it runs the [`Gatherer`] on the socket
//! (blocking, bounded by [`GATHER_TIMEOUT`]); during the call its net thread drives the [`Transport`]:
//! datagrams in, encoded frames from the capture queue in, timeouts, datagrams out (through the seeded
//! impairment queue when configured), events out to the engine.
//!
//! The socket is dual-stack (`[::]:port`) where the host has IPv6, so IPv4 peers appear as v4-mapped
//! addresses; this module converts at the edge and the transport only sees canonical addresses.

use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use super::timers::GATHER_TIMEOUT;
use super::{Gathered, Gatherer, MAX_WIRE, Transmit, Transport, TransportEvent, TurnServer};
use crate::media::MediaError;
use crate::media::engine::{MediaEvent, RxFrame, Shared, TxFrame};
use crate::media::impair::Impairer;
use crate::media::metrics::Counters;

/// Delayed datagrams the impairment queue holds (2.5 s of 20 ms audio with duplicates).
const IMPAIR_QUEUE: usize = 256;

/// Binds the call's media socket on `port` (0: any): dual-stack `[::]` when the host has IPv6, else
/// IPv4. Returns the socket and whether it can reach IPv6 peers.
///
/// Fails when neither can be bound (the port is taken).
pub fn bind(port: u16) -> std::io::Result<(UdpSocket, bool)> {
    // std's IPv6 sockets on Linux are dual-stack unless net.ipv6.bindv6only is set; check by sending
    // nothing: a v4-mapped `connect` on a copy would be needed to be sure, so we look at the sysctl.
    let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|s| s.trim() == "1");
    if !v6only && let Ok(s) = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
        return Ok((s, true));
    }
    UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).map(|s| (s, false))
}

/// The address to hand the OS for `to` on a socket of this family.
pub fn wire_addr(to: SocketAddr, v6: bool) -> SocketAddr {
    match (to, v6) {
        (SocketAddr::V4(a), true) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        _ => to,
    }
}

/// `from` as the transport knows it (v4-mapped → IPv4).
pub fn canonical(from: SocketAddr) -> SocketAddr {
    SocketAddr::new(from.ip().to_canonical(), from.port())
}

/// Runs STUN Binding against `stun` and a TURN allocation on `turn` from `socket`, within
/// [`GATHER_TIMEOUT`], and returns our candidates (`host` first). Blocking; restores the socket's
/// read timeout. Datagrams that are not answers to us are dropped (nobody knows this socket yet).
///
/// Fails only when the socket itself fails; servers that do not answer are listed in
/// [`Gathered::problems`].
pub fn gather(
    socket: &UdpSocket,
    v6: bool,
    stun: &[SocketAddr],
    turn: Option<&TurnServer>,
    host: &[SocketAddr],
) -> std::io::Result<Gathered> {
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut g = Gatherer::new(local, stun, turn, now, GATHER_TIMEOUT);
    let mut buf = [0u8; MAX_WIRE];
    let prev = socket.read_timeout()?;
    let result = (|| {
        loop {
            while let Some(t) = g.poll_transmit() {
                // A send error (no route to one server) must not stop the others.
                let _ = socket.send_to(&t.data, wire_addr(t.to, v6));
            }
            let now = Instant::now();
            if g.is_done(now) {
                break;
            }
            let wait = g.poll_timeout(now).saturating_duration_since(now).max(Duration::from_millis(1));
            socket.set_read_timeout(Some(wait))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    g.handle_datagram(Instant::now(), canonical(from), &buf[..n]);
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                // ICMP errors from an unreachable server surface here; the deadline still bounds us.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
            g.handle_timeout(Instant::now());
        }
        Ok(())
    })();
    socket.set_read_timeout(prev)?;
    result?;
    Ok(g.finish(host))
}

/// A datagram held back by the impairment simulation.
struct Delayed {
    due: Instant,
    t: Transmit,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    // Reversed, so the max-heap pops the earliest deadline.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.due.cmp(&self.due)
    }
}

/// The net thread's state.
pub(crate) struct Net {
    pub shared: Arc<Shared>,
    pub transport: Transport,
    pub impairer: Option<Impairer>,
    pub to_playout: SyncSender<RxFrame>,
    pub v6: bool,
}

impl Net {
    /// Drives the transport until `stop` fires, then sends BYE.
    pub async fn run(
        mut self,
        socket: UdpSocket,
        mut frames: tokio::sync::mpsc::Receiver<TxFrame>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), MediaError> {
        socket
            .set_nonblocking(true)
            .map_err(|source| MediaError::Io { what: "making the media socket non-blocking", source })?;
        socket
            .set_read_timeout(None)
            .map_err(|source| MediaError::Io { what: "configuring the media socket", source })?;
        let sock = tokio::net::UdpSocket::from_std(socket)
            .map_err(|source| MediaError::Io { what: "registering the media socket", source })?;
        let mut rbuf = [0u8; MAX_WIRE + 1];
        let mut delayed: BinaryHeap<Delayed> = BinaryHeap::with_capacity(IMPAIR_QUEUE);
        let mut frames_open = true;
        loop {
            let now = Instant::now();
            let mut wake = self.transport.poll_timeout(now);
            if let Some(d) = delayed.peek() {
                wake = wake.min(d.due);
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                r = sock.recv_from(&mut rbuf) => match r {
                    Ok((n, from)) => self.on_datagram(&rbuf[..n], canonical(from)),
                    // ICMP port-unreachable and similar surface here; not fatal.
                    Err(_) => Counters::add(&self.shared.counters.socket_errors, 1),
                },
                f = frames.recv(), if frames_open => match f {
                    Some(f) => {
                        self.transport.send_audio(Instant::now(), f.timestamp, &f.data[..usize::from(f.len)]);
                    }
                    None => frames_open = false,
                },
                _ = tokio::time::sleep_until(wake.max(now).into()) => {}
            }
            let now = Instant::now();
            self.transport.handle_timeout(now);
            self.flush(&sock, &mut delayed, now).await;
            self.events();
        }
        // Best effort: tell the peer we hung up so it need not wait for the silence timeout.
        let now = Instant::now();
        self.transport.send_bye(now);
        while let Some(t) = self.transport.poll_transmit() {
            self.transmit(&sock, &t).await;
        }
        Ok(())
    }

    fn on_datagram(&mut self, dgram: &[u8], from: SocketAddr) {
        let arrival = Instant::now();
        let c = &self.shared.counters;
        let Some(audio) = self.transport.handle_datagram(arrival, from, dgram) else { return };
        let mut f = RxFrame {
            timestamp: audio.timestamp,
            arrival,
            len: audio.data.len() as u16,
            data: [0; crate::media::codec::MAX_ENCODED],
        };
        f.data[..audio.data.len()].copy_from_slice(audio.data);
        if self.to_playout.try_send(f).is_err() {
            Counters::add(&c.queue_full_drops, 1);
        }
    }

    async fn flush(&mut self, sock: &tokio::net::UdpSocket, delayed: &mut BinaryHeap<Delayed>, now: Instant) {
        while let Some(t) = self.transport.poll_transmit() {
            match (&mut self.impairer, t.media) {
                (Some(imp), true) => {
                    let v = imp.decide(now);
                    if v.copies.iter().all(Option::is_none) {
                        Counters::add(&self.shared.counters.impaired_dropped, 1);
                    }
                    for due in v.copies.into_iter().flatten() {
                        if delayed.len() >= IMPAIR_QUEUE {
                            Counters::add(&self.shared.counters.queue_full_drops, 1);
                            continue;
                        }
                        delayed.push(Delayed { due, t });
                    }
                }
                _ => self.transmit(sock, &t).await,
            }
        }
        while delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = delayed.pop() {
                self.transmit(sock, &d.t).await;
            }
        }
    }

    async fn transmit(&self, sock: &tokio::net::UdpSocket, t: &Transmit) {
        let c = &self.shared.counters;
        match sock.send_to(t.bytes(), wire_addr(t.to, self.v6)).await {
            Ok(n) => {
                Counters::add(&c.datagrams_sent, 1);
                Counters::add(&c.wire_bytes_sent, n as u64);
            }
            Err(_) => Counters::add(&c.socket_errors, 1),
        }
    }

    fn events(&mut self) {
        while let Some(ev) = self.transport.poll_event() {
            let media = match ev {
                TransportEvent::PathUp(p) => {
                    self.set_peer(p.remote);
                    self.shared.path_up.store(true, Relaxed);
                    self.shared.event(MediaEvent::PathChanged(p));
                    MediaEvent::PeerConnected { addr: p.remote, at: Instant::now() }
                }
                TransportEvent::PathChanged { from, to } => {
                    self.set_peer(to.remote);
                    if from.remote != to.remote && from.kind == to.kind {
                        self.shared.event(MediaEvent::PeerAddressChanged { from: from.remote, to: to.remote });
                    }
                    MediaEvent::PathChanged(to)
                }
                TransportEvent::NoPath(why) => MediaEvent::NoPath(why),
                TransportEvent::PeerSilent(silent_for) => MediaEvent::PeerSilent { silent_for },
                TransportEvent::PeerResumed => MediaEvent::PeerResumed,
                TransportEvent::PeerBye => MediaEvent::PeerBye,
            };
            self.shared.event(media);
        }
    }

    fn set_peer(&self, addr: SocketAddr) {
        // Written only when the path changes, read only by metrics(): never on the per-frame path.
        if let Ok(mut p) = self.shared.peer.lock() {
            *p = Some(addr);
        }
    }
}
