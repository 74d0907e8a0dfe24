//! The OpenFlow layer of the data plane: one connection per bridge (its management socket),
//! what the agent knows each bridge holds (the cookies of its flows), and the changes sent as
//! one atomic bundle per bridge and pass.
//!
//! The switch is read back (a dump of the agent's cookies) when a connection is new (an
//! ovs-vswitchd restart empties its tables; an agent restart finds them full) and at every full
//! pass; in between, what the last successful bundle left is trusted.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openflow_client::{ClientError, FlowMod, FlowStatsRequest, Switch, SwitchOptions, SwitchState, Target, OFPTT_ALL};
use overlay::model::MacAddr;
use overlay::pipeline::{self, Entry, PipelineInput, PortInput, TunGroups, COOKIE_MASK, COOKIE_PREFIX};
use ovsdb_client::Atom;
use tokio::sync::watch;

use super::PassError;
use crate::ovs::Ovsdb;

/// The lowest ofport a plug requests for a container port: below it, ovs-vswitchd numbers the
/// ports the agent does not plan (patch, tunnel, other tools').
const FIRST_CONTAINER_OFPORT: u32 = 1000;

/// How long an operation waits for a bridge's OpenFlow connection to come up: a bridge just
/// created has its management socket a moment later. Longer waits would hold the plumbing lock
/// for nothing: the reconcile loop is woken when the connection comes up.
const CONNECT_WITHIN: Duration = Duration::from_secs(1);

/// A container port a plug is making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The ofport it requested (or got).
    pub ofport: u32,
    /// The container's MAC and address, once the plug knows them.
    pub endpoint: Option<(MacAddr, IpAddr)>,
    /// The plug finished: its record takes over once the cache shows it.
    done: bool,
}

/// What the agent knows one bridge holds.
#[derive(Default)]
pub struct Held {
    /// The connection epoch the cookies were read or written in.
    epoch: Option<u64>,
    /// Cookie -> the container port (in_port) the flow is about, if it is a port flow.
    cookies: pipeline::CookieMap<Option<u32>>,
}

impl Held {
    /// The bridge's table was emptied behind the agent's back: the next apply reads it back.
    pub(super) fn forget(&mut self) {
        self.epoch = None;
    }
}

/// What the agent knows br-tun holds, and its flows by tenant as the last pass computed them.
#[derive(Default)]
struct TunHeld {
    held: Held,
    groups: TunGroups,
    /// The bridge holds exactly `groups`' flows (the last pass sent their changes, or found
    /// none): the next pass compares tenant by tenant, and only those whose input changed.
    in_sync: bool,
}

/// The flows of the two bridges.
pub struct FlowPlane {
    int: Switch,
    tun: Switch,
    int_name: String,
    tun_name: String,
    pending: Mutex<BTreeMap<String, Pending>>,
    /// What br-tun holds. Its own lock, which only passes take: br-tun's flows are the
    /// cluster-sized part of a pass, and a plug never waits for them (it changes br-int only).
    tun_held: tokio::sync::Mutex<TunHeld>,
    /// ovs-vswitchd emptied br-tun's table (see [`FlowPlane::tun_emptied`]): the next apply to
    /// it reads it back. A flag, not `tun_held`'s lock, which the plumbing lock never waits for.
    tun_emptied: AtomicBool,
    /// Bundles sent, by passes and plugs alike: every one goes out through [`FlowPlane::send`].
    bundles: AtomicU64,
}

impl FlowPlane {
    /// Connections to both bridges' management sockets in `rundir`, made in the background
    /// (and again whenever ovs-vswitchd restarts).
    pub fn start(rundir: &Path, int_bridge: &str, tun_bridge: &str) -> FlowPlane {
        let switch = |bridge: &str| {
            let mut options = SwitchOptions::new(Target::mgmt(Some(rundir), bridge));
            // A local socket: trying again every second at most costs nothing, and a bridge the
            // first pass just created should get its flows at once.
            options.backoff_max = Duration::from_secs(1);
            Switch::start(options)
        };
        FlowPlane {
            int: switch(int_bridge),
            tun: switch(tun_bridge),
            int_name: int_bridge.to_owned(),
            tun_name: tun_bridge.to_owned(),
            pending: Mutex::new(BTreeMap::new()),
            tun_held: tokio::sync::Mutex::default(),
            tun_emptied: AtomicBool::new(false),
            bundles: AtomicU64::new(0),
        }
    }

