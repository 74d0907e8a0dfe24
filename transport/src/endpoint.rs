//! Where a server listens: `unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT`, the syntax of
//! ovs-vsctl's `--db` and ovs-ofctl's targets. The one parser of it for both protocols: what
//! differs between them (a left-out port, how errors name the string) is the protocol's
//! [`Grammar`], chosen by the const parameter of [`Endpoint`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// [`Endpoint`]'s parameter for an OVSDB remote.
pub const OVSDB: u8 = 0;
/// [`Endpoint`]'s parameter for an OpenFlow target.
pub const OPENFLOW: u8 = 1;

/// The port of an OVSDB `tcp:` or `ssl:` remote that names none (the IANA OVSDB port, as OVS
/// uses).
pub const OVSDB_DEFAULT_PORT: u16 = 6640;

/// An OVSDB remote (RFC 7047 over a stream).
pub type OvsdbRemote = Endpoint<OVSDB>;
/// An OpenFlow target (a switch's listener or a bridge's management socket).
pub type OpenFlowTarget = Endpoint<OPENFLOW>;

/// Where ovs-vswitchd puts `<bridge>.mgmt` unless `OVS_RUNDIR` says otherwise.
pub const DEFAULT_OVS_RUNDIR: &str = "/var/run/openvswitch";

/// The management socket ovs-vswitchd opens for `bridge`: `<rundir>/<bridge>.mgmt`
/// (`rundir` `None`: [`DEFAULT_OVS_RUNDIR`]).
pub fn mgmt_socket(rundir: Option<&Path>, bridge: &str) -> PathBuf {
    rundir.unwrap_or(Path::new(DEFAULT_OVS_RUNDIR)).join(format!("{bridge}.mgmt"))
}

/// A parsed endpoint. `PROTOCOL` ([`OVSDB`] or [`OPENFLOW`]) only decides how a string is
/// read and how a bad one is reported; the variants are the same for both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint<const PROTOCOL: u8> {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT` (IPv6 hosts in brackets: `tcp:[::1]:6640`).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `ssl:HOST:PORT`: TLS with a client certificate ([`crate::TlsSettings`]).
    Ssl {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// What one protocol makes of the shared syntax.
pub(crate) struct Grammar {
    /// How errors name the string: `OVSDB remote`.
    pub(crate) noun: &'static str,
    /// The port of `tcp:HOST`; `None`: the port must be written.
    default_port: Option<u16>,
    /// The protocol's usual port, for examples in advice.
    usual_port: u16,
    /// A whole endpoint to show in advice.
    example: &'static str,
}

const GRAMMARS: [Grammar; 2] = [
    Grammar {
        noun: "OVSDB remote",
        default_port: Some(OVSDB_DEFAULT_PORT),
        usual_port: OVSDB_DEFAULT_PORT,
        example: "unix:/var/run/openvswitch/db.sock",
    },
    Grammar {
        noun: "OpenFlow target",
        default_port: None,
        usual_port: 6653,
        example: "unix:/var/run/openvswitch/br-tun.mgmt",
    },
];

impl<const PROTOCOL: u8> Endpoint<PROTOCOL> {
    /// An unknown `PROTOCOL` fails to compile where it is used.
    pub(crate) const GRAMMAR: &'static Grammar = &GRAMMARS[PROTOCOL as usize];
}

impl Endpoint<OPENFLOW> {
    /// The management socket of `bridge` under `rundir` ([`mgmt_socket`]).
    pub fn mgmt(rundir: Option<&Path>, bridge: &str) -> Self {
        Endpoint::Unix(mgmt_socket(rundir, bridge))
    }
}

/// What is wrong with a string that is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// No `scheme:` in front.
    #[error("no scheme")]
    NoScheme,
    /// `unix:` with nothing after it.
    #[error("the socket path is empty")]
    EmptyPath,
    /// An empty host, or one with spaces or slashes.
    #[error("the host is missing or malformed")]
    BadHost,
    /// `[` without its `]`.
    #[error("missing ']' after the IPv6 address")]
    UnclosedBracket,
    /// Something other than `:PORT` after `]`.
    #[error("expected ':PORT' after ']'")]
    AfterBracket,
    /// An IPv6 address that is not in brackets.
    #[error("IPv6 addresses go in brackets, like tcp:[::1]:{usual_port}")]
    UnbracketedIpv6 {
        /// The protocol's usual port, for the example.
        usual_port: u16,
    },
    /// No port, in a protocol that has no default one.
    #[error("the port is missing, like tcp:127.0.0.1:{usual_port}")]
    NoPort {
        /// The protocol's usual port, for the example.
        usual_port: u16,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("port '{0}' is not 1..=65535")]
    BadPort(String),
    /// `punix:`, `ptcp:`, `pssl:`: the server would connect to us.
    #[error("passive remotes are not supported")]
    Passive,
    /// A scheme other than `unix`, `tcp` and `ssl`.
    #[error("unknown scheme '{0}'")]
    UnknownScheme(String),
}

