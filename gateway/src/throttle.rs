//! Throttling of password guesses, per address and account and per address, with lockouts
//! that double: the web console's sign-ins and SMTP AUTH. An account is never locked as
//! such, so no one can lock an administrator (or a mail user) out from everywhere; an
//! address that keeps guessing gets slower. Attempts still being checked count against the
//! limit, so the decision comes before the (costly) hash, parallel guesses included.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wrong passwords from one address for one account before that pair is locked out.
pub const MAX_FAILURES: u32 = 5;
/// Wrong passwords from one address, whatever the accounts, before the address is locked
/// out (several administrators may share one).
pub const MAX_FAILURES_ADDRESS: u32 = 20;
/// Failures further apart than this start the count again.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first lockout; each further one of the same pair (or address) doubles it.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(60);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(60 * 60);
/// A pair (or address) without a failure for this long starts again from the first lockout.
pub const FORGET: Duration = Duration::from_secs(24 * 60 * 60);
/// Pairs and addresses tracked at most (the oldest idle one makes room).
pub const MAX_TRACKED: usize = 10_000;

/// Failed attempts per address and account, and per address: a lockout after
/// [`MAX_FAILURES`] (or [`MAX_FAILURES_ADDRESS`]), doubling each time up to
/// [`MAX_LOCKOUT`]. Attempts still being checked count against the limit too, so parallel
/// guesses cannot all pass the check before the first failure is recorded.
#[derive(Debug, Default)]
pub struct Throttle {
    keys: HashMap<String, Failures>,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    in_flight: u32,
    last: Instant,
    locks: u32,
    locked_until: Option<Instant>,
}

/// The throttle's keys of one attempt: the address with the account (as its store writes
/// it; `None` for text that names no account, all such counted together), and the address.
pub fn keys(account: Option<&str>, ip: &str) -> [String; 2] {
    let name = account.unwrap_or("(not an account name)");
    // Bounded like every key: an address is at most 254 characters.
    let name: String = name.chars().take(256).collect();
    [format!("{ip} {name}"), format!("ip:{ip}")]
}

fn limit(key: &str) -> u32 {
    if key.starts_with("ip:") {
        MAX_FAILURES_ADDRESS
    } else {
        MAX_FAILURES
    }
}

fn lockout(locks: u32) -> Duration {
    FIRST_LOCKOUT
        .saturating_mul(1u32 << locks.saturating_sub(1).min(16))
        .min(MAX_LOCKOUT)
}