    /// The connection states of (br-int, br-tun): a new epoch means a pass must read the bridge
    /// back and put its flows in again.
    pub fn states(&self) -> (watch::Receiver<SwitchState>, watch::Receiver<SwitchState>) {
        (self.int.state(), self.tun.state())
    }

    /// OpenFlow bundles sent since the agent started.
    pub fn bundles_sent(&self) -> u64 {
        self.bundles.load(Ordering::Relaxed)
    }

    /// The plugs in progress.
    pub(super) fn pending(&self) -> BTreeMap<String, Pending> {
        self.pending.lock().expect("pending lock").clone()
    }

    /// Forgets finished plugs whose record the cache shows (`recorded` port names).
    pub(super) fn forget_recorded(&self, recorded: &HashSet<&str>) {
        self.pending.lock().expect("pending lock").retain(|port, p| !(p.done && recorded.contains(port.as_str())));
    }

    /// Makes br-int hold `desired` (`held` is br-int's, under the plumbing lock); returns how
    /// many bundles it sent.
    pub(super) async fn apply_int(&self, held: &mut Held, desired: &[Entry], full: bool) -> Result<usize, PassError> {
        self.apply(&self.int, &self.int_name, held, desired, full).await
    }

    /// Makes br-tun hold the flows of `input`, under br-tun's own lock; returns how many
    /// bundles it sent, and the flows (for status). Only tenants whose input changed since the
    /// last pass are computed and compared, unless the bridge was read back (`full`, a new
    /// connection, a table ovs-vswitchd emptied): then every flow is compared with the switch.
    pub(super) async fn apply_tun(&self, input: &PipelineInput, full: bool) -> Result<(usize, TunGroups), PassError> {
        let mut tun = self.tun_held.lock().await;
        let TunHeld { held, groups, in_sync } = &mut *tun;
        // Taken under the lock: an apply already past its read-back leaves the flag for the next.
        let full = self.tun_emptied.swap(false, Ordering::AcqRel) || full;
        let epoch = connected(&self.tun, &self.tun_name).await?;
        if full || held.epoch != Some(epoch) {
            let err = |source| PassError::OpenFlow { bridge: self.tun_name.clone(), source };
            read_back(&self.tun, held, epoch).await.map_err(err)?;
            *in_sync = false;
        }
        let next = TunGroups::compute(input, groups);
        let all: Vec<&Entry>;
        let (add, delete) = if *in_sync {
            next.changes_since(groups)
        } else {
            all = next.sorted();
            if all.windows(2).any(|w| w[0].cookie == w[1].cookie) {
                return self.apply_tun_salted(held, groups, in_sync, input, next.clone()).await;
            }
            pipeline::changes(&all, &held.cookies)
        };
        // In sync, the bridge holds exactly the last groups: an added cookie it holds and does
        // not delete belongs to another tenant's flow (a hash clash between groups).
        if *in_sync
            && add.iter().any(|e| held.cookies.contains_key(&e.cookie) && delete.binary_search(&e.cookie).is_err())
        {
            return self.apply_tun_salted(held, groups, in_sync, input, next.clone()).await;
        }
        let sent = if add.is_empty() && delete.is_empty() {
            0
        } else {
            self.send(&self.tun, &self.tun_name, held, &add, &delete).await.inspect_err(|_| *in_sync = false)?;
            1
        };
        *in_sync = true;
        *groups = next.clone();
        Ok((sent, next))
    }

    /// [`FlowPlane::apply_tun`] when two tenants' flows hash to one cookie: the whole pipeline,
    /// its clashing cookies salted, compared with the switch flow by flow (every pass, for as
    /// long as the clash lasts).
    async fn apply_tun_salted(
        &self,
        held: &mut Held,
        groups: &mut TunGroups,
        in_sync: &mut bool,
        input: &PipelineInput,
        next: TunGroups,
    ) -> Result<(usize, TunGroups), PassError> {
        tracing::debug!("two flows of br-tun hash to one cookie: comparing the whole pipeline, salted");
        *in_sync = false;
        *groups = next.clone();
        let flows = pipeline::tun_flows(input);
        let (add, delete) = pipeline::changes(&flows, &held.cookies);
        if add.is_empty() && delete.is_empty() {
            return Ok((0, next));
        }
        self.send(&self.tun, &self.tun_name, held, &add, &delete).await?;
        Ok((1, next))
    }

    /// ovs-vswitchd emptied br-tun's table (its fail_mode or datapath changed): what the agent
    /// counted as installed there is read back by the next [`FlowPlane::apply_tun`].
    pub(super) fn tun_emptied(&self) {
        self.tun_emptied.store(true, Ordering::Release);
    }

