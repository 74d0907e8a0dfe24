//! Polling helpers: wait for a condition with a deadline and a short backoff, never a fixed sleep.

use std::time::{Duration, Instant};

/// First pause between two polls; doubled after every failed poll up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between two polls.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Polls `f` until it returns `Some`, for at most `deadline`.
///
/// `f` is called at once, then with a short growing backoff (5 ms .. 100 ms), and a last time
/// when the deadline has passed. On timeout, returns `Err("timed out after <deadline> waiting
/// for <what>")`.
pub fn try_wait_for<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let start = Instant::now();
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        std::thread::sleep(backoff.min(deadline - elapsed));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Polls `f` until it returns `Some(v)` and returns `v`; panics with
/// `timed out after <deadline> waiting for <what>` otherwise.
#[track_caller]
pub fn wait_for<T>(deadline: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    match try_wait_for(deadline, what, f) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Polls `f` until it returns `true`; panics with
/// `timed out after <deadline> waiting for <what>` otherwise.
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(deadline, what, || f().then_some(()))
}

/// Checks `f` for `duration`, every `every` (and once more at the end): the condition must
/// hold the whole time. Panics with `<what> stopped holding after <t>: <error>` at the first
/// check that fails.
#[track_caller]
pub fn hold_for(duration: Duration, every: Duration, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        if let Err(e) = f() {
            panic!("{what} stopped holding after {:?}: {e}", start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return;
        }
        std::thread::sleep(every.min(duration - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_value_once_ready() {
        let mut n = 0;
        let v = wait_for(Duration::from_secs(2), "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_message() {
        let err = try_wait_for::<()>(Duration::from_millis(30), "nothing", || None).unwrap_err();
        assert!(err.contains("timed out after 30ms waiting for nothing"), "{err}");
    }

    #[test]
    fn hold_for_checks_until_the_end() {
        let mut n = 0;
        hold_for(Duration::from_millis(30), Duration::from_millis(5), "n", || {
            n += 1;
            Ok(())
        });
        assert!(n >= 3, "checked {n} times");
    }

    #[test]
    #[should_panic(expected = "n stopped holding after")]
    fn hold_for_panics_at_the_first_failure() {
        let mut n = 0;
        hold_for(Duration::from_secs(10), Duration::from_millis(1), "n", || {
            n += 1;
            if n < 3 {
                Ok(())
            } else {
                Err("n is 3".into())
            }
        });
    }

    #[test]
    #[should_panic(expected = "waiting for never")]
    fn wait_until_panics() {
        wait_until(Duration::from_millis(10), "never", || false);
    }
}
