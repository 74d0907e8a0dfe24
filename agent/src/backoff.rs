//! The one retry delay of the agent: exponential, capped, with jitter, so agents retrying after
//! the same outage do not retry in step.

use std::time::Duration;

/// An exponential backoff: `initial`, doubling up to `max`, each delay scaled by 0.8..1.2.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, next: initial }
    }

    /// The delay for a retry now, jittered; the one after it is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(d)
    }

    /// Sleeps [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// `d` scaled by a factor in 0.8..1.2 taken from the clock's nanoseconds: enough to spread
/// agents that failed at the same moment, no random generator needed.
fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    d.mul_f64(0.8 + f64::from(nanos % 400) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_starts_over_after_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let within = |d: Duration, nominal: u64| {
            let ms = d.as_secs_f64() * 1e3;
            (nominal as f64 * 0.8..=nominal as f64 * 1.2).contains(&ms)
        };
        for nominal in [100, 200, 350, 350] {
            let d = b.next_delay();
            assert!(within(d, nominal), "{d:?} is not {nominal} ms +-20%");
        }
        b.reset();
        assert!(within(b.next_delay(), 100));
    }
}
