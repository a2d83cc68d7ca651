//! The push side: who has an open `/events` stream, and delivery of call and presence events to
//! them. A user is online exactly while at least one of their streams is open.
//!
//! Each stream owns a bounded channel; a client too slow to drain it is disconnected rather than
//! allowed to grow server memory. A user may hold at most `max_per_user` streams: opening one more
//! ends the oldest (a client reconnecting after a network change replaces its half-dead stream; a
//! client opening hundreds holds no more than the cap). Streams end when the server shuts down, so
//! graceful shutdown never waits on an idle push connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::sse;
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc, watch};

/// Events queued per stream before the stream is considered stuck and closed.
pub const STREAM_QUEUE: usize = 256;
/// Most names listed in the `ready` event.
pub const READY_ONLINE_MAX: usize = 1000;
/// Default most streams per user.
pub const STREAMS_PER_USER: usize = 4;

pub use qvoice_wire::{Event, IncomingCall};

#[derive(Debug, Default)]
struct Conns {
    by_user: HashMap<String, Vec<(u64, mpsc::Sender<Event>)>>,
    total: usize,
}

/// Open push streams and the wake-ups for long-polling `/call/pending`.
#[derive(Debug)]
pub struct Hub {
    conns: Mutex<Conns>,
    next_id: AtomicU64,
    max_per_user: usize,
    replaced: AtomicU64,
    ringing: broadcast::Sender<String>,
    shutdown: watch::Receiver<bool>,
}

impl Hub {
    /// A hub whose streams end when `shutdown` turns true, with at most [`STREAMS_PER_USER`] streams
    /// per user.
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        Self::with_max_per_user(shutdown, STREAMS_PER_USER)
    }

    /// A hub allowing `max_per_user` streams per user (at least 1).
    pub fn with_max_per_user(shutdown: watch::Receiver<bool>, max_per_user: usize) -> Self {
        let (ringing, _) = broadcast::channel(1024);
        Self {
            conns: Mutex::new(Conns::default()),
            next_id: AtomicU64::new(1),
            max_per_user: max_per_user.max(1),
            replaced: AtomicU64::new(0),
            ringing,
            shutdown,
        }
    }

    /// Registers a new stream for `user`, ending their oldest ones beyond the per-user cap. Returns the
    /// stream id, its receiver, and whether the user just came online.
    pub fn subscribe(&self, user: &str) -> (u64, mpsc::Receiver<Event>, bool) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut came_online = false;
        if let Ok(mut c) = self.conns.lock() {
            let list = c.by_user.entry(user.to_owned()).or_default();
            came_online = list.is_empty();
            // Dropping the oldest sender ends that stream; its close handler then finds nothing to
            // remove, so the user does not flap offline and online.
            let excess = (list.len() + 1).saturating_sub(self.max_per_user);
            list.drain(..excess);
            list.push((id, tx));
            c.total = c.total + 1 - excess;
            self.replaced.fetch_add(excess as u64, Ordering::Relaxed);
        }
        (id, rx, came_online)
    }

    /// Streams ended because their user opened more than the cap.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Number of open streams of `user`.
    pub fn streams_of(&self, user: &str) -> usize {
        self.conns.lock().map_or(0, |c| c.by_user.get(user).map_or(0, Vec::len))
    }

    /// Removes stream `id` of `user`. Returns whether the user just went offline.
    pub fn unsubscribe(&self, user: &str, id: u64) -> bool {
        let Ok(mut c) = self.conns.lock() else { return false };
        let mut removed = 0;
        let mut offline = false;
        if let Some(list) = c.by_user.get_mut(user) {
            let before = list.len();
            list.retain(|(i, _)| *i != id);
            removed = before - list.len();
            if list.is_empty() {
                c.by_user.remove(user);
                offline = removed > 0;
            }
        }
        c.total -= removed;
        offline
    }

    /// Queues `event` on every stream of `to`; streams whose queue is full are closed.
    pub fn send(&self, to: &str, event: &Event) {
        if matches!(event, Event::IncomingCall(_)) {
            // No receivers is normal (nobody long-polling).
            let _ = self.ringing.send(to.to_owned());
        }
        let Ok(mut c) = self.conns.lock() else { return };
        let Some(list) = c.by_user.get_mut(to) else { return };
        let before = list.len();
        list.retain(|(_, tx)| tx.try_send(event.clone()).is_ok());
        let dropped = before - list.len();
        if list.is_empty() {
            c.by_user.remove(to);
        }
        c.total -= dropped;
    }

    /// Queues `event` on every open stream except those of `except`.
    pub fn broadcast(&self, event: &Event, except: &str) {
        let names: Vec<String> = match self.conns.lock() {
            Ok(c) => c.by_user.keys().filter(|n| n.as_str() != except).cloned().collect(),
            Err(_) => return,
        };
        for n in names {
            self.send(&n, event);
        }
    }

    /// Whether `user` has an open stream.
    pub fn is_online(&self, user: &str) -> bool {
        self.conns.lock().is_ok_and(|c| c.by_user.contains_key(user))
    }

    /// Up to `max` online usernames.
    pub fn online(&self, max: usize) -> Vec<String> {
        self.conns.lock().map_or_else(|_| Vec::new(), |c| c.by_user.keys().take(max).cloned().collect())
    }

    /// Number of open streams.
    pub fn connections(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.total)
    }

    /// A receiver woken with the callee's name whenever a call starts ringing.
    pub fn ringing(&self) -> broadcast::Receiver<String> {
        self.ringing.subscribe()
    }

    /// Number of `/call/pending` long-polls currently waiting.
    pub fn long_pollers(&self) -> usize {
        self.ringing.receiver_count()
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// Runs when a stream is dropped (client gone, server shutting down, queue overflow).
pub trait OnClose: Send + 'static {
    /// Called exactly once.
    fn closed(&mut self);
}

