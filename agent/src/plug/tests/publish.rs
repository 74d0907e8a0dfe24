//! Published ports in the plug logic: recorded with the endpoint, refused (leaving nothing)
//! when another interface of the host publishes the port or the host listens on it.

use overlay::publish::Protocol;

use super::*;

fn publishing(w: &World, container: &str, ports: &[&str]) -> PlugRequest {
    let mut r = w.request(container, "eth0", None);
    r.publish = ports.iter().map(|p| (*p).to_owned()).collect();
    r
}

#[tokio::test]
async fn published_ports_are_recorded_and_shown_in_the_result() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    let r = p.plug(publishing(&w, "c1", &["8080:80/tcp", "5353:53/udp"])).await.unwrap();
    assert_eq!(r.publish, ["8080:80/tcp", "5353:53/udp"]);
    let held = records.holdings().await.unwrap();
    assert_eq!(held[0].1.publish.len(), 2);
    // The same again is the same plug; other ports are other arguments.
    assert!(p.plug(publishing(&w, "c1", &["5353:53/udp", "8080:80/tcp"])).await.is_ok());
    assert!(matches!(p.plug(publishing(&w, "c1", &["8081:80/tcp"])).await, Err(PlugError::Conflict(_))));
}

#[tokio::test]
async fn a_host_port_taken_is_refused_and_leaves_nothing() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    p.plug(publishing(&w, "c1", &["8080:80/tcp"])).await.unwrap();
    // Another container, the same host port: refused before anything is made.
    let e = p.plug(publishing(&w, "c2", &["8080:81/tcp"])).await.unwrap_err();
    assert!(matches!(&e, PlugError::Conflict(m) if m.contains("8080/tcp") && m.contains("'c1'")), "{e}");
    // The same number over UDP is another port.
    p.plug(publishing(&w, "c3", &["8080:80/udp"])).await.unwrap();
    // Something of the host listens on it.
    links.0.lock().unwrap().listening.insert((9090, Protocol::Tcp));
    let e = p.plug(publishing(&w, "c4", &["9090:90/tcp"])).await.unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    for refused in ["c2", "c4"] {
        let port = container_port_name(refused, "eth0");
        assert!(!links.has(&port) && switch.find_port(&port).is_none(), "{refused} left something");
        assert!(!records.holdings().await.unwrap().iter().any(|(_, e)| e.container_id == refused));
    }
    assert_eq!(records.holdings().await.unwrap().len(), 2);
    // Once c1 is unplugged, its port is free again.
    p.unplug("c1", None).await.unwrap();
    p.plug(publishing(&w, "c2", &["8080:81/tcp"])).await.unwrap();
}

#[tokio::test]
async fn malformed_or_doubled_publishes_are_bad_requests() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    for bad in [vec!["80"], vec!["8080:80/sctp"], vec!["8080:80", "8080:81/tcp"]] {
        let e = p.plug(publishing(&w, "c1", &bad)).await.unwrap_err();
        assert!(matches!(e, PlugError::BadRequest(_)), "{bad:?}: {e}");
    }
    assert!(records.holdings().await.unwrap().is_empty());
}
