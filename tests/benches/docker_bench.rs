//! Container start to first ping across hosts, the two ways Docker containers join the overlay,
//! in the same run: `docker run --network red` (the network plugin plugs during the start) and
//! `docker run --net=none` followed by `overlay-agent plug --pid` (the recipe without a plugin).
//! Each container pings a container of the other host from its first instruction on and exits
//! at the first reply; the time is from the `docker run` to that exit. Needs root, OVS, etcd
//! and Docker, as the tests do. `cargo bench -p overlay-tests --bench docker_bench [-- N]`.

use std::time::{Duration, Instant};

use overlay_tests::docker::DockerHost;
use overlay_tests::Cluster;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "| {name} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.9).as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    let c = Cluster::start(2, &[]);
    let d = [DockerHost::start(&c, 0), DockerHost::start(&c, 1)];
    d[0].network("red", "red", &["vni=4401"], &["--subnet", "198.19.0.0/16"]);
    d[1].network("red", "red", &[], &["--subnet", "198.19.0.0/16"]);
    d[1].run("target", "red", &[]);
    let target = d[1].ip("target", "red");
    // Pings from the container's first instruction on; exits at the first reply.
    let until_reply = format!("until ping -c 1 -W 1 {target} >/dev/null 2>&1; do :; done");
    let (mut plugin, mut manual) = (Vec::new(), Vec::new());
    for i in 0..n {
        // Alternated, so both see the same state of the machine.
        let name = format!("p{i}");
        let t = Instant::now();
        d[0].ok(&["run", "--name", &name, "--network", "red", d[0].image, "sh", "-c", &until_reply]);
        plugin.push(t.elapsed());
        d[0].ok(&["rm", "-f", &name]);

        let name = format!("m{i}");
        let t = Instant::now();
        let id = d[0].ok(&["run", "-d", "--name", &name, "--net=none", d[0].image, "sh", "-c", &until_reply]);
        let pid = d[0].ok(&["inspect", "-f", "{{.State.Pid}}", &id]);
        c.agents[0].cli_ok(&["plug", &id, "--tenant", "red", "--pid", &pid]);
        let code = d[0].ok(&["wait", &id]);
        manual.push(t.elapsed());
        assert_eq!(code, "0", "{name} exited with {code}");
        c.agents[0].cli_ok(&["unplug", &id]);
        d[0].ok(&["rm", "-f", &name]);
    }
    println!("| path | runs | p50 | p90 | min | max | mean |");
    println!("|---|---|---|---|---|---|---|");
    report("`docker run --network red` (plugin)", plugin);
    report("`docker run --net=none` + `overlay-agent plug --pid`", manual);
    for host in &d {
        host.dockerd.remove_all_containers();
    }
}