struct StreamState<C: OnClose> {
    rx: mpsc::Receiver<Event>,
    shutdown: watch::Receiver<bool>,
    first: Option<Event>,
    _guard: CloseGuard<C>,
}

struct CloseGuard<C: OnClose>(C);

impl<C: OnClose> Drop for CloseGuard<C> {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// Turns a subscription into an SSE stream: `first`, then every queued event, until the queue is
/// closed or the server shuts down; `on_close` runs when the stream is dropped.
pub fn sse_stream<C: OnClose>(
    first: Event,
    rx: mpsc::Receiver<Event>,
    shutdown: watch::Receiver<bool>,
    on_close: C,
) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send + 'static {
    let st = StreamState { rx, shutdown, first: Some(first), _guard: CloseGuard(on_close) };
    futures_util::stream::unfold(st, |mut st| async move {
        if let Some(ev) = st.first.take() {
            return Some((Ok(to_sse(&ev)), st));
        }
        if *st.shutdown.borrow() {
            return None;
        }
        let ev = tokio::select! {
            ev = st.rx.recv() => ev?,
            _ = st.shutdown.changed() => return None,
        };
        Some((Ok(to_sse(&ev)), st))
    })
}

fn to_sse(ev: &Event) -> sse::Event {
    let data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".to_owned());
    sse::Event::default().event(ev.name()).data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        let (_tx, rx) = watch::channel(false);
        Hub::new(rx)
    }

    #[test]
    fn presence_follows_open_streams() {
        let h = hub();
        let (a, _ra, first) = h.subscribe("alice");
        assert!(first);
        let (b, _rb, second) = h.subscribe("alice");
        assert!(!second);
        assert!(h.is_online("alice"));
        assert_eq!(h.connections(), 2);
        assert!(!h.unsubscribe("alice", a));
        assert!(h.unsubscribe("alice", b));
        assert!(!h.is_online("alice"));
        assert_eq!(h.connections(), 0);
    }

    #[test]
    fn a_new_stream_beyond_the_cap_ends_the_oldest() {
        let (_tx, srx) = watch::channel(false);
        let h = Hub::with_max_per_user(srx, 2);
        let (a, mut ra, first) = h.subscribe("alice");
        let (b, _rb, _) = h.subscribe("alice");
        let (_c, _rc, again) = h.subscribe("alice");
        assert!(first && !again);
        assert_eq!((h.streams_of("alice"), h.connections(), h.replaced()), (2, 2, 1));
        // The oldest stream's channel is closed: its SSE stream ends.
        assert!(matches!(ra.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        // Its close handler removes nothing and does not take alice offline.
        assert!(!h.unsubscribe("alice", a));
        assert!(h.is_online("alice"));
        assert!(!h.unsubscribe("alice", b));
        assert_eq!(h.connections(), 1);
    }

    #[test]
    fn full_queue_disconnects_the_slow_stream() {
        let h = hub();
        let (_id, rx, _) = h.subscribe("alice");
        let ev = Event::Presence { username: "bob".into(), online: true };
        for _ in 0..STREAM_QUEUE {
            h.send("alice", &ev);
        }
        assert!(h.is_online("alice"));
        h.send("alice", &ev);
        assert!(!h.is_online("alice"));
        assert_eq!(h.connections(), 0);
        drop(rx);
    }

    #[test]
    fn event_json_carries_its_type() {
        let ev = Event::Presence { username: "bob".into(), online: false };
        let j = serde_json::to_value(&ev).unwrap();
        assert_eq!(j["type"], "presence");
        assert_eq!(ev.name(), "presence");
    }
}
