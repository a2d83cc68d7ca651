//! Every timer of the media transport in one place, with why it has its value, and the conversion
//! between our `std::time::Instant` clock and the `sans_io_time::Instant` the STUN/TURN crates take.

use std::time::{Duration, Instant};

/// Pacing of connectivity checks: at most one new probe every this long across all pairs (RFC 8445's
/// Ta is 50 ms for a full agent; 20 ms with at most 16 pairs keeps the rate at 50 probes/s, the rate of
/// the audio itself).
pub const CHECK_PACE: Duration = Duration::from_millis(20);
/// First retransmission interval of an unanswered check; doubled per retry up to [`CHECK_INTERVAL_MAX`].
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest gap between two checks of one unanswered pair.
pub const CHECK_INTERVAL_MAX: Duration = Duration::from_millis(800);
/// Unanswered pairs are given up (no more probes) this long after the transport started. Also the
/// bound after which a call with no working pair ends ("no media path").
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(8);
/// Direct pairs are preferred: a relayed pair is selected only when no direct pair has answered this
/// long after the start.
pub const RELAY_AFTER: Duration = Duration::from_secs(2);
/// The selected pair is probed this often (consent freshness and RTT).
pub const CONSENT_INTERVAL: Duration = Duration::from_secs(1);
/// Working pairs that are not selected are probed this often, which holds their NAT bindings and TURN
/// permissions open so a fallback is ready (NAT UDP timeouts are 30 s and up; RFC 4787 asks ≥ 2 min).
pub const STANDBY_INTERVAL: Duration = Duration::from_secs(5);
/// The selected pair with no probe answered for this long is considered broken.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(4);
/// A standby pair with no probe answered for this long (three standby probes) is considered broken.
pub const STANDBY_TIMEOUT: Duration = Duration::from_secs(16);
/// Receiver reports (and the keepalive of an otherwise idle selected pair).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A STUN Binding request to the TURN server this often keeps our NAT's binding towards it alive
/// while media does not flow through the relay (allocation refreshes alone come every few minutes).
pub const RELAY_KEEPALIVE: Duration = Duration::from_secs(15);
/// STUN Binding retransmission step during gathering (250, 500, 750 ms...).
pub const STUN_RETRANSMIT: Duration = Duration::from_millis(250);
/// STUN Binding attempts per server during gathering.
pub const STUN_RETRIES: u32 = 4;
/// How long gathering may hold up an OFFER or ANSWER.
pub const GATHER_TIMEOUT: Duration = Duration::from_millis(1500);

/// Conversions to the STUN/TURN crates' clock, which counts from an arbitrary origin (we use the
/// transport's start).
#[derive(Debug)]
pub struct Sans;

impl Sans {
    /// `now` on a clock whose zero is `epoch`.
    pub fn at(epoch: Instant, now: Instant) -> stun_proto::Instant {
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        stun_proto::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// Back to our clock.
    pub fn to_std(epoch: Instant, t: stun_proto::Instant) -> Instant {
        let d = t.saturating_duration_since(stun_proto::Instant::from_nanos(0));
        epoch + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trip_and_timer_relations() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(1234);
        assert_eq!(Sans::to_std(epoch, Sans::at(epoch, now)), now);
        assert_eq!(Sans::to_std(epoch, Sans::at(epoch, epoch - Duration::from_secs(1))), epoch);
        // Keepalives hold NAT bindings: every interval is at most 15 s.
        assert!(STANDBY_INTERVAL <= Duration::from_secs(15) && RELAY_KEEPALIVE <= Duration::from_secs(15));
        // Relay fallback comes well before the no-path bound, and consent outlives several probes.
        assert!(RELAY_AFTER * 3 < CHECK_TIMEOUT && CONSENT_TIMEOUT >= CONSENT_INTERVAL * 3);
        assert!(STANDBY_TIMEOUT >= STANDBY_INTERVAL * 3);
    }
}