/// A string that is not an endpoint: what is wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {noun} '{input}': {}", self.advice())]
pub struct ParseError {
    input: String,
    kind: ParseErrorKind,
    noun: &'static str,
    example: &'static str,
}

impl ParseError {
    /// The string as given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// What is wrong and what to write instead, without the string itself.
    pub fn advice(&self) -> String {
        format!("{}; use unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT (e.g. {})", self.kind, self.example)
    }
}

/// `HOST[:PORT]` or `[IPV6][:PORT]`.
fn host_port(rest: &str, grammar: &Grammar) -> Result<(String, u16), ParseErrorKind> {
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(ParseErrorKind::UnclosedBracket)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(ParseErrorKind::AfterBracket)?),
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(ParseErrorKind::UnbracketedIpv6 { usual_port: grammar.usual_port })
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ParseErrorKind::BadHost);
    }
    let port = match (port, grammar.default_port) {
        (None, Some(default)) => default,
        (None, None) => return Err(ParseErrorKind::NoPort { usual_port: grammar.usual_port }),
        (Some(p), _) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(ParseErrorKind::BadPort(p.to_owned())),
        },
    };
    Ok((host.to_owned(), port))
}

fn parse<const PROTOCOL: u8>(s: &str) -> Result<Endpoint<PROTOCOL>, ParseErrorKind> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(ParseErrorKind::NoScheme);
    };
    let grammar = Endpoint::<PROTOCOL>::GRAMMAR;
    match scheme {
        "unix" if rest.is_empty() => Err(ParseErrorKind::EmptyPath),
        "unix" => Ok(Endpoint::Unix(PathBuf::from(rest))),
        "tcp" => host_port(rest, grammar).map(|(host, port)| Endpoint::Tcp { host, port }),
        "ssl" => host_port(rest, grammar).map(|(host, port)| Endpoint::Ssl { host, port }),
        // Passive remotes make the server the client; these clients only dial out.
        "punix" | "ptcp" | "pssl" => Err(ParseErrorKind::Passive),
        _ => Err(ParseErrorKind::UnknownScheme(scheme.to_owned())),
    }
}

impl<const PROTOCOL: u8> FromStr for Endpoint<PROTOCOL> {
    type Err = ParseError;

    /// OVS's active-connection syntax: `unix:PATH`, `tcp:HOST[:PORT]`, `ssl:HOST[:PORT]`
    /// (IPv6 hosts in brackets; the protocol's default port, if it has one, when the port is
    /// left out).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let grammar = Self::GRAMMAR;
        parse(s).map_err(|kind| ParseError { input: s.to_owned(), kind, noun: grammar.noun, example: grammar.example })
    }
}

