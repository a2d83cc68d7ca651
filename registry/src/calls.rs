//! Call sessions: the signaling state machine, in memory, with no I/O and no clock of its own.
//!
//! ```text
//! ringing ──accept──▶ accepted ──confirm──▶ active ──hangup──▶ ended
//!    │ reject ▶ rejected     │ cancel ▶ cancelled
//!    │ cancel ▶ cancelled    │ no confirm within the ringing timeout ▶ failed
//!    │ timeout ▶ missed      └ hangup ▶ ended
//! initiate while too many calls already ring for the callee ▶ busy
//! ```
//!
//! Admission (call waiting): ringing does not make anyone busy. A user is *engaged* while they place a
//! call (any live call they are the caller of) or after they answered one (accepted or active as callee).
//! An engaged user cannot place another call (`already_in_call`) nor accept a second one; calls to a user
//! ring whether or not they are engaged, so the callee's client sees every ringing call and decides
//! (show it as waiting, take it after hanging up, let it ring out). The registry never tells a caller that
//! the callee is in a call: that would reveal to anyone who can register a name when, and with whom (by
//! probing both), a user talks. The only `busy` left is the cap on calls ringing for one callee at once
//! ([`CallBook::with_max_ringing`]), which bounds what a caller (or many) can pile up on a callee; the
//! rate of rings from one caller to one callee is limited in `limits.rs`.
//!
//! Every operation takes `now` (Unix ms) from the caller and returns the events to deliver, so the
//! whole machine, timeouts included, is tested in virtual time. Terminal calls stay readable for
//! `purge_after` and are then forgotten. Handshake messages are stored as the opaque, already
//! verified bytes the parties sent; the registry relays them and never sees media keys.

use std::collections::HashMap;

use crate::error::ApiError;
use crate::events::{Event, IncomingCall};
use qvoice_proto::CallId;

pub use qvoice_wire::{CallState, EndKind};

/// One call session.
#[derive(Debug, Clone)]
pub struct Call {
    /// Random id chosen by the caller (inside the signed offer).
    pub id: CallId,
    /// Caller's username.
    pub caller: String,
    /// Callee's username.
    pub callee: String,
    /// Current state.
    pub state: CallState,
    /// Verified OFFER bytes.
    pub offer: Vec<u8>,
    /// Verified ANSWER bytes, once accepted.
    pub answer: Option<Vec<u8>>,
    /// Verified REVEAL bytes, once confirmed.
    pub reveal: Option<Vec<u8>>,
    /// When the offer arrived (Unix ms).
    pub created_ms: u64,
    /// Last transition (Unix ms).
    pub updated_ms: u64,
    /// Why it ended, if it did and a reason is known.
    pub reason: Option<String>,
    /// The ending party's kind of ending, if it gave one.
    pub end_kind: Option<EndKind>,
}

/// How a party (or the registry) ends a call: a kind for the other party's client and a text for people.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// Why, for the other party's client (absent: a plain hang-up).
    pub kind: Option<EndKind>,
    /// Why, for people.
    pub reason: Option<String>,
}

impl From<&str> for Ending {
    fn from(reason: &str) -> Self {
        Self { kind: None, reason: Some(reason.to_owned()) }
    }
}

impl From<String> for Ending {
    fn from(reason: String) -> Self {
        Self { kind: None, reason: Some(reason) }
    }
}

/// What a party asks to do with a call.
#[derive(Debug)]
pub enum Action {
    /// Callee answers with verified ANSWER bytes.
    Accept(Vec<u8>),
    /// Caller completes with verified REVEAL bytes.
    Confirm(Vec<u8>),
    /// Callee declines.
    Reject,
    /// Caller gives up before the call is active.
    Cancel,
    /// Either party ends the call.
    Hangup,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Self::Accept(_) => "accept",
            Self::Confirm(_) => "confirm",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
            Self::Hangup => "hangup",
        }
    }
}

/// An event addressed to one user.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Recipient username.
    pub to: String,
    /// What happened.
    pub event: Event,
}

/// Default most calls ringing for one callee at once.
pub const MAX_RINGING_PER_CALLEE: usize = 8;

/// All known calls.
#[derive(Debug)]
pub struct CallBook {
    calls: HashMap<CallId, Call>,
    ringing_timeout_ms: u64,
    purge_after_ms: u64,
    max_ringing: usize,
}

impl CallBook {
    /// An empty book with the given ringing timeout and purge delay (milliseconds).
    pub fn new(ringing_timeout_ms: u64, purge_after_ms: u64) -> Self {
        Self { calls: HashMap::new(), ringing_timeout_ms, purge_after_ms, max_ringing: MAX_RINGING_PER_CALLEE }
    }

    /// Sets the most calls that may ring for one callee at once (at least 1).
    pub fn with_max_ringing(mut self, n: usize) -> Self {
        self.max_ringing = n.max(1);
        self
    }

