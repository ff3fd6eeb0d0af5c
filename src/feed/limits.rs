//! Write rate limits: token buckets (GCRA, from `governor`) per user and per
//! tenant. Only writes are counted (`POST /api/events`, `post_event`); a
//! refused write creates nothing and answers `rate_limited` with the seconds
//! to wait.
//!
//! The clock is tokio's, so tests drive the buckets with paused time. Keys
//! come only from authenticated callers (users and tenants their tokens
//! allow); idle keys are dropped by [`RateLimits::sweep`].

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::auth::Principal;
use super::error::FeedError;
use crate::config::Rate;

/// A governor clock on tokio's time (so paused time works in tests).
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock { start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.start)
    }
}

type Keyed = RateLimiter<String, DashMapStateStore<String>, TokioClock, NoOpMiddleware<Duration>>;

/// Which bucket refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's bucket.
    User,
    /// The tenant's bucket.
    Tenant,
}

impl Scope {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Tenant => "tenant",
        }
    }
}

/// The write rate limits.
pub struct RateLimits {
    user: Option<Keyed>,
    tenant: Option<Keyed>,
    clock: TokioClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("user", &self.user.is_some())
            .field("tenant", &self.tenant.is_some())
            .finish()
    }
}

fn quota(rate: Rate) -> Option<Quota> {
    let period = rate.per.checked_div(rate.count.max(1))?;
    let burst = NonZeroU32::new(rate.burst.max(1))?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

impl RateLimits {
    /// Limits per user and per tenant (`None`: that limit is off).
    pub fn new(user: Option<Rate>, tenant: Option<Rate>) -> Self {
        let clock = TokioClock::default();
        let make = |r: Option<Rate>| r.and_then(quota).map(|q| RateLimiter::dashmap_with_clock(q, clock.clone()));
        RateLimits { user: make(user), tenant: make(tenant), clock }
    }

    /// No limits.
    pub fn off() -> Self {
        Self::new(None, None)
    }

    /// Takes one write from the caller's buckets: the tenant's first, then the
    /// user's. On refusal, says which bucket and how long to wait.
    pub fn check(&self, who: &Principal) -> Result<(), (Scope, FeedError)> {
        for (scope, limiter, key) in [(Scope::Tenant, &self.tenant, &who.tenant), (Scope::User, &self.user, &who.user)]
        {
            let Some(limiter) = limiter else { continue };
            if let Err(not_until) = limiter.check_key(key) {
                let wait = not_until.earliest_possible().duration_since(self.clock.now());
                let retry_after = Duration::from(wait).as_secs_f64().ceil().max(1.0) as u64;
                return Err((scope, FeedError::RateLimited { retry_after }));
            }
        }
        Ok(())
    }

    /// Forgets buckets that are full again (idle keys), bounding memory.
    pub fn sweep(&self) {
        for limiter in [&self.user, &self.tenant].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys currently tracked (users + tenants).
    pub fn tracked(&self) -> usize {
        [&self.user, &self.tenant].into_iter().flatten().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::auth::Role;

    fn who(user: &str, tenant: &str) -> Principal {
        Principal { user: user.into(), tenant: tenant.into(), role: Role::Admin }
    }

    fn rate(count: u32, burst: u32) -> Option<Rate> {
        Some(Rate { count, per: Duration::from_secs(1), burst })
    }

    #[tokio::test(start_paused = true)]
    async fn user_bucket_allows_the_burst_then_refuses_then_refills() {
        let limits = RateLimits::new(rate(10, 20), None);
        let a = who("a", "t");
        for i in 0..20 {
            assert!(limits.check(&a).is_ok(), "write {i} within the burst");
        }
        let (scope, err) = limits.check(&a).unwrap_err();
        assert_eq!(scope, Scope::User);
        assert_eq!(err, FeedError::RateLimited { retry_after: 1 });
        // Another user is not affected.
        assert!(limits.check(&who("b", "t")).is_ok());
        // 10/s: after 100 ms one more write is allowed, and only one.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limits.check(&a).is_ok());
        assert!(limits.check(&a).is_err());
        // After a full second, ten more.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..10 {
            assert!(limits.check(&a).is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tenant_bucket_is_shared_by_its_users() {
        let limits = RateLimits::new(rate(100, 200), rate(1, 3));
        assert!(limits.check(&who("a", "t")).is_ok());
        assert!(limits.check(&who("b", "t")).is_ok());
        assert!(limits.check(&who("c", "t")).is_ok());
        let (scope, err) = limits.check(&who("d", "t")).unwrap_err();
        assert_eq!(scope, Scope::Tenant);
        assert_eq!(err, FeedError::RateLimited { retry_after: 1 });
        assert!(limits.check(&who("a", "other")).is_ok(), "other tenants have their own bucket");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_rounds_up_to_whole_seconds() {
        let limits = RateLimits::new(Some(Rate { count: 1, per: Duration::from_secs(60), burst: 1 }), None);
        let a = who("a", "t");
        assert!(limits.check(&a).is_ok());
        assert_eq!(limits.check(&a).unwrap_err().1, FeedError::RateLimited { retry_after: 60 });
        tokio::time::advance(Duration::from_millis(59_500)).await;
        assert_eq!(limits.check(&a).unwrap_err().1, FeedError::RateLimited { retry_after: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn off_limits_allow_everything_and_sweep_forgets_idle_keys() {
        let off = RateLimits::off();
        for _ in 0..10_000 {
            assert!(off.check(&who("a", "t")).is_ok());
        }
        let limits = RateLimits::new(rate(10, 10), rate(10, 10));
        for u in 0..50 {
            assert!(limits.check(&who(&format!("u{u}"), &format!("t{u}"))).is_ok());
        }
        assert_eq!(limits.tracked(), 100);
        tokio::time::advance(Duration::from_secs(5)).await;
        limits.sweep();
        assert_eq!(limits.tracked(), 0);
    }
}