impl<const PROTOCOL: u8> fmt::Display for Endpoint<PROTOCOL> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp:{}:{port}", bracket(host)),
            Endpoint::Ssl { host, port } => write!(f, "ssl:{}:{port}", bracket(host)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovsdb_remotes_parse_and_print() {
        for s in ["unix:/var/run/openvswitch/db.sock", "tcp:127.0.0.1:6640", "tcp:[::1]:6640", "ssl:ovs.example:6641"] {
            let r: OvsdbRemote = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        assert_eq!("tcp:[::1]:6640".parse::<OvsdbRemote>().unwrap(), Endpoint::Tcp { host: "::1".into(), port: 6640 });
    }

    #[test]
    fn bad_ovsdb_remotes_are_refused_with_advice() {
        let cases = [
            ("", "no scheme"),
            ("db.sock", "no scheme"),
            ("unix:", "the socket path is empty"),
            ("tcp::6640", "the host is missing"),
            ("tcp:h:99999", "port '99999' is not 1..=65535"),
            ("tcp:h:0", "port '0' is not"),
            ("tcp:[::1:6640", "missing ']'"),
            ("tcp:::1:6640", "IPv6 addresses go in brackets, like tcp:[::1]:6640"),
            ("ptcp:6640", "passive remotes are not supported"),
            ("http:h:80", "unknown scheme 'http'"),
        ];
        for (s, why) in cases {
            let e = s.parse::<OvsdbRemote>().unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("bad OVSDB remote") && text.contains(why) && text.contains("use unix:PATH"),
                "{s}: {text}"
            );
            assert_eq!(e.input(), s);
            assert!(e.advice().contains(why) && e.advice().contains("(e.g. unix:/var/run/openvswitch/db.sock)"));
        }
    }

    #[test]
    fn a_left_out_port_is_the_ovsdb_port() {
        assert_eq!(
            "tcp:10.0.0.1".parse::<OvsdbRemote>().unwrap(),
            Endpoint::Tcp { host: "10.0.0.1".into(), port: 6640 }
        );
        assert_eq!(
            "ssl:[::1]".parse::<OvsdbRemote>().unwrap(),
            Endpoint::Ssl { host: "::1".into(), port: OVSDB_DEFAULT_PORT }
        );
    }

    #[test]
    fn openflow_targets_parse_and_print() {
        for s in ["unix:/run/ovs/br-tun.mgmt", "tcp:127.0.0.1:6653", "tcp:[::1]:6653", "ssl:sw.example:6653"] {
            assert_eq!(s.parse::<OpenFlowTarget>().unwrap().to_string(), s);
        }
        for s in ["", "br-tun.mgmt", "unix:", "tcp:127.0.0.1", "tcp::1", "tcp:h:70000", "ssl:[::1:1"] {
            let e = s.parse::<OpenFlowTarget>().unwrap_err();
            assert!(e.to_string().contains("bad OpenFlow target"), "{s}: {e}");
            assert!(e.to_string().contains("(e.g. unix:/var/run/openvswitch/br-tun.mgmt)"), "{s}: {e}");
        }
    }

    #[test]
    fn an_openflow_target_names_its_port() {
        let e = "tcp:127.0.0.1".parse::<OpenFlowTarget>().unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::NoPort { usual_port: 6653 });
        assert!(e.to_string().contains("the port is missing, like tcp:127.0.0.1:6653"), "{e}");
        let e = "ssl:[::1]".parse::<OpenFlowTarget>().unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::NoPort { usual_port: 6653 });
        let e = "tcp:::1:6653".parse::<OpenFlowTarget>().unwrap_err();
        assert!(e.to_string().contains("like tcp:[::1]:6653"), "{e}");
        let e = "tcp:h:0".parse::<OpenFlowTarget>().unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::BadPort("0".into()));
    }

    #[test]
    fn mgmt_path() {
        assert_eq!(mgmt_socket(None, "br-tun"), PathBuf::from("/var/run/openvswitch/br-tun.mgmt"));
        assert_eq!(OpenFlowTarget::mgmt(Some(Path::new("/tmp/x")), "br0").to_string(), "unix:/tmp/x/br0.mgmt");
    }
}