    /// The ringing timeout in milliseconds.
    pub fn ringing_timeout_ms(&self) -> u64 {
        self.ringing_timeout_ms
    }

    /// The call `id`, if known.
    pub fn get(&self, id: &CallId) -> Option<&Call> {
        self.calls.get(id)
    }

    /// Number of calls per state.
    pub fn counts(&self) -> HashMap<CallState, usize> {
        let mut m = HashMap::new();
        for c in self.calls.values() {
            *m.entry(c.state).or_insert(0) += 1;
        }
        m
    }

    /// Whether `user` is placing a call, or answered one that is still live (see the module docs).
    /// Calls merely ringing *for* the user do not count.
    fn engaged(&self, user: &str, except: Option<&CallId>) -> bool {
        self.calls.values().any(|c| {
            Some(&c.id) != except
                && c.state.is_live()
                && (c.caller == user || (c.callee == user && c.state != CallState::Ringing))
        })
    }

    fn ringing_for(&self, callee: &str) -> usize {
        self.calls.values().filter(|c| c.state == CallState::Ringing && c.callee == callee).count()
    }

    /// Records a new, already verified offer from `caller` to `callee`.
    ///
    /// Fails with `CallExists` for a reused id, `AlreadyInCall` when the caller is engaged (placing or
    /// in another call), and `Busy` when the callee already has the maximum of calls ringing; the busy
    /// attempt is still recorded (state `busy`) so the caller can read it back, and nothing else
    /// changes. Whether the callee is in a call does not matter (call waiting).
    pub fn initiate(
        &mut self,
        now: u64,
        id: CallId,
        caller: &str,
        callee: &str,
        offer: Vec<u8>,
    ) -> Result<Vec<Notice>, ApiError> {
        if self.calls.contains_key(&id) {
            return Err(ApiError::CallExists);
        }
        if self.engaged(caller, None) {
            return Err(ApiError::AlreadyInCall);
        }
        let busy = self.ringing_for(callee) >= self.max_ringing;
        let call = Call {
            id,
            caller: caller.to_owned(),
            callee: callee.to_owned(),
            state: if busy { CallState::Busy } else { CallState::Ringing },
            offer,
            answer: None,
            reveal: None,
            created_ms: now,
            updated_ms: now,
            reason: busy.then(|| "too many calls ringing".to_owned()),
            end_kind: None,
        };
        let notice = Notice { to: callee.to_owned(), event: Event::IncomingCall(self.incoming(&call)) };
        self.calls.insert(id, call);
        if busy {
            return Err(ApiError::Busy(callee.to_owned()));
        }
        Ok(vec![notice])
    }

    /// The push/pending view of a ringing call.
    pub fn incoming(&self, call: &Call) -> IncomingCall {
        IncomingCall {
            call_id: call.id.to_hex(),
            caller: call.caller.clone(),
            offer: qvoice_proto::b64::encode(&call.offer),
            created_ms: call.created_ms,
            expires_ms: call.created_ms.saturating_add(self.ringing_timeout_ms),
        }
    }

    /// Calls ringing for `callee`, oldest first.
    pub fn pending_for(&self, callee: &str) -> Vec<IncomingCall> {
        let mut v: Vec<&Call> =
            self.calls.values().filter(|c| c.state == CallState::Ringing && c.callee == callee).collect();
        v.sort_by_key(|c| c.created_ms);
        v.into_iter().map(|c| self.incoming(c)).collect()
    }

    /// Checks that `user` may do `action` to call `id` in its current state, without changing it.
    ///
    /// Fails with `UnknownCall`, `Forbidden` (wrong party) or `WrongState`.
    pub fn check(&self, id: &CallId, user: &str, action: &Action) -> Result<&Call, ApiError> {
        let call = self.calls.get(id).ok_or(ApiError::UnknownCall)?;
        let is_caller = call.caller == user;
        let is_callee = call.callee == user;
        let role_ok = match action {
            Action::Accept(_) | Action::Reject => is_callee,
            Action::Confirm(_) | Action::Cancel => is_caller,
            Action::Hangup => is_caller || is_callee,
        };
        if !role_ok {
            return Err(ApiError::Forbidden(match action {
                Action::Accept(_) | Action::Reject => "only the callee may accept or reject a call",
                Action::Confirm(_) | Action::Cancel => "only the caller may confirm or cancel a call",
                Action::Hangup => "only the two parties may hang up a call",
            }));
        }
        let state_ok = match action {
            Action::Accept(_) | Action::Reject => call.state == CallState::Ringing,
            Action::Confirm(_) => call.state == CallState::Accepted,
            Action::Cancel => matches!(call.state, CallState::Ringing | CallState::Accepted),
            Action::Hangup => call.state.is_live(),
        };
        if !state_ok {
            return Err(ApiError::WrongState(call.state.as_str()));
        }
        if matches!(action, Action::Accept(_)) && self.engaged(user, Some(id)) {
            return Err(ApiError::AlreadyInCall);
        }
        Ok(call)
    }

