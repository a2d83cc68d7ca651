//! Abuse limits on the two endpoints that create state: `/register` and `/call/initiate`, each
//! limited per client IP and per username with governor's GCRA keyed limiters. Limits run on
//! governor's monotonic clock, not the injected one: they bound real request rates.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Requests per minute allowed per key; the burst equals the per-minute figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// `/register` per client IP.
    pub register_per_ip: u32,
    /// `/register` per username.
    pub register_per_user: u32,
    /// `/call/initiate` per client IP.
    pub initiate_per_ip: u32,
    /// `/call/initiate` per caller.
    pub initiate_per_user: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { register_per_ip: 30, register_per_user: 10, initiate_per_ip: 60, initiate_per_user: 30 }
    }
}

/// The keyed limiters.
#[derive(Debug)]
pub struct Limiters {
    register_ip: DefaultKeyedRateLimiter<IpAddr>,
    register_user: DefaultKeyedRateLimiter<String>,
    initiate_ip: DefaultKeyedRateLimiter<IpAddr>,
    initiate_user: DefaultKeyedRateLimiter<String>,
}

fn quota(per_min: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN))
}

impl Limiters {
    /// Limiters with the given quotas (0 is treated as 1).
    pub fn new(l: RateLimits) -> Self {
        Self {
            register_ip: RateLimiter::keyed(quota(l.register_per_ip)),
            register_user: RateLimiter::keyed(quota(l.register_per_user)),
            initiate_ip: RateLimiter::keyed(quota(l.initiate_per_ip)),
            initiate_user: RateLimiter::keyed(quota(l.initiate_per_user)),
        }
    }

    /// Counts a registration attempt from `ip`. Fails with `RateLimited` when over quota.
    pub fn register_ip(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        check_ip(&self.register_ip, ip)
    }

    /// Counts an authenticated registration by `user`. Fails with `RateLimited` when over quota.
    pub fn register_user(&self, user: &str) -> Result<(), ApiError> {
        check_user(&self.register_user, user)
    }

    /// Counts a call initiation attempt from `ip`. Fails with `RateLimited` when over quota.
    pub fn initiate_ip(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        check_ip(&self.initiate_ip, ip)
    }

    /// Counts an authenticated call initiation by `user`. Fails with `RateLimited` when over quota.
    pub fn initiate_user(&self, user: &str) -> Result<(), ApiError> {
        check_user(&self.initiate_user, user)
    }

    /// Drops state for keys that are back at full quota (memory bound).
    pub fn shrink(&self) {
        self.register_ip.retain_recent();
        self.register_user.retain_recent();
        self.initiate_ip.retain_recent();
        self.initiate_user.retain_recent();
    }
}

// Per-IP limits run before the signature check (they bound work); per-user limits after it, so
// nobody can exhaust another user's quota with requests they could not sign.
fn check_ip(l: &DefaultKeyedRateLimiter<IpAddr>, ip: Option<IpAddr>) -> Result<(), ApiError> {
    match ip {
        Some(ip) => l.check_key(&ip).map_err(|_| ApiError::RateLimited),
        None => Ok(()),
    }
}

fn check_user(l: &DefaultKeyedRateLimiter<String>, user: &str) -> Result<(), ApiError> {
    l.check_key(&user.to_owned()).map_err(|_| ApiError::RateLimited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_per_user_and_per_ip() {
        let l = Limiters::new(RateLimits { register_per_ip: 3, register_per_user: 2, ..RateLimits::default() });
        let ip: IpAddr = [127, 0, 0, 1].into();
        l.register_ip(Some(ip)).unwrap();
        l.register_ip(Some(ip)).unwrap();
        l.register_ip(Some(ip)).unwrap();
        assert_eq!(l.register_ip(Some(ip)).unwrap_err().code(), crate::error::ErrorCode::RateLimited);
        l.register_ip(Some([10, 0, 0, 1].into())).unwrap();
        l.register_user("a").unwrap();
        l.register_user("a").unwrap();
        assert_eq!(l.register_user("a").unwrap_err().code(), crate::error::ErrorCode::RateLimited);
        l.register_user("b").unwrap();
        l.initiate_user("a").unwrap();
    }
}
