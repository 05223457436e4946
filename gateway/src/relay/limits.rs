//! Limits per client address, shared by every SMTP listener: how many sessions one client
//! may hold at once (so one host cannot take every session slot), and failed AUTH attempts
//! counted per client with a lockout (so password guessing over many parallel sessions is
//! stopped, not only slowed).
//!
//! A client is its IPv4 address, or its IPv6 /64 (one subscriber's prefix: a host that owns
//! a /64 must not get 2^64 allowances). Times are passed in, so the logic is tested without
//! waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most client addresses whose AUTH failures are remembered at once; past it, entries whose
/// lockout window is over are dropped, and when none is, new clients are not tracked until
/// one is (memory stays bounded whatever the number of attacking addresses).
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

/// One client, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// IPv4 (an IPv4-mapped IPv6 address as IPv4) whole; IPv6 by its /64.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(_) => ClientKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !(u128::MAX >> 64);
                    ClientKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// The limits' settings (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Sessions one client may hold at once (`max_sessions_per_client`).
    pub sessions_per_client: usize,
    /// Failed AUTH attempts from one client before it is locked out
    /// (`max_auth_failures_per_client`).
    pub auth_failures_per_client: usize,
    /// How long failures are remembered, and how long a locked-out client stays locked out
    /// after its last failure (`auth_lockout`).
    pub auth_lockout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: usize,
    last: Instant,
}

/// The shared tables.
#[derive(Debug)]
pub struct ClientLimits {
    settings: LimitSettings,
    sessions: Mutex<HashMap<ClientKey, usize>>,
    auth: Mutex<HashMap<ClientKey, Failures>>,
}

/// A session slot held by a client; given back when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    limits: Arc<ClientLimits>,
    key: ClientKey,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut s = lock(&self.limits.sessions);
        if let Some(n) = s.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.key);
            }
        }
    }
}

/// A poisoned lock still holds consistent counts (no code panics while holding it).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientLimits {
    pub fn new(settings: LimitSettings) -> Arc<ClientLimits> {
        Arc::new(ClientLimits {
            settings,
            sessions: Mutex::default(),
            auth: Mutex::default(),
        })
    }

    /// A session slot for a client at `ip`, or `None` when it holds as many as it may.
    pub fn open_session(self: &Arc<Self>, ip: IpAddr) -> Option<SessionSlot> {
        let key = ClientKey::of(ip);
        let mut s = lock(&self.sessions);
        let n = s.entry(key).or_insert(0);
        if *n >= self.settings.sessions_per_client {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            limits: self.clone(),
            key,
        })
    }

    /// Sessions the client at `ip` holds now.
    pub fn sessions_of(&self, ip: IpAddr) -> usize {
        lock(&self.sessions)
            .get(&ClientKey::of(ip))
            .copied()
            .unwrap_or(0)
    }

    /// When the client at `ip` is locked out of AUTH at `now`: how long it still is.
    pub fn auth_locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let f = *lock(&self.auth).get(&ClientKey::of(ip))?;
        let until = f.last + self.settings.auth_lockout;
        (f.count >= self.settings.auth_failures_per_client && now < until).then(|| until - now)
    }

    /// Notes a failed AUTH from `ip` at `now`; returns the client's failures within the
    /// lockout window (this one included).
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) -> usize {
        let key = ClientKey::of(ip);
        let window = self.settings.auth_lockout;
        let mut t = lock(&self.auth);
        if !t.contains_key(&key) && t.len() >= MAX_TRACKED_CLIENTS {
            t.retain(|_, f| now.saturating_duration_since(f.last) < window);
            if t.len() >= MAX_TRACKED_CLIENTS {
                return 1;
            }
        }
        let f = t.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) >= window {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        f.count
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limits(sessions: usize, failures: usize, lockout: u64) -> Arc<ClientLimits> {
        ClientLimits::new(LimitSettings {
            sessions_per_client: sessions,
            auth_failures_per_client: failures,
            auth_lockout: Duration::from_secs(lockout),
        })
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_prefixes() {
        let k = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("::ffff:192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn one_client_holds_at_most_its_share_of_sessions() {
        let l = limits(2, 10, 60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let s1 = l.open_session(a).unwrap();
        let s2 = l.open_session(a).unwrap();
        assert!(l.open_session(a).is_none(), "a third session");
        // Another client is not affected; the same /64 is the same client.
        let _b1 = l.open_session(b).unwrap();
        let _b2 = l.open_session("2001:db8::2".parse().unwrap()).unwrap();
        assert!(l.open_session("2001:db8::3".parse().unwrap()).is_none());
        drop(s1);
        assert_eq!(l.sessions_of(a), 1);
        let _s3 = l.open_session(a).unwrap();
        drop(s2);
        drop(_s3);
        assert_eq!(l.sessions_of(a), 0);
        assert!(lock(&l.sessions).get(&ClientKey::of(a)).is_none());
    }

    #[test]
    fn auth_failures_lock_a_client_out_for_a_while() {
        let l = limits(10, 3, 60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.auth_locked(a, t0), None);
        assert_eq!(l.auth_failed(a, t0), 1);
        assert_eq!(l.auth_failed(a, t0 + Duration::from_secs(1)), 2);
        assert_eq!(l.auth_locked(a, t0 + Duration::from_secs(2)), None);
        assert_eq!(l.auth_failed(a, t0 + Duration::from_secs(2)), 3);
        assert_eq!(
            l.auth_locked(a, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            l.auth_locked(a, t0 + Duration::from_secs(50)),
            Some(Duration::from_secs(12))
        );
        assert_eq!(l.auth_locked(other, t0 + Duration::from_secs(50)), None);
        // Over after the lockout; the count starts again.
        assert_eq!(l.auth_locked(a, t0 + Duration::from_secs(62)), None);
        assert_eq!(l.auth_failed(a, t0 + Duration::from_secs(63)), 1);
        // Failures further apart than the window do not add up.
        let l = limits(10, 2, 10);
        assert_eq!(l.auth_failed(a, t0), 1);
        assert_eq!(l.auth_failed(a, t0 + Duration::from_secs(11)), 1);
        assert_eq!(l.auth_locked(a, t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn the_failure_table_stays_bounded() {
        let l = limits(10, 3, 60);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_CLIENTS as u32 {
            l.auth_failed(IpAddr::V4(i.into()), t0);
        }
        assert_eq!(lock(&l.auth).len(), MAX_TRACKED_CLIENTS);
        // Full of live entries: a new client is not tracked.
        let new: IpAddr = "203.0.113.9".parse().unwrap();
        l.auth_failed(new, t0 + Duration::from_secs(1));
        assert_eq!(lock(&l.auth).len(), MAX_TRACKED_CLIENTS);
        // Once the old ones expire they make room.
        l.auth_failed(new, t0 + Duration::from_secs(61));
        assert_eq!(lock(&l.auth).len(), 1);
    }
}
