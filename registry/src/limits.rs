//! Abuse limits: governor GCRA keyed limiters on real (monotonic) time, not the injected clock, since
//! they bound real request rates.
//!
//! The design rule is that **a limit a stranger can fill never refuses a correctly signed request**:
//! - Signed routes are charged to the *verified* user, after the signature checked out
//!   ([`Limiters::signed_user`] for every signed request, plus narrower quotas for registrations, call
//!   initiations, ringing one particular callee and directory reads). Nobody can spend another user's
//!   quota without their key.
//! - The only per-address budget in front of signed routes counts *failed* authentications
//!   ([`Limiters::auth_failure`]). Once an address has failed too often, its further failing requests are
//!   answered `429` with `connection: close` instead of `401`, so a junk sender must reconnect for every
//!   attempt and cannot fill logs; requests from that address that do verify are served as usual. The
//!   work spent on a junk request before it fails is one Ed25519 verification (tens of microseconds),
//!   bounded overall by the connection cap and the request timeout (see `conn.rs`).
//! - Claiming a *new* name is limited per address ([`Limiters::register_new`]): a fresh identity key is
//!   free to make, so per-user limits cannot bound sign-ups. Existing users updating their record are only
//!   limited per user.
//! - Unsigned reads (`/fetch` without signature headers) are limited per address; the client signs its
//!   `/fetch`, which is then charged to the user instead.
//!
//! Addresses are keyed by IPv4 address or IPv6 /64 prefix (one host usually owns a whole /64).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Requests per minute allowed per key; the burst equals the per-minute figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// New names claimed (first `/register` of a name) per client address.
    pub register_per_ip: u32,
    /// `/register` per verified user.
    pub register_per_user: u32,
    /// `/call/initiate` per verified caller.
    pub initiate_per_user: u32,
    /// `/call/initiate` from one caller to one particular callee.
    pub ring_per_pair: u32,
    /// Every signed request, per verified user.
    pub signed_per_user: u32,
    /// Directory reads (`/users` pages, signed `/fetch`) per verified user.
    pub reads_per_user: u32,
    /// Unsigned `/fetch` per client address.
    pub public_reads_per_ip: u32,
    /// Requests that fail authentication, per client address, before they are answered 429.
    pub auth_failures_per_ip: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            register_per_ip: 30,
            register_per_user: 10,
            initiate_per_user: 30,
            ring_per_pair: 6,
            signed_per_user: 600,
            reads_per_user: 120,
            public_reads_per_ip: 60,
            auth_failures_per_ip: 60,
        }
    }
}

impl RateLimits {
    /// Every quota set to `n` per minute (`--rate-per-minute`).
    pub fn all(n: u32) -> Self {
        Self {
            register_per_ip: n,
            register_per_user: n,
            initiate_per_user: n,
            ring_per_pair: n,
            signed_per_user: n,
            reads_per_user: n,
            public_reads_per_ip: n,
            auth_failures_per_ip: n,
        }
    }
}

/// The keyed limiters.
#[derive(Debug)]
pub struct Limiters {
    register_new_ip: DefaultKeyedRateLimiter<IpAddr>,
    register_user: DefaultKeyedRateLimiter<String>,
    initiate_user: DefaultKeyedRateLimiter<String>,
    ring_pair: DefaultKeyedRateLimiter<(String, String)>,
    signed_user: DefaultKeyedRateLimiter<String>,
    reads_user: DefaultKeyedRateLimiter<String>,
    public_ip: DefaultKeyedRateLimiter<IpAddr>,
    auth_failures_ip: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(per_min: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN))
}

