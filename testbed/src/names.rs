//! Unique names for links, namespaces, temp dirs, shared by threads and processes.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Marker in the name of every temp dir this crate makes: `tbfix-<pid>-...`. The sweeper uses it
/// to find leftovers of dead test processes.
pub(crate) const DIR_MARKER: &str = "tbfix-";

/// Lower-case base 36.
pub(crate) fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Next value of the process-wide counter.
pub(crate) fn next_counter() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A name unique across the threads and processes of this machine:
/// `prefix` + the pid in base 36 padded to 5 characters + a process-wide counter in base 36.
///
/// With a prefix of at most 5 characters the result fits a Linux interface name (15 characters)
/// for the first 36^5 (60 million) names of a process.
pub fn unique_name(prefix: &str) -> String {
    let pid = base36(u64::from(std::process::id()));
    format!("{prefix}{pid:0>5}{}", base36(next_counter()))
}

/// A loopback address of the root namespace that only this call hands out: 127.a.b.c from the
/// pid and the counter, never 127.0.0.1.
///
/// A port found free on 127.0.0.1 and released can be bound by a parallel test before the server
/// meant for it starts (a CI run lost a test to exactly that). On an address of its own a test
/// races only against itself. The whole of 127.0.0.0/8 is local on Linux, so no setup is needed.
pub fn private_loopback_ip() -> Ipv4Addr {
    let pid = std::process::id();
    let n = next_counter();
    // pid_max is at most 2^22: 254 x 256 values cover most of it and two live test processes
    // sharing a pair of octets is unlikely; the counter keeps one process's calls apart.
    Ipv4Addr::new(127, 1 + (pid % 254) as u8, ((pid / 254) % 256) as u8, 1 + (n % 254) as u8)
}

/// A port that was free on `ip` a moment ago (bound with port 0, then released).
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("testbed: cannot bind {ip}:0: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("testbed: local address of {ip}:0: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn private_loopback_addresses_differ_and_can_be_bound() {
        let (a, b) = (private_loopback_ip(), private_loopback_ip());
        assert_ne!(a, b);
        for ip in [a, b] {
            assert!(ip.is_loopback() && ip != Ipv4Addr::LOCALHOST, "{ip}");
            let port = free_port_on(ip);
            TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("{ip}:{port}: {e}"));
        }
    }

    #[test]
    fn short_and_unique() {
        let mut seen = HashSet::new();
        let handles: Vec<_> =
            (0..4).map(|_| std::thread::spawn(|| (0..500).map(|_| unique_name("tb")).collect::<Vec<_>>())).collect();
        for h in handles {
            for n in h.join().unwrap() {
                assert!(n.len() <= 15, "{n}");
                assert!(n.starts_with("tb"));
                assert!(seen.insert(n));
            }
        }
        assert!(unique_name("abcde").len() <= 15);
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(4_194_304), "2hwcg");
    }
}
