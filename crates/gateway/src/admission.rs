//! Who may open a WebSocket: caps checked at the upgrade, before any work is done.
//!
//! - sockets open per client address (`limits.max_connections_per_ip`): 429;
//! - sockets on this node that have not completed `hello` yet
//!   (`limits.max_sockets_before_hello`; each has `server.hello_timeout_secs` to
//!   sign in): 503;
//! - sign-ins (upgrades, one `hello` each) per client address, a token bucket
//!   (`limits.sign_ins_per_ip_per_second`, `limits.sign_ins_per_ip_burst`): 429.
//!
//! Each refusal is counted in `chat_admission_refusals_total{reason}`. The client
//! address is the peer's, or — only when the peer is one of `server.trusted_proxies`
//! (nginx) — the one it forwards in `X-Forwarded-For` / `X-Real-IP`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::limiter::TokenBucket;
use crate::limits::LimitSettings;
use crate::sync::lock;

/// Why an upgrade was refused: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many sockets open from this address (429).
    PerIp,
    /// Too many sockets waiting for `hello` on this node (503).
    BeforeHello,
    /// Too many sign-ins from this address (429).
    SignIn,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::PerIp, Refusal::BeforeHello, Refusal::SignIn];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::BeforeHello => "before_hello",
            Refusal::SignIn => "sign_in",
        }
    }
}

struct Address {
    open: usize,
    sign_ins: TokenBucket,
    last: Instant,
}

/// The node's admission bookkeeping.
#[derive(Default)]
pub struct Admission {
    addresses: Mutex<Addresses>,
    before_hello: AtomicUsize,
}

#[derive(Default)]
struct Addresses {
    map: HashMap<IpAddr, Address>,
    prune_at: usize,
}

/// Addresses remembered at least before idle ones are looked for and dropped.
const PRUNE_ABOVE: usize = 4096;
/// How long an address without sockets keeps its sign-in bucket (it is full again
/// long before that with any sensible setting).
const IDLE: Duration = Duration::from_secs(120);

impl Admission {
    /// Admits one more socket from `ip`, or says why not. The ticket releases its
    /// places when dropped.
    pub fn admit(
        self: &Arc<Self>,
        limits: &LimitSettings,
        ip: IpAddr,
    ) -> Result<Admitted, Refusal> {
        let before = self.before_hello.fetch_add(1, Ordering::AcqRel);
        if before >= limits.max_sockets_before_hello {
            self.before_hello.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::BeforeHello);
        }
        let mut addresses = lock(&self.addresses);
        let now = Instant::now();
        if addresses.map.len() >= addresses.prune_at.max(PRUNE_ABOVE) {
            addresses
                .map
                .retain(|_, a| a.open > 0 || now.duration_since(a.last) < IDLE);
            addresses.prune_at = addresses.map.len() * 2;
        }
        let address = addresses.map.entry(ip).or_insert_with(|| Address {
            open: 0,
            sign_ins: TokenBucket::new(
                limits.sign_ins_per_ip_per_second,
                limits.sign_ins_per_ip_burst,
            ),
            last: now,
        });
        address.last = now;
        let refused = if address.open >= limits.max_connections_per_ip {
            Some(Refusal::PerIp)
        } else if !address.sign_ins.try_take(1) {
            Some(Refusal::SignIn)
        } else {
            address.open += 1;
            None
        };
        drop(addresses);
        if let Some(refusal) = refused {
            self.before_hello.fetch_sub(1, Ordering::AcqRel);
            return Err(refusal);
        }
        Ok(Admitted {
            admission: Some(self.clone()),
            ip,
            before_hello: true,
        })
    }

    /// Sockets on this node that have not completed `hello`.
    #[cfg(test)]
    pub fn before_hello(&self) -> usize {
        self.before_hello.load(Ordering::Acquire)
    }
}

/// A socket's places: its address's count and, until `hello` is done, a place among
/// the sockets before `hello`. Released when dropped.
pub struct Admitted {
    admission: Option<Arc<Admission>>,
    ip: IpAddr,
    before_hello: bool,
}