    async fn apply(
        &self,
        switch: &Switch,
        name: &str,
        held: &mut Held,
        desired: &[Entry],
        full: bool,
    ) -> Result<usize, PassError> {
        let err = |source| PassError::OpenFlow { bridge: name.to_owned(), source };
        let epoch = connected(switch, name).await?;
        if full || held.epoch != Some(epoch) {
            read_back(switch, held, epoch).await.map_err(err)?;
        }
        let (add, delete) = pipeline::changes(desired, &held.cookies);
        if add.is_empty() && delete.is_empty() {
            return Ok(0);
        }
        self.send(switch, name, held, &add, &delete).await?;
        Ok(1)
    }

    /// One bundle: `delete` by exact cookie, then `add`; what `held` records follows. The adds
    /// are rendered as the bundle streams out, so a cold start's tens of thousands of flows are
    /// never all in memory as OpenFlow values at once.
    async fn send(
        &self,
        switch: &Switch,
        name: &str,
        held: &mut Held,
        add: &[&Entry],
        delete: &[u64],
    ) -> Result<(), PassError> {
        let started = Instant::now();
        let invalid: Mutex<Option<PassError>> = Mutex::new(None);
        let deletes = delete.iter().copied().map(delete_exactly);
        let adds = Rendered { entries: add.iter(), invalid: &invalid };
        let sent = switch.bundle_iter(deletes.chain(adds)).await;
        // Counted like OVSDB transactions: once it went out, whatever the answer.
        if !matches!(sent, Err(ClientError::NotConnected { .. })) {
            self.bundles.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(source) = sent {
            // Whatever happened to the bridge, read it back before trusting `held` again.
            held.epoch = None;
            return Err(PassError::OpenFlow { bridge: name.to_owned(), source });
        }
        for c in delete {
            held.cookies.remove(c);
        }
        let invalid = invalid.into_inner().expect("invalid lock");
        for e in add {
            held.cookies.insert(e.cookie, e.spec.in_port());
        }
        if let Some(e) = invalid {
            // The invalid flow was left out of the bundle: read back what the bridge holds.
            held.epoch = None;
            return Err(e);
        }
        tracing::info!(
            bridge = name,
            added = add.len(),
            deleted = delete.len(),
            flows = held.cookies.len(),
            took_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "flows updated"
        );
        Ok(())
    }

    /// See [`super::DataPlane::reserve_port`].
    pub(super) async fn reserve_port(
        &self,
        held: &mut Held,
        ovs: &Ovsdb,
        int_bridge: &str,
        port: &str,
        endpoint: Option<(MacAddr, IpAddr)>,
    ) -> Result<u32, PassError> {
        let err = |source| PassError::OpenFlow { bridge: self.int_name.clone(), source };
        let epoch = connected(&self.int, &self.int_name).await?;
        if held.epoch != Some(epoch) {
            read_back(&self.int, held, epoch).await.map_err(err)?;
        }
        let ofport = {
            let mut used: HashSet<u32> = used_ofports(ovs, int_bridge);
            used.extend(self.pending.lock().expect("pending lock").values().map(|p| p.ofport));
            (FIRST_CONTAINER_OFPORT..).find(|p| !used.contains(p)).expect("a free ofport")
        };
        // Flows left on that number by a port that went (their pass may not have run yet) go in
        // the same bundle that puts the new port's in.
        let stale: Vec<u64> = held.cookies.iter().filter(|(_, p)| **p == Some(ofport)).map(|(c, _)| *c).collect();
        let flows = pipeline::port_flows(&PortInput { ofport, endpoint });
        let add: Vec<&Entry> = flows.iter().filter(|e| !held.cookies.contains_key(&e.cookie)).collect();
        let stale: Vec<u64> = stale.into_iter().filter(|c| !flows.iter().any(|e| e.cookie == *c)).collect();
        self.pending.lock().expect("pending lock").insert(port.to_owned(), Pending { ofport, endpoint, done: false });
        if !add.is_empty() || !stale.is_empty() {
            if let Err(e) = self.send(&self.int, &self.int_name, held, &add, &stale).await {
                self.pending.lock().expect("pending lock").remove(port);
                return Err(e);
            }
        }
        Ok(ofport)
    }

    /// See [`super::DataPlane::allow_port`].
    pub(super) async fn allow_port(
        &self,
        held: &mut Held,
        ovs: &Ovsdb,
        port: &str,
        endpoint: (MacAddr, IpAddr),
    ) -> Result<(), PassError> {
        let actual = {
            let r = ovs.replica();
            r.table("Interface")
                .find_one("name", &Atom::from(port))
                .and_then(|(_, row)| row.get_as::<Option<i64>>("ofport").ok().flatten())
                .and_then(|p| u32::try_from(p).ok())
        };
        let ofport = {
            let mut pending = self.pending.lock().expect("pending lock");
            let Some(p) = pending.get_mut(port) else { return Ok(()) };
            p.endpoint = Some(endpoint);
            if let Some(a) = actual.filter(|a| *a != p.ofport) {
                tracing::warn!(%port, requested = p.ofport, got = a, "ovs-vswitchd gave the port another ofport than asked");
                p.ofport = a;
            }
            p.ofport
        };
        let err = |source| PassError::OpenFlow { bridge: self.int_name.clone(), source };
        let epoch = connected(&self.int, &self.int_name).await?;
        if held.epoch != Some(epoch) {
            read_back(&self.int, held, epoch).await.map_err(err)?;
        }
        let open = pipeline::port_flows(&PortInput { ofport, endpoint: Some(endpoint) });
        let add: Vec<&Entry> = open.iter().filter(|e| !held.cookies.contains_key(&e.cookie)).collect();
        if add.is_empty() {
            return Ok(());
        }
        self.send(&self.int, &self.int_name, held, &add, &[]).await
    }

    /// See [`super::DataPlane::release_port`].
    pub(super) fn release_port(&self, port: &str, succeeded: bool) {
        let mut pending = self.pending.lock().expect("pending lock");
        if succeeded {
            if let Some(p) = pending.get_mut(port) {
                p.done = true;
            }
        } else {
            pending.remove(port);
        }
    }
}

/// The epoch of `switch`'s session (bridge `name`), once it is up ([`CONNECT_WITHIN`] at most).
async fn connected(switch: &Switch, name: &str) -> Result<u64, PassError> {
    switch
        .wait_connected(CONNECT_WITHIN)
        .await
        .map_err(|source| PassError::SwitchUnreachable { bridge: name.to_owned(), source })
}

/// The flow_mod that deletes the flow of `cookie`, in whichever table.
fn delete_exactly(cookie: u64) -> FlowMod {
    FlowMod::delete_by_cookie(OFPTT_ALL, cookie, u64::MAX)
}

/// The adds of a bundle, rendered one by one as the bundle is sent; a spec that does not
/// render is left out and kept in `invalid` (a bug of the pipeline, reported after).
struct Rendered<'a> {
    entries: std::slice::Iter<'a, &'a Entry>,
    invalid: &'a Mutex<Option<PassError>>,
}

