//! Rate limits (GCRA, from the `governor` crate): API requests keyed on the access token's
//! subject; login attempts keyed on the user name, on the client address, and all together. Over
//! a limit a request is answered 429 with `Retry-After`, before any database work or password
//! hashing. The limits live in each server process (with several nodes, each enforces its own:
//! a client spread across N nodes gets N times the rate, which bounds it all the same).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::Config;
use crate::error::{Error, Result};

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The server's rate limiters.
pub struct RateLimits {
    api: Option<Keyed>,
    login: Option<Keyed>,
    login_by_address: Option<Keyed>,
    login_total: Option<Keyed>,
    checks: AtomicU64,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("api", &self.api.is_some())
            .field("login", &self.login.is_some())
            .finish()
    }
}

/// Forget idle keys every this many checks, so memory follows the active users.
const RETAIN_EVERY: u64 = 4096;

impl RateLimits {
    /// The limits a configuration asks for.
    pub fn new(config: &Config) -> Self {
        let api = NonZeroU32::new(config.rate_limit).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let per_minute = |rate: u32, burst: u32| {
            NonZeroU32::new(rate).map(|rate| {
                let burst = NonZeroU32::new(burst).unwrap_or(rate);
                RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
            })
        };
        let login = per_minute(config.login_per_minute, config.login_burst);
        // A street office behind one NAT logs in many users at a shift's start: an address gets
        // six names' worth; the whole server sixty.
        let login_by_address = per_minute(
            config.login_per_minute.saturating_mul(6),
            config.login_burst.saturating_mul(6),
        );
        let login_total = per_minute(
            config.login_per_minute.saturating_mul(60),
            config.login_burst.saturating_mul(15),
        );
        Self {
            api,
            login,
            login_by_address,
            login_total,
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, limiter: Option<&Keyed>, key: String) -> Result<()> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Error::TooManyRequests {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// One API request of the user with this token subject.
    pub fn check_user(&self, subject: &str) -> Result<()> {
        self.check(self.api.as_ref(), subject.to_string())
    }

    /// One login attempt for this user name from this client address: the address's limit, then
    /// the name's, then the server-wide one — in that order, so one client's flood is turned away
    /// at its address and never spends the budget everyone shares.
    pub fn check_login(&self, username: &str, address: Option<std::net::IpAddr>) -> Result<()> {
        if let Some(address) = address {
            self.check(self.login_by_address.as_ref(), address.to_string())?;
        }
        self.check(self.login.as_ref(), username.to_lowercase())?;
        self.check(self.login_total.as_ref(), String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_429_with_a_wait_per_key() {
        let mut config = Config::new("/nonexistent");
        config.rate_limit = 1;
        config.rate_burst = 3;
        let limits = RateLimits::new(&config);
        for _ in 0..3 {
            limits.check_user("u1").unwrap();
        }
        match limits.check_user("u1") {
            Err(Error::TooManyRequests { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("{other:?}"),
        }
        limits.check_user("u2").unwrap();
        config.rate_limit = 0;
        let off = RateLimits::new(&config);
        for _ in 0..1000 {
            off.check_user("u1").unwrap();
        }
    }
}
