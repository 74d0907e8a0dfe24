//! Whether a host port can be published: nothing of the host listens on it. Checked by binding
//! it in the host namespace, as `docker run -p` does with its proxy: a listener on the port
//! (on any address) makes the bind fail.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use overlay::publish::Protocol;

use crate::netlink::{NetlinkError, Netns};

/// Why a port is not free, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum PortCheckError {
    /// The host namespace could not be entered.
    #[error("entering the host namespace")]
    Netns(#[from] NetlinkError),
    /// Something listens on the port.
    #[error("host port {port}/{protocol} is in use on this host: pick another host port")]
    InUse {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// The bind failed otherwise.
    #[error("checking host port {port}/{protocol}")]
    Check {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Checks that each `(port, protocol)` is free on `underlay` and on every address of the host
/// namespace (the wildcard bind fails if anything holds the port).
pub async fn check_free(host: &Netns, underlay: Ipv4Addr, ports: Vec<(u16, Protocol)>) -> Result<(), PortCheckError> {
    host.run_inside(move || {
        for (port, protocol) in ports {
            for addr in [Ipv4Addr::UNSPECIFIED, underlay] {
                let at = SocketAddrV4::new(addr, port);
                let bound = match protocol {
                    Protocol::Tcp => TcpListener::bind(at).map(drop),
                    Protocol::Udp => UdpSocket::bind(at).map(drop),
                };
                match bound {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        return Err(PortCheckError::InUse { port, protocol });
                    }
                    // The underlay address may not be on a link of this namespace.
                    Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {}
                    Err(source) => return Err(PortCheckError::Check { port, protocol, source }),
                }
            }
        }
        Ok(())
    })
    .await?
}