impl Admitted {
    /// A ticket that holds no place (unit tests drive connections without an upgrade).
    #[cfg(test)]
    pub fn untracked() -> Admitted {
        Admitted {
            admission: None,
            ip: IpAddr::from([0, 0, 0, 0]),
            before_hello: false,
        }
    }

    /// The sign-in phase is over (signed in or refused): its place is free.
    pub fn hello_done(&mut self) {
        if std::mem::take(&mut self.before_hello) {
            if let Some(a) = &self.admission {
                a.before_hello.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.hello_done();
        if let Some(a) = &self.admission {
            let mut addresses = lock(&a.addresses);
            if let Some(address) = addresses.map.get_mut(&self.ip) {
                address.open = address.open.saturating_sub(1);
                address.last = Instant::now();
            }
        }
    }
}

/// Trusted proxies: addresses and networks (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Default)]
pub struct Proxies(Vec<(IpAddr, u8)>);

impl Proxies {
    /// Parses a comma-separated list; `Err` names the bad entry.
    pub fn parse(list: &str) -> Result<Proxies, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| item.to_string())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or(item)?,
                None => max,
            };
            out.push((ip, bits));
        }
        Ok(Proxies(out))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(net, bits)| in_network(ip, canonical(*net), *bits))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then
    /// the right-most `X-Forwarded-For` entry that is not a trusted proxy, else
    /// `X-Real-IP`, else the peer.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if let Some(ip) = forwarded.iter().rev().find(|ip| !self.contains(**ip)) {
            return canonical(*ip);
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(canonical)
            .unwrap_or(peer)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: usize, before_hello: usize, rate: u32, burst: u32) -> LimitSettings {
        LimitSettings {
            max_connections_per_ip: per_ip,
            max_sockets_before_hello: before_hello,
            sign_ins_per_ip_per_second: rate,
            sign_ins_per_ip_burst: burst,
            ..LimitSettings::default()
        }
    }

    #[test]
    fn caps_per_address_and_before_hello_are_released_by_the_ticket() {
        let a = Arc::new(Admission::default());
        let l = limits(2, 3, 1, 100);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t1 = a.admit(&l, one).expect("first");
        let t2 = a.admit(&l, one).expect("second");
        assert_eq!(a.admit(&l, one).err(), Some(Refusal::PerIp));
        let t3 = a.admit(&l, two).expect("another address");
        assert_eq!(
            a.admit(&l, two).err(),
            Some(Refusal::BeforeHello),
            "3 before hello"
        );
        t1.hello_done();
        assert_eq!(a.before_hello(), 2);
        let t4 = a.admit(&l, two).expect("a place before hello was freed");
        assert_eq!(a.admit(&l, one).err(), Some(Refusal::BeforeHello));
        drop((t2, t3, t4));
        assert_eq!(a.before_hello(), 0);
        let _t5 = a.admit(&l, one).expect("t2 released its address place");
        drop(t1);
        assert_eq!(a.before_hello(), 1);
    }

    #[test]
    fn sign_ins_per_address() {
        let a = Arc::new(Admission::default());
        let l = limits(100, 100, 1, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        drop(a.admit(&l, ip).expect("1"));
        drop(a.admit(&l, ip).expect("2"));
        assert_eq!(a.admit(&l, ip).err(), Some(Refusal::SignIn));
        assert!(a.admit(&l, "10.0.0.9".parse().unwrap()).is_ok());
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let proxies = Proxies::parse("127.0.0.1, 10.1.0.0/16").unwrap();
        assert!(Proxies::parse("10.0.0.0/33").is_err());
        assert!(Proxies::parse("nginx").is_err());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        h.insert("x-real-ip", "198.51.100.1".parse().unwrap());
        let proxy: IpAddr = "10.1.7.7".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            proxies.client_ip(proxy, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            proxies.client_ip(stranger, &h),
            stranger,
            "not trusted: the peer"
        );
        h.remove("x-forwarded-for");
        assert_eq!(
            proxies.client_ip(proxy, &h),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(Proxies::default().client_ip(proxy, &h), proxy);
    }
}