impl Iterator for Rendered<'_> {
    type Item = FlowMod;

    fn next(&mut self) -> Option<FlowMod> {
        for e in self.entries.by_ref() {
            match e.spec.render(e.cookie) {
                Ok(flow) => return Some(FlowMod::add(flow)),
                Err(source) => {
                    let spec = format!("{:?}", e.spec);
                    self.invalid.lock().expect("invalid lock").get_or_insert(PassError::InvalidFlow { spec, source });
                }
            }
        }
        None
    }
}

/// Reads back the cookies of the agent's flows on a bridge (connection `epoch`).
async fn read_back(switch: &Switch, held: &mut Held, epoch: u64) -> Result<(), ClientError> {
    let started = Instant::now();
    let flows = switch.dump_cookies(&FlowStatsRequest::all().cookie(COOKIE_PREFIX, COOKIE_MASK)).await?;
    let known = std::mem::take(&mut held.cookies);
    held.cookies = flows.iter().map(|f| (f.cookie, known.get(&f.cookie).copied().flatten())).collect();
    held.epoch = Some(epoch);
    tracing::debug!(
        flows = held.cookies.len(),
        took_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "read the bridge's flows back"
    );
    Ok(())
}

/// The ofports and requested ofports of every interface in the replica.
fn used_ofports(ovs: &Ovsdb, _bridge: &str) -> HashSet<u32> {
    let r = ovs.replica();
    r.table("Interface")
        .rows()
        .flat_map(|(_, row)| {
            let get = |c: &str| row.get_as::<Option<i64>>(c).ok().flatten().and_then(|p| u32::try_from(p).ok());
            [get("ofport"), get("ofport_request")]
        })
        .flatten()
        .collect()
}
