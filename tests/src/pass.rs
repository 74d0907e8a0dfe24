//! Waiting for a reconcile pass that began after a given moment: what "the agent wrote nothing"
//! is judged after, instead of a fixed quiet window.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::AgentProc;

/// How long [`AgentProc::wait_pass_after_now`] may take.
const PASS_WITHIN: Duration = Duration::from_secs(30);
/// The first VNI of the tenants the helper creates; test tenants use far lower ones.
const NUDGE_VNI: u32 = 16_000_000;

/// Nudge tenants made by this process: each name and VNI is used once.
static NUDGES: AtomicU32 = AtomicU32::new(0);

/// What [`AgentProc::wait_pass_after_now`] reads from status.
struct Passes {
    /// `counters.reconciles`: passes begun.
    begun: u64,
    /// `last_error`: the last pass that ended failed.
    last_error: Option<String>,
    status: Value,
}

impl Passes {
    fn of(status: Value) -> Self {
        let begun = status["counters"]["reconciles"].as_u64().expect("status has counters.reconciles");
        let last_error = status["last_error"].as_str().map(str::to_owned);
        Passes { begun, last_error, status }
    }
}

impl AgentProc {
    /// Waits until a whole reconcile pass has run that began after this call, over a view
    /// holding every etcd change made before the call, and ended without an error; returns
    /// the status read then. Panics after 30 s.
    ///
    /// Why this identifies such a pass: `counters.reconciles` counts passes as they begin, and
    /// the agent runs one pass at a time. If status, read after some moment, shows `n`, every
    /// pass numbered above `n` begins after that moment; and pass `n + 1` has ended once the
    /// count reaches `n + 2`.
    ///
    /// How the passes are made to happen: the agent runs a pass after every change it sees, so
    /// the helper makes harmless ones. It creates tenants that no host joins (`nudge-<k>`,
    /// VNIs from 16,000,000 up): no agent builds anything for them. A tenant rather than an
    /// OVSDB row because status lists tenants, so the helper can tell when the agent has seen
    /// one; and etcd's watch delivers changes in order, so a view holding the nudge holds
    /// everything written to etcd before it.
    /// 1. Create a nudge and wait until status lists it; read the count `n` from a status read
    ///    after that one. Every pass above `n` starts from a view that holds the nudge.
    /// 2. Create another: the agent sees it after `n` was read and runs a pass after that, so a
    ///    pass above `n` begins. Wait for it.
    /// 3. Create a third once the count passed `n`: a pass numbered `n + 2` or more begins,
    ///    which happens only after pass `n + 1` has ended. Status then says whether the last
    ///    pass to end (`n + 1` or later) failed; if one did, nudge again until one succeeds.
    ///
    /// Callers that compare etcd before and after must leave `tenants/` and `vnis/` out. The
    /// agent must be registered and its API up.
    #[track_caller]
    pub fn wait_pass_after_now(&self) -> Value {
        let start = Instant::now();
        let first = self.nudge();
        self.poll(start, &format!("status to list tenant {first}"), |p| {
            let tenants = p.status["tenants"].as_array().expect("status has tenants");
            tenants.iter().any(|t| t["name"] == first.as_str())
        });
        self.wait_pass_after(Passes::of(self.status()).begun)
    }

    /// Steps 2 and 3 of [`AgentProc::wait_pass_after_now`]: waits until a pass numbered above
    /// `n` (read from `counters.reconciles`) has ended without an error; returns the status
    /// read then. For a caller that knows the agent has seen every change that matters (e.g.
    /// it has seen the agent act on the last one) and wants the passes begun so far counted
    /// exactly: the nudges' passes are all numbered above `n`.
    #[track_caller]
    pub fn wait_pass_after(&self, n: u64) -> Value {
        let start = Instant::now();
        let mut seen = n;
        loop {
            self.nudge();
            let p =
                self.poll(start, &format!("a reconcile pass after number {seen} (passes to begin after {n})"), |p| {
                    p.begun > seen
                });
            seen = p.begun;
            if p.begun >= n + 2 && p.last_error.is_none() {
                return p.status;
            }
        }
    }

    /// Creates a tenant no host joins; returns its name.
    fn nudge(&self) -> String {
        let k = NUDGES.fetch_add(1, Ordering::Relaxed);
        let name = format!("nudge-{k}");
        let vni = (NUDGE_VNI + k).to_string();
        self.cli_ok(&["tenant", "create", &name, "--vni", &vni, "--cidr", "198.19.0.0/16"]);
        name
    }

    /// Polls status until `done` holds for it; panics with the last status, the last pass
    /// error and the end of the log once [`PASS_WITHIN`] from `start` has passed.
    #[track_caller]
    fn poll(&self, start: Instant, what: &str, done: impl Fn(&Passes) -> bool) -> Passes {
        loop {
            let p = Passes::of(self.status());
            if done(&p) {
                return p;
            }
            assert!(
                start.elapsed() < PASS_WITHIN,
                "agent {}: timed out after {PASS_WITHIN:?} waiting for {what}; last error: {:?}\nstatus: {:#}\n\
                 --- agent log (end) ---\n{}",
                self.hostname,
                p.last_error,
                p.status["counters"],
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