impl Throttle {
    /// Starts an attempt under `keys`: refused (seconds to wait) while any is locked or
    /// has as many attempts under way as failures left.
    pub fn begin(&mut self, keys: &[String], now: Instant) -> Result<(), u64> {
        let mut wait = 0;
        for k in keys {
            if let Some(f) = self.keys.get(k) {
                if let Some(t) = f.locked_until.filter(|&t| t > now) {
                    wait = wait.max((t - now).as_secs().max(1));
                } else {
                    let count = if now.duration_since(f.last) > WINDOW {
                        0
                    } else {
                        f.count
                    };
                    if count + f.in_flight >= limit(k) {
                        wait = wait.max(1);
                    }
                }
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for k in keys {
            self.entry(k, now).in_flight += 1;
        }
        Ok(())
    }

    /// Ends an attempt [`Throttle::begin`] started: a failure counts (and may lock), a
    /// success clears the first key's (the address with the account).
    pub fn end(&mut self, keys: &[String], ok: bool, now: Instant) {
        for (i, k) in keys.iter().enumerate() {
            let f = self.entry(k, now);
            f.in_flight = f.in_flight.saturating_sub(1);
            if ok {
                if i == 0 {
                    f.count = 0;
                    f.locks = 0;
                }
                continue;
            }
            if now.duration_since(f.last) > FORGET {
                f.locks = 0;
            }
            if now.duration_since(f.last) > WINDOW {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
            if f.count >= limit(k) {
                f.locks += 1;
                f.locked_until = Some(now + lockout(f.locks));
                f.count = 0;
            }
        }
    }

    /// Ends an attempt that could not be checked (neither failure nor success).
    pub fn abandon(&mut self, keys: &[String]) {
        for k in keys {
            if let Some(f) = self.keys.get_mut(k) {
                f.in_flight = f.in_flight.saturating_sub(1);
            }
        }
    }

    /// Seconds until `keys` may try again (0: now).
    pub fn locked(&self, keys: &[String], now: Instant) -> u64 {
        keys.iter()
            .filter_map(|k| self.keys.get(k)?.locked_until)
            .filter(|&t| t > now)
            .map(|t| (t - now).as_secs().max(1))
            .max()
            .unwrap_or(0)
    }

    fn entry(&mut self, key: &str, now: Instant) -> &mut Failures {
        if !self.keys.contains_key(key) && self.keys.len() >= MAX_TRACKED {
            self.make_room(now);
        }
        self.keys.entry(key.to_string()).or_insert(Failures {
            count: 0,
            in_flight: 0,
            last: now,
            locks: 0,
            locked_until: None,
        })
    }

    /// Forgets what no longer matters; if that is not enough, the entry idle longest.
    fn make_room(&mut self, now: Instant) {
        self.keys.retain(|_, f| {
            let idle = now.duration_since(f.last);
            f.in_flight > 0
                || f.locked_until.is_some_and(|t| t > now)
                || (f.locks > 0 && idle <= FORGET)
                || idle <= WINDOW
        });
        if self.keys.len() >= MAX_TRACKED
            && let Some(oldest) = self
                .keys
                .iter()
                .filter(|(_, f)| f.in_flight == 0)
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
        {
            self.keys.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(user: &str, ip: &str) -> [String; 2] {
        super::keys(
            crate::users::Names::Logins.normalize(user).ok().as_deref(),
            ip,
        )
    }

    fn fail(t: &mut Throttle, k: &[String], now: Instant) -> Result<(), u64> {
        t.begin(k, now)?;
        t.end(k, false, now);
        Ok(())
    }

    #[test]
    fn a_guessing_address_is_locked_out_with_backoff_but_not_the_account() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let a = keys("admin", "192.0.2.1");
        for _ in 0..MAX_FAILURES {
            fail(&mut t, &a, t0).unwrap();
        }
        // Locked from there, even for the right password (nothing is hashed).
        assert_eq!(t.begin(&a, t0), Err(FIRST_LOCKOUT.as_secs()));
        // The same account from elsewhere is not.
        let b = keys("admin", "198.51.100.7");
        assert_eq!(t.begin(&b, t0), Ok(()));
        t.end(&b, true, t0);
        // Lowercase and spaces name the same account.
        assert!(t.begin(&keys(" ADMIN", "192.0.2.1"), t0).is_err());

        // Each further lockout of the pair is twice as long, up to the longest.
        let mut now = t0;
        let mut want = FIRST_LOCKOUT;
        for _ in 0..10 {
            now += want;
            assert_eq!(t.begin(&a, now), Ok(()));
            t.end(&a, false, now);
            for _ in 1..MAX_FAILURES {
                fail(&mut t, &a, now).unwrap();
            }
            want = (want * 2).min(MAX_LOCKOUT);
            assert_eq!(t.locked(&a, now), want.as_secs());
        }
        assert_eq!(want, MAX_LOCKOUT);
        // A day without failures starts again from the first lockout.
        now += FORGET + MAX_LOCKOUT;
        for _ in 0..MAX_FAILURES {
            fail(&mut t, &a, now).unwrap();
        }
        assert_eq!(t.locked(&a, now), FIRST_LOCKOUT.as_secs());
    }

    #[test]
    fn a_success_clears_the_pair_and_failures_far_apart_do_not_add_up() {
        let mut t = Throttle::default();
        let mut now = Instant::now();
        let a = keys("audrey", "192.0.2.1");
        for _ in 0..MAX_FAILURES - 1 {
            fail(&mut t, &a, now).unwrap();
        }
        t.begin(&a, now).unwrap();
        t.end(&a, true, now);
        for _ in 0..MAX_FAILURES - 1 {
            fail(&mut t, &a, now).unwrap();
        }
        assert_eq!(t.locked(&a, now), 0);
        now += WINDOW + Duration::from_secs(1);
        for _ in 0..MAX_FAILURES - 1 {
            fail(&mut t, &a, now).unwrap();
        }
        assert_eq!(t.locked(&a, now), 0);
    }

    #[test]
    fn an_address_trying_many_accounts_is_locked_for_all() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES_ADDRESS {
            fail(&mut t, &keys(&format!("user{i}"), "192.0.2.9"), now).unwrap();
        }
        assert!(t.begin(&keys("admin", "192.0.2.9"), now).is_err());
        assert!(t.begin(&keys("admin", "192.0.2.10"), now).is_ok());
    }

    #[test]
    fn parallel_attempts_count_before_they_are_checked() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let a = keys("admin", "192.0.2.1");
        // Five under way at once: a sixth is refused before any of them failed.
        for _ in 0..MAX_FAILURES {
            t.begin(&a, now).unwrap();
        }
        assert_eq!(t.begin(&a, now), Err(1));
        for _ in 0..MAX_FAILURES {
            t.end(&a, false, now);
        }
        assert_eq!(t.locked(&a, now), FIRST_LOCKOUT.as_secs());
    }

    #[test]
    fn the_tracked_entries_are_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 50 {
            let _ = fail(
                &mut t,
                &keys("admin", &format!("10.{}.{}.1", i / 256, i % 256)),
                now,
            );
        }
        assert!(t.tracked() <= MAX_TRACKED, "{}", t.tracked());
    }
}