/// The key an address is limited under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiters {
    /// Limiters with the given quotas (0 is treated as 1).
    pub fn new(l: RateLimits) -> Self {
        Self {
            register_new_ip: RateLimiter::keyed(quota(l.register_per_ip)),
            register_user: RateLimiter::keyed(quota(l.register_per_user)),
            initiate_user: RateLimiter::keyed(quota(l.initiate_per_user)),
            ring_pair: RateLimiter::keyed(quota(l.ring_per_pair)),
            signed_user: RateLimiter::keyed(quota(l.signed_per_user)),
            reads_user: RateLimiter::keyed(quota(l.reads_per_user)),
            public_ip: RateLimiter::keyed(quota(l.public_reads_per_ip)),
            auth_failures_ip: RateLimiter::keyed(quota(l.auth_failures_per_ip)),
        }
    }

    /// Counts a verified signed request by `user`. Fails with `RateLimited` when over quota.
    pub fn signed_user(&self, user: &str) -> Result<(), ApiError> {
        check_user(&self.signed_user, user)
    }

    /// Counts a verified registration: a new name is charged to the client address `ip` (sign-ups), an
    /// update to the user. Fails with `RateLimited` when over quota.
    pub fn register(&self, ip: Option<IpAddr>, user: &str, new_name: bool) -> Result<(), ApiError> {
        if new_name {
            check_ip(&self.register_new_ip, ip)?;
        }
        check_user(&self.register_user, user)
    }

    /// Counts a verified call initiation from `caller` to `callee`. Fails with `RateLimited` when the
    /// caller is over their quota or has rung this callee too often.
    pub fn initiate(&self, caller: &str, callee: &str) -> Result<(), ApiError> {
        check_user(&self.initiate_user, caller)?;
        self.ring_pair.check_key(&(caller.to_owned(), callee.to_owned())).map_err(|_| ApiError::RateLimited)
    }

    /// Counts a directory read (`/users` page, signed `/fetch`) by a verified user. Fails with
    /// `RateLimited` when over quota.
    pub fn read_user(&self, user: &str) -> Result<(), ApiError> {
        check_user(&self.reads_user, user)
    }

    /// Counts an unsigned read from `ip`. Fails with `RateLimited` when over quota.
    pub fn public_read(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        check_ip(&self.public_ip, ip)
    }

    /// Charges a failed authentication (`err`) to the address `ip` and returns the error to answer with:
    /// `err` itself while the address is within its budget, `AuthFailuresLimited` (429) after that.
    pub fn auth_failure(&self, ip: Option<IpAddr>, err: ApiError) -> ApiError {
        match ip {
            Some(ip) if self.auth_failures_ip.check_key(&ip_key(ip)).is_err() => ApiError::AuthFailuresLimited,
            _ => err,
        }
    }

    /// Drops state for keys that are back at full quota (memory bound).
    pub fn shrink(&self) {
        self.register_new_ip.retain_recent();
        self.register_user.retain_recent();
        self.initiate_user.retain_recent();
        self.ring_pair.retain_recent();
        self.signed_user.retain_recent();
        self.reads_user.retain_recent();
        self.public_ip.retain_recent();
        self.auth_failures_ip.retain_recent();
    }
}

fn check_ip(l: &DefaultKeyedRateLimiter<IpAddr>, ip: Option<IpAddr>) -> Result<(), ApiError> {
    match ip {
        Some(ip) => l.check_key(&ip_key(ip)).map_err(|_| ApiError::RateLimited),
        None => Ok(()),
    }
}

fn check_user(l: &DefaultKeyedRateLimiter<String>, user: &str) -> Result<(), ApiError> {
    l.check_key(&user.to_owned()).map_err(|_| ApiError::RateLimited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn new_names_per_ip_updates_per_user() {
        let l = Limiters::new(RateLimits { register_per_ip: 2, register_per_user: 2, ..RateLimits::default() });
        let ip: IpAddr = [127, 0, 0, 1].into();
        l.register(Some(ip), "a", true).unwrap();
        l.register(Some(ip), "b", true).unwrap();
        assert_eq!(l.register(Some(ip), "c", true).unwrap_err().code(), ErrorCode::RateLimited);
        // Updates by existing users are not charged to the address.
        l.register(Some(ip), "d", false).unwrap();
        l.register(Some(ip), "d", false).unwrap();
        assert_eq!(l.register(Some(ip), "d", false).unwrap_err().code(), ErrorCode::RateLimited);
        l.register(Some([10, 0, 0, 1].into()), "e", true).unwrap();
    }

    #[test]
    fn ring_limit_is_per_pair() {
        let l = Limiters::new(RateLimits { ring_per_pair: 2, ..RateLimits::default() });
        l.initiate("mallory", "bob").unwrap();
        l.initiate("mallory", "bob").unwrap();
        assert_eq!(l.initiate("mallory", "bob").unwrap_err().code(), ErrorCode::RateLimited);
        l.initiate("mallory", "carol").unwrap();
        l.initiate("alice", "bob").unwrap();
    }

    #[test]
    fn auth_failures_only_change_the_answer_to_failures() {
        let l = Limiters::new(RateLimits { auth_failures_per_ip: 2, ..RateLimits::default() });
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(l.auth_failure(ip, ApiError::BadSignature).code(), ErrorCode::BadSignature);
        assert_eq!(l.auth_failure(ip, ApiError::BadSignature).code(), ErrorCode::BadSignature);
        assert!(matches!(l.auth_failure(ip, ApiError::BadSignature), ApiError::AuthFailuresLimited));
        // Verified requests are charged to users, never to this budget.
        l.signed_user("alice").unwrap();
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(ip_key(mapped), IpAddr::from([192, 0, 2, 1]));
    }
}
