//! A continuous ping from a container that accounts for every echo: what the fault and
//! restart tests judge loss by.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::Container;

/// The shortest run of a [`Pinger`]: 40 echoes at 0.05 s.
const PING_AT_LEAST: Duration = Duration::from_secs(2);

/// A continuous `ping -i 0.05` from a container, stopped with SIGINT; every echo is accounted.
pub struct Pinger {
    child: Option<Child>,
    lines: Option<JoinHandle<Vec<String>>>,
    what: String,
    started: Instant,
}

/// What a [`Pinger`] saw.
pub struct PingReport {
    pub transmitted: u64,
    replies: BTreeSet<u64>,
    /// Unix time (`ping -D`) of each reply.
    stamps: BTreeMap<u64, String>,
    text: String,
}

impl PingReport {
    /// Sequence numbers that never got a reply, not counting the last one sent (it may have
    /// been in flight when ping was interrupted).
    pub fn lost(&self) -> Vec<u64> {
        (1..self.transmitted).filter(|s| !self.replies.contains(s)).collect()
    }

    #[track_caller]
    pub fn assert_no_loss(&self, what: &str) {
        assert!(self.transmitted > 10, "{what}: ping hardly ran:\n{}", self.text);
        let lost = self.lost();
        // When: the unix time of the last reply before the first lost echo.
        let when = lost.first().and_then(|first| self.stamps.range(..first).next_back()).map(|(_, t)| t.clone());
        assert!(
            lost.is_empty(),
            "{what}: {} of {} echoes lost (seq {lost:?}, the first after the reply at unix time {when:?})",
            lost.len(),
            self.transmitted
        );
        eprintln!("{what}: {} echoes, none lost", self.transmitted);
    }
}

impl PingReport {
    /// Like [`PingReport::assert_no_loss`], but single lost echoes are allowed: adding or
    /// deleting a port on a netdev (userspace) datapath now and then drops one packet of
    /// another port, with no agent involved (checked with `ovs-vsctl add-port`/`del-port` of a
    /// plain veth and the agents stopped: 1 to 4 echoes lost in 40 rounds). Two in a row would
    /// be an outage.
    #[track_caller]
    pub fn assert_no_outage(&self, what: &str) {
        assert!(self.transmitted > 10, "{what}: ping hardly ran:\n{}", self.text);
        let lost = self.lost();
        let consecutive = lost.windows(2).any(|w| w[1] == w[0] + 1);
        assert!(!consecutive, "{what}: consecutive echoes lost (seq {lost:?} of {})", self.transmitted);
        eprintln!("{what}: {} echoes, {} single ones lost ({lost:?})", self.transmitted, lost.len());
    }
}

impl Pinger {
    pub fn start(from: &Container, ip: &str) -> Pinger {
        // `ip netns exec` execs ping, so the child's pid is ping's (SIGINT makes it report).
        let mut child = from
            .command(&["ping", "-n", "-D", "-i", "0.05", "-W", "1", ip])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning ping");
        let out = child.stdout.take().expect("ping stdout");
        let lines = std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        let what = format!("ping {ip} from {}", from.name());
        Pinger { child: Some(child), lines: Some(lines), what, started: Instant::now() }
    }

    /// Stops ping, after it has run for [`PING_AT_LEAST`]: a phase of a test that ends sooner
    /// still gets enough echoes to judge ("ping hardly ran" means ping itself was stuck).
    pub fn stop(mut self) -> PingReport {
        std::thread::sleep(PING_AT_LEAST.saturating_sub(self.started.elapsed()));
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = self.lines.take().expect("reader").join().expect("ping reader");
        let seq = |l: &str| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok();
        let stamps: BTreeMap<u64, String> = lines
            .iter()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| Some((seq(l)?, l.split(']').next()?.trim_start_matches('[').to_owned())))
            .collect();
        let replies = stamps.keys().copied().collect();
        let transmitted = lines
            .iter()
            .find_map(|l| l.split(" packets transmitted").next().filter(|_| l.contains(" packets transmitted")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no summary:\n{}", self.what, lines.join("\n")));
        let text = lines.iter().rev().take(4).cloned().collect::<Vec<_>>().join("\n");
        PingReport { transmitted, replies, stamps, text }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
