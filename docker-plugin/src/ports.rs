//! Docker's published ports (`docker run -p`) as the agent's: libnetwork hands a remote driver
//! the container's port bindings in `CreateEndpoint` and does nothing with them itself, so the
//! driver publishes them through the agent's gateway (DNAT on the host's underlay address).

use serde::Deserialize;
use serde_json::Value;

use crate::DriverError;

/// One binding as libnetwork encodes it (`types.PortBinding`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    /// IP protocol number: 6 tcp, 17 udp, 132 sctp.
    proto: u8,
    /// The container port.
    port: u16,
    /// The host address asked for (`-p ADDR:H:C`); empty for every address.
    #[serde(rename = "HostIP")]
    host_ip: Option<String>,
    /// The host port; 0 when Docker was left to choose one (`-p C`).
    host_port: u16,
    /// The end of a host port range (`-p 8080-8090:80`); 0 or `host_port` for one port.
    host_port_end: u16,
}

/// The agent's `HOST:CONTAINER/PROTO` list for the `com.docker.network.portmap` option, or why
/// a binding cannot be published (the message Docker shows for `docker run`).
pub(crate) fn publish_of(portmap: Option<&Value>) -> Result<Vec<String>, DriverError> {
    let Some(portmap) = portmap.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let bindings: Vec<PortBinding> = serde_json::from_value(portmap.clone())
        .map_err(|e| DriverError(format!("cannot read the published ports Docker sent ({portmap}): {e}")))?;
    bindings.iter().map(publish).collect()
}

fn publish(b: &PortBinding) -> Result<String, DriverError> {
    let proto = match b.proto {
        6 => "tcp",
        17 => "udp",
        n => {
            return Err(DriverError(format!(
                "port {}: protocol {} cannot be published: the overlay publishes tcp and udp ports",
                b.port,
                if n == 132 { "sctp".to_owned() } else { n.to_string() }
            )))
        }
    };
    if b.host_port == 0 {
        return Err(DriverError(format!(
            "port {}/{proto} has no host port: the overlay does not pick one; publish it as -p HOSTPORT:{}",
            b.port, b.port
        )));
    }
    if b.host_port_end != 0 && b.host_port_end != b.host_port {
        return Err(DriverError(format!(
            "host ports {}-{}: the overlay publishes one host port per container port; give one (-p {}:{})",
            b.host_port, b.host_port_end, b.host_port, b.port
        )));
    }
    match b.host_ip.as_deref().unwrap_or("") {
        "" | "0.0.0.0" | "::" => {}
        ip => {
            return Err(DriverError(format!(
                "-p {ip}:{}:{}: the overlay publishes ports on the host's underlay address only; drop the address \
                 (-p {}:{})",
                b.host_port, b.port, b.host_port, b.port
            )))
        }
    }
    Ok(format!("{}:{}/{proto}", b.host_port, b.port))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn docker_bindings_become_the_agents_published_ports() {
        let map = json!([
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 53, "HostIP": "0.0.0.0", "HostPort": 5353, "HostPortEnd": 0}
        ]);
        assert_eq!(publish_of(Some(&map)).unwrap(), ["8080:80/tcp", "5353:53/udp"]);
        assert!(publish_of(None).unwrap().is_empty());
        assert!(publish_of(Some(&Value::Null)).unwrap().is_empty());
    }

    #[test]
    fn what_cannot_be_published_is_refused_with_what_to_do() {
        let refused = |b: Value| publish_of(Some(&json!([b]))).unwrap_err().0;
        let m = refused(json!({"Proto": 6, "Port": 80, "HostPort": 0}));
        assert!(m.contains("-p HOSTPORT:80"), "{m}");
        let m = refused(json!({"Proto": 132, "Port": 80, "HostPort": 8080}));
        assert!(m.contains("sctp"), "{m}");
        let m = refused(json!({"Proto": 6, "Port": 80, "HostPort": 8080, "HostPortEnd": 8090}));
        assert!(m.contains("-p 8080:80"), "{m}");
        let m = refused(json!({"Proto": 6, "Port": 80, "HostIP": "127.0.0.1", "HostPort": 8080}));
        assert!(m.contains("underlay address"), "{m}");
        assert!(publish_of(Some(&json!({"not": "a list"}))).is_err());
    }
}
