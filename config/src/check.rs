//! Checks of single values: each says what is wrong with a value and what to use instead,
//! and knows nothing of where the value came from.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;
/// Linux interface names (and so OVS bridge names) are at most IFNAMSIZ - 1 bytes.
const MAX_IFNAME: usize = 15;

/// The hostname becomes an etcd key segment, so it must not contain `/` or `..` and must look
/// like a DNS name.
pub(crate) fn check_hostname(h: &str) -> Result<(), String> {
    const USE: &str = "letters, digits, '.' and '-', starting and ending with a letter or digit, \
                       at most 253 characters, no '..'";
    let bytes = h.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 253
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-')
        && !h.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!("is not a valid hostname: use {USE}"))
    }
}

pub(crate) fn parse_underlay_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.trim().parse().map_err(|_| "is not an IP address: use an IPv4 or IPv6 address".to_string())?;
    // Tunnels are unicast between hosts: these can never be a tunnel endpoint.
    let unusable = ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        return Err("cannot be a tunnel endpoint: use this host's unicast underlay address".to_string());
    }
    Ok(ip)
}

pub(crate) fn check_mtu(mtu: u32, underlay_ip: IpAddr) -> Result<u32, String> {
    if !(576..=65535).contains(&mtu) {
        return Err("is out of range: use 576..=65535".to_string());
    }
    // IPv6 links must carry 1280-byte packets (RFC 8200), so a smaller MTU is a typo.
    if underlay_ip.is_ipv6() && mtu < 1280 {
        return Err("is below 1280, the IPv6 minimum, with an IPv6 underlay_ip".to_string());
    }
    Ok(mtu)
}

/// Accepts `http(s)://HOST:PORT` with an optional trailing `/`, HOST possibly a bracketed IPv6.
pub(crate) fn check_endpoint(ep: &str) -> Result<(), String> {
    const USE: &str = "use http://HOST:PORT or https://HOST:PORT";
    let Some(rest) = ep.strip_prefix("http://").or_else(|| ep.strip_prefix("https://")) else {
        return Err(format!("is not a URL: {USE}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.chars().any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@')) {
        return Err(format!("is not a URL: {USE}"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once("]:") {
            Some((h, p)) => (h, Some(p)),
            None => (v6.trim_end_matches(']'), None),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("has no host: {USE}"));
    }
    // Without a port the client would use 80/443, never where etcd listens (2379).
    match port.map(str::parse::<u16>) {
        None => Err(format!("has no port: {USE}")),
        Some(Ok(p)) if p != 0 => Ok(()),
        Some(_) => Err(format!("has an invalid port: {USE}")),
    }
}

/// Drops trailing `/` so that `{prefix}/hosts` never has `//`.
pub(crate) fn normalize_prefix(p: &str) -> Result<String, String> {
    const USE: &str = "use an absolute key path like /overlay";
    if !p.starts_with('/') {
        return Err(format!("does not start with '/': {USE}"));
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(format!("is the bare root: {USE}"));
    }
    if trimmed.contains("..") {
        return Err(format!("contains '..': {USE}"));
    }
    if trimmed.contains("//") {
        return Err(format!("has an empty segment ('//'): {USE}"));
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains whitespace: {USE}"));
    }
    Ok(trimmed.to_string())
}

/// Bridge names become Linux network device names.
pub(crate) fn check_bridge(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("is not a valid bridge name: use 1..={MAX_IFNAME} letters, digits, '-', '_' or '.'"))
    }
}

pub(crate) fn check_socket_path(p: &Path) -> Result<(), String> {
    let len = p.as_os_str().len();
    if len == 0 {
        return Err("is empty: give a socket path".to_string());
    }
    if len > MAX_UNIX_SOCKET_PATH {
        return Err(format!("is {len} bytes long: a Unix socket path holds at most {MAX_UNIX_SOCKET_PATH}"));
    }
    Ok(())
}

pub(crate) fn parse_metrics_address(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match s.parse::<SocketAddr>() {
        // Port 0 would bind a random port nobody can scrape.
        Ok(a) if a.port() != 0 => Ok(Some(a)),
        Ok(_) => Err("has port 0: give a fixed port".to_string()),
        Err(_) => Err("is not a listen address: use IP:PORT like 127.0.0.1:9477 or [::1]:9477, or off".to_string()),
    }
}

/// The filter itself is parsed by the agent's `tracing_subscriber::EnvFilter`; this only
/// catches what can never be a filter.
pub(crate) fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("is empty: use e.g. info or info,overlay=debug".to_string());
    }
    if level.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace: use e.g. info or info,overlay=debug".to_string());
    }
    Ok(())
}
