//! The inactivity probe: an echo after a quiet interval, and the session closed when nothing
//! at all arrives within the same interval again (a hung peer, or a dead TCP path that the
//! kernel would take many minutes to notice).

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use crate::session::{Closed, Session};

/// When the peer was last heard from: the reader touches it on every read.
#[derive(Debug)]
pub struct LastHeard(Mutex<Instant>);

impl Default for LastHeard {
    fn default() -> Self {
        LastHeard(Mutex::new(Instant::now()))
    }
}

impl LastHeard {
    /// Heard just now.
    pub fn new() -> Self {
        Self::default()
    }

    /// The peer sent something.
    pub fn touch(&self) {
        *self.0.lock().expect("last_heard lock") = Instant::now();
    }

    /// When it last did.
    pub fn at(&self) -> Instant {
        *self.0.lock().expect("last_heard lock")
    }
}

/// A session the probe watches.
pub trait Probed: Session {
    /// Who stays silent, for the reason the session closes with: `the switch`.
    const PEER: &'static str;

    /// Whether the session is over.
    fn closed(&self) -> &Closed;

    /// When the peer was last heard from.
    fn last_heard(&self) -> &LastHeard;

    /// Sends an echo request nothing waits for: any message that arrives after it proves the
    /// peer alive. False when the session can no longer send.
    fn send_probe(&self) -> bool;
}

/// Probes the session every `interval` of silence until it closes or is dropped (the task
/// holds it weakly, so it never keeps a session alive).
pub async fn probe<S: Probed>(session: Weak<S>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(s) = session.upgrade() else { return };
        if s.closed().is_closed() {
            return;
        }
        if s.last_heard().at().elapsed() < interval {
            continue;
        }
        let sent = Instant::now();
        if !s.send_probe() {
            return;
        }
        drop(s);
        tokio::time::sleep(interval).await;
        let Some(s) = session.upgrade() else { return };
        // Anything heard since the echo went out (its reply or any other message) proves the
        // peer alive. (Comparing the idle time with `interval` instead would close a healthy
        // session whenever the timer overshoots by more than the round trip.)
        if s.last_heard().at() < sent {
            Session::close(&*s, &format!("no message from {} for {:?} (inactivity probe)", S::PEER, interval * 2));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;

    struct Peer {
        closed: Closed,
        last_heard: LastHeard,
        answers: bool,
        probes: watch::Sender<usize>,
    }

    impl Session for Peer {
        fn close(&self, reason: &str) {
            self.closed.close(reason);
        }
    }

    impl Probed for Peer {
        const PEER: &'static str = "the peer";
        fn closed(&self) -> &Closed {
            &self.closed
        }
        fn last_heard(&self) -> &LastHeard {
            &self.last_heard
        }
        fn send_probe(&self) -> bool {
            self.probes.send_modify(|n| *n += 1);
            if self.answers {
                self.last_heard.touch();
            }
            true
        }
    }

    fn peer(answers: bool) -> Arc<Peer> {
        Arc::new(Peer { closed: Closed::new(), last_heard: LastHeard::new(), answers, probes: watch::channel(0).0 })
    }

    #[tokio::test]
    async fn a_silent_peer_is_closed_after_two_intervals() {
        let p = peer(false);
        let interval = Duration::from_millis(20);
        let started = Instant::now();
        probe(Arc::downgrade(&p), interval).await;
        assert!(started.elapsed() >= interval * 2, "{:?}", started.elapsed());
        assert_eq!(*p.probes.borrow(), 1);
        assert_eq!(p.closed.reason().as_deref(), Some("no message from the peer for 40ms (inactivity probe)"));
    }

    #[tokio::test]
    async fn a_peer_that_answers_stays_open_and_the_probe_ends_with_the_session() {
        let p = peer(true);
        let task = tokio::spawn(probe(Arc::downgrade(&p), Duration::from_millis(10)));
        let mut probes = p.probes.subscribe();
        tokio::time::timeout(Duration::from_secs(10), probes.wait_for(|n| *n >= 3))
            .await
            .expect("three probes within 10 s")
            .unwrap();
        assert!(!p.closed.is_closed());
        drop(p);
        // Holding the session weakly, the probe ends once the session is gone.
        task.await.unwrap();
    }
}