    /// Applies `action` by `user` to call `id` and returns the events to deliver.
    ///
    /// Fails like [`CallBook::check`]; on failure nothing changes.
    pub fn act(
        &mut self,
        now: u64,
        id: &CallId,
        user: &str,
        action: Action,
        ending: Option<Ending>,
    ) -> Result<Vec<Notice>, ApiError> {
        self.check(id, user, &action)?;
        let call = self.calls.get_mut(id).ok_or(ApiError::UnknownCall)?;
        tracing::debug!(call = %call.id.to_hex(), action = action.name(), "call transition");
        call.updated_ms = now;
        let call_id = call.id.to_hex();
        let notices = match action {
            Action::Accept(answer) => {
                let ev = Event::CallAccepted {
                    call_id,
                    callee: call.callee.clone(),
                    answer: qvoice_proto::b64::encode(&answer),
                };
                call.answer = Some(answer);
                call.state = CallState::Accepted;
                vec![Notice { to: call.caller.clone(), event: ev }]
            }
            Action::Confirm(reveal) => {
                let ev = Event::CallConfirmed {
                    call_id,
                    caller: call.caller.clone(),
                    reveal: qvoice_proto::b64::encode(&reveal),
                };
                call.reveal = Some(reveal);
                call.state = CallState::Active;
                vec![Notice { to: call.callee.clone(), event: ev }]
            }
            Action::Reject => end(call, CallState::Rejected, ending.unwrap_or_default()),
            Action::Cancel => end(call, CallState::Cancelled, ending.unwrap_or_default()),
            Action::Hangup => end(call, CallState::Ended, ending.unwrap_or_default()),
        };
        Ok(notices)
    }

    /// Times out ringing calls (→ missed) and stalled handshakes (→ failed), and forgets terminal
    /// calls older than the purge delay. Returns the events to deliver.
    pub fn sweep(&mut self, now: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        for call in self.calls.values_mut() {
            let expired = now.saturating_sub(call.updated_ms) >= self.ringing_timeout_ms;
            match call.state {
                CallState::Ringing if expired => {
                    call.updated_ms = now;
                    out.extend(end(call, CallState::Missed, "no answer".into()));
                }
                CallState::Accepted if expired => {
                    call.updated_ms = now;
                    out.extend(end(call, CallState::Failed, "handshake not completed".into()));
                }
                _ => {}
            }
        }
        let purge = self.purge_after_ms;
        self.calls.retain(|_, c| c.state.is_live() || now.saturating_sub(c.updated_ms) < purge);
        out
    }

    /// The earliest time (Unix ms) at which [`CallBook::sweep`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.calls
            .values()
            .map(|c| {
                if c.state.is_live() && c.state != CallState::Active {
                    c.updated_ms.saturating_add(self.ringing_timeout_ms)
                } else if c.state.is_live() {
                    u64::MAX
                } else {
                    c.updated_ms.saturating_add(self.purge_after_ms)
                }
            })
            .filter(|&t| t != u64::MAX)
            .min()
    }
}

