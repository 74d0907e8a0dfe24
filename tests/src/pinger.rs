//! A continuous ping from a container that accounts for every echo: what the fault and
//! restart tests judge loss by.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::Container;

/// The fewest echoes a [`Pinger`] sends before it stops: 2 s of them at 0.05 s.
const ECHOES_AT_LEAST: u64 = 40;
/// How long [`Pinger::stop`] waits for them: a ping stuck this long is a failure of its own
/// ("ping hardly ran").
const ECHOES_WITHIN: Duration = Duration::from_secs(10);

/// What ping has said so far.
#[derive(Default)]
struct Progress {
    lines: Vec<String>,
    /// The highest sequence number ping has reported, answered or not.
    sent: u64,
    replies: u64,
}

/// A continuous `ping -i 0.05` from a container, stopped with SIGINT; every echo is accounted.
pub struct Pinger {
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
    progress: Arc<Mutex<Progress>>,
    what: String,
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
        // -O: an echo still unanswered when the next goes is reported ("no answer yet for
        // icmp_seq=N"), so the echoes sent can be counted while ping runs.
        let mut child = from
            .command(&["ping", "-n", "-D", "-O", "-i", "0.05", "-W", "1", ip])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning ping");
        let out = child.stdout.take().expect("ping stdout");
        let progress = Arc::new(Mutex::new(Progress::default()));
        let reader = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let mut p = progress.lock().expect("ping progress");
                    if let Some(seq) = seq_of(&line) {
                        p.sent = p.sent.max(seq);
                        p.replies += u64::from(line.contains("bytes from"));
                    }
                    p.lines.push(line);
                }
            })
        };
        let what = format!("ping {ip} from {}", from.name());
        Pinger { child: Some(child), reader: Some(reader), progress, what }
    }

    /// Waits until `n` echoes have been answered (traffic flows); panics after 20 s.
    #[track_caller]
    pub fn wait_replies(&self, n: u64) {
        testbed::wait_until(Duration::from_secs(20), &format!("{n} replies to {}", self.what), || {
            self.progress.lock().expect("ping progress").replies >= n
        });
    }

    /// Stops ping once it has sent [`ECHOES_AT_LEAST`] echoes (or after [`ECHOES_WITHIN`]): a
    /// phase of a test that ends sooner still gets enough echoes to judge.
    pub fn stop(mut self) -> PingReport {
        let _ = testbed::try_wait_for(ECHOES_WITHIN, "echoes", || {
            (self.progress.lock().expect("ping progress").sent >= ECHOES_AT_LEAST).then_some(())
        });
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.reader.take().expect("reader").join().expect("ping reader");
        let lines = std::mem::take(&mut self.progress.lock().expect("ping progress").lines);
        let stamps: BTreeMap<u64, String> = lines
            .iter()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| Some((seq_of(l)?, l.split(']').next()?.trim_start_matches('[').to_owned())))
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

/// The `icmp_seq=` of a line of ping's output.
fn seq_of(line: &str) -> Option<u64> {
    line.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
