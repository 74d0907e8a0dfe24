//! A guard running arbitrary clean-up closures on drop, even when the test panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

type Action = Box<dyn FnOnce() + Send>;

/// Collects clean-up closures; runs them in reverse order of registration on drop (or on
/// [`Cleanup::run`]). A panicking closure is reported on stderr and does not stop the others.
#[derive(Default)]
pub struct Cleanup {
    actions: Mutex<Vec<Action>>,
}

impl Cleanup {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` to run at clean-up time.
    pub fn add(&self, f: impl FnOnce() + Send + 'static) {
        self.actions.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(f));
    }

    /// Runs (and forgets) every registered closure now, last registered first.
    pub fn run(&self) {
        let actions = std::mem::take(&mut *self.actions.lock().unwrap_or_else(|e| e.into_inner()));
        for f in actions.into_iter().rev() {
            if catch_unwind(AssertUnwindSafe(f)).is_err() {
                eprintln!("testbed: a clean-up action panicked");
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn runs_in_reverse_even_after_a_panic() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let c = Cleanup::new();
            for i in 0..3 {
                let log = log.clone();
                c.add(move || log.lock().unwrap().push(i));
            }
            c.add(|| panic!("boom"));
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
    }
}