fn end(call: &mut Call, state: CallState, ending: Ending) -> Vec<Notice> {
    call.state = state;
    call.reason = ending.reason;
    call.end_kind = ending.kind;
    let ev = Event::CallEnded { call_id: call.id.to_hex(), state, reason: call.reason.clone(), kind: ending.kind };
    vec![Notice { to: call.caller.clone(), event: ev.clone() }, Notice { to: call.callee.clone(), event: ev }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const T: u64 = 45_000;
    const P: u64 = 300_000;

    fn id(n: u8) -> CallId {
        CallId::from_hex(&format!("{n:02x}").repeat(16)).unwrap()
    }

    fn ringing(book: &mut CallBook, n: u8) -> CallId {
        let id = id(n);
        book.initiate(1_000, id, "bob", "alice", vec![1, 2, 3]).unwrap();
        id
    }

    #[test]
    fn full_call_walks_every_live_state_and_notifies_the_other_party() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1);
        assert_eq!(b.pending_for("alice").len(), 1);
        let n = b.act(2_000, &c, "alice", Action::Accept(vec![9]), None).unwrap();
        assert_eq!(n[0].to, "bob");
        assert!(matches!(n[0].event, Event::CallAccepted { .. }));
        assert!(b.pending_for("alice").is_empty());
        let n = b.act(3_000, &c, "bob", Action::Confirm(vec![8]), None).unwrap();
        assert_eq!(n[0].to, "alice");
        assert_eq!(b.get(&c).unwrap().state, CallState::Active);
        let n = b.act(4_000, &c, "alice", Action::Hangup, Some("bye".into())).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(b.get(&c).unwrap().state, CallState::Ended);
    }

    #[test]
    fn roles_and_states_are_enforced_without_changing_anything() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1);
        let e = b.act(2_000, &c, "bob", Action::Accept(vec![]), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Forbidden);
        let e = b.act(2_000, &c, "eve", Action::Hangup, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Forbidden);
        let e = b.act(2_000, &c, "bob", Action::Confirm(vec![]), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::WrongState);
        assert_eq!(b.get(&c).unwrap().state, CallState::Ringing);
        assert_eq!(b.get(&c).unwrap().updated_ms, 1_000);
        b.act(2_000, &c, "alice", Action::Accept(vec![]), None).unwrap();
        let e = b.act(2_500, &c, "alice", Action::Accept(vec![]), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::WrongState);
        let e = b.act(2_500, &id(7), "alice", Action::Hangup, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownCall);
    }

    #[test]
    fn ringing_times_out_to_missed_exactly_at_the_deadline() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1);
        assert_eq!(b.next_deadline(), Some(1_000 + T));
        assert!(b.sweep(1_000 + T - 1).is_empty());
        let n = b.sweep(1_000 + T);
        assert_eq!(n.len(), 2);
        assert_eq!(b.get(&c).unwrap().state, CallState::Missed);
        let e = b.act(1_000 + T + 1, &c, "alice", Action::Accept(vec![]), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::WrongState);
    }

    #[test]
    fn terminal_calls_are_purged_after_the_delay_live_ones_never() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1);
        b.act(2_000, &c, "alice", Action::Reject, None).unwrap();
        let d = id(2);
        b.initiate(2_000, d, "carol", "dave", vec![]).unwrap();
        b.act(2_000, &d, "dave", Action::Accept(vec![]), None).unwrap();
        b.act(2_000, &d, "carol", Action::Confirm(vec![]), None).unwrap();
        b.sweep(2_000 + P - 1);
        assert!(b.get(&c).is_some());
        b.sweep(2_000 + P);
        assert!(b.get(&c).is_none());
        assert_eq!(b.get(&d).unwrap().state, CallState::Active);
    }

    #[test]
    fn ringing_makes_nobody_busy_and_every_ringing_call_is_listed() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1); // bob -> alice
        b.initiate(1_500, id(2), "carol", "alice", vec![]).unwrap();
        assert_eq!(b.pending_for("alice").len(), 2);
        // The callee of ringing calls may still dial out.
        b.initiate(1_600, id(3), "alice", "dave", vec![]).unwrap();
        // A caller places one call at a time.
        let e = b.initiate(1_700, id(4), "bob", "carol", vec![]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyInCall);
        let e = b.initiate(1_700, c, "x", "y", vec![]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CallExists);
        assert_eq!(b.get(&c).unwrap().state, CallState::Ringing);
    }

    #[test]
    fn calls_ring_for_a_callee_in_an_active_call_who_cannot_take_two() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1);
        b.act(2_000, &c, "alice", Action::Accept(vec![]), None).unwrap();
        b.act(2_000, &c, "bob", Action::Confirm(vec![]), None).unwrap();
        // No busy for carol: the call rings (alice's client shows it as waiting).
        b.initiate(2_500, id(2), "carol", "alice", vec![]).unwrap();
        assert_eq!(b.get(&id(2)).unwrap().state, CallState::Ringing);
        // Alice must hang up before she can take it.
        let e = b.act(2_600, &id(2), "alice", Action::Accept(vec![]), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyInCall);
        let e = b.initiate(2_600, id(3), "alice", "dave", vec![]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyInCall);
        b.act(2_700, &c, "alice", Action::Hangup, None).unwrap();
        b.act(2_800, &id(2), "alice", Action::Accept(vec![]), None).unwrap();
    }

    #[test]
    fn too_many_ringing_calls_for_one_callee_is_busy_and_recorded() {
        let mut b = CallBook::new(T, P).with_max_ringing(2);
        b.initiate(1_000, id(1), "u1", "alice", vec![]).unwrap();
        b.initiate(1_000, id(2), "u2", "alice", vec![]).unwrap();
        let e = b.initiate(1_000, id(3), "u3", "alice", vec![]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Busy);
        assert_eq!(b.get(&id(3)).unwrap().state, CallState::Busy);
        assert_eq!(b.pending_for("alice").len(), 2);
    }

    #[test]
    fn unconfirmed_accept_fails_after_the_timeout() {
        let mut b = CallBook::new(T, P);
        let c = ringing(&mut b, 1);
        b.act(2_000, &c, "alice", Action::Accept(vec![]), None).unwrap();
        b.sweep(2_000 + T);
        assert_eq!(b.get(&c).unwrap().state, CallState::Failed);
    }
}
