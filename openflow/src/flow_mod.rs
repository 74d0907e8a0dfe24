//! Flows as canonical values ([`Flow`], identified by [`FlowKey`]) and the `OFPT_FLOW_MOD`
//! message that adds, modifies or deletes them ([`FlowMod`]).

use std::fmt;

use crate::action::{fmt_port, port, Action};
use crate::error::{DecodeError, EncodeError, FlowError};
use crate::flow_match::Match;
use crate::header::{finish_message, msg_type, start_message, Header, HEADER_LEN};
use crate::instruction::Instructions;
use crate::wire::{Put, Reader};

/// "Any group" in flow_mod delete and flow stats requests.
pub const OFPG_ANY: u32 = 0xffff_ffff;
/// "All tables" in flow_mod delete and flow stats requests.
pub const OFPTT_ALL: u8 = 0xff;
/// No buffered packet.
const OFP_NO_BUFFER: u32 = 0xffff_ffff;

/// A flow as the switch holds it: what [`crate::FlowStats`] decodes and what a desired-state
/// computation produces. Two flows are equal when the switch would treat them as the same
/// entry with the same behaviour; the canonical forms of [`Match`] and [`Instructions`] make
/// that plain `==`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// Table.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Opaque owner tag; not part of the identity ([`FlowKey`]).
    pub cookie: u64,
    /// Seconds without a hit before the switch removes the flow (0: never).
    pub idle_timeout: u16,
    /// Seconds before the switch removes the flow (0: never).
    pub hard_timeout: u16,
    /// What packets it matches.
    pub matching: Match,
    /// What it does with them.
    pub instructions: Instructions,
}

/// What makes a flow one entry of the switch's table (OpenFlow's "identical match"): two flows
/// with the same key cannot coexist; an add of one replaces the other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// Table.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Match.
    pub matching: Match,
}

impl Flow {
    /// A builder for a flow in `table` at `priority`.
    pub fn builder(table: u8, priority: u16) -> FlowBuilder {
        FlowBuilder {
            flow: Flow {
                table,
                priority,
                cookie: 0,
                idle_timeout: 0,
                hard_timeout: 0,
                matching: Match::new(),
                instructions: Instructions::default(),
            },
        }
    }

    /// The flow's identity in its table.
    pub fn key(&self) -> FlowKey {
        FlowKey { table: self.table, priority: self.priority, matching: self.matching.clone() }
    }

    /// Checks what Open vSwitch checks on install: the match's prerequisites, the actions'
    /// needs of the match, and that `goto_table` goes forward.
    pub fn validate(&self) -> Result<(), FlowError> {
        self.matching.validate()?;
        self.instructions.check(&self.matching, self.table)
    }
}

impl fmt::Display for Flow {
    /// ovs-ofctl's `dump-flows --no-stats` form (with this crate's field names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cookie={:#x}, table={}, priority={}", self.cookie, self.table, self.priority)?;
        if self.idle_timeout != 0 {
            write!(f, ", idle_timeout={}", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, ", hard_timeout={}", self.hard_timeout)?;
        }
        if !self.matching.is_empty() {
            write!(f, ",{}", self.matching)?;
        }
        write!(f, " actions={}", self.instructions)
    }
}

/// Builds a [`Flow`]; [`FlowBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct FlowBuilder {
    flow: Flow,
}

impl FlowBuilder {
    /// The cookie.
    pub fn cookie(mut self, cookie: u64) -> Self {
        self.flow.cookie = cookie;
        self
    }
    /// The match (from [`Match::builder`]).
    pub fn matching(mut self, m: Match) -> Self {
        self.flow.matching = m;
        self
    }
    /// Apply-actions (replacing any given before).
    pub fn actions(mut self, actions: impl IntoIterator<Item = Action>) -> Self {
        self.flow.instructions.apply = actions.into_iter().collect();
        self
    }
    /// One more apply-action.
    pub fn action(mut self, action: Action) -> Self {
        self.flow.instructions.apply.push(action);
        self
    }
    /// `write_metadata:value/mask`.
    pub fn write_metadata(mut self, value: u64, mask: u64) -> Self {
        self.flow.instructions.write_metadata = Some((value, mask));
        self
    }
    /// `goto_table:table`.
    pub fn goto_table(mut self, table: u8) -> Self {
        self.flow.instructions.goto_table = Some(table);
        self
    }
    /// All instructions at once.
    pub fn instructions(mut self, instructions: Instructions) -> Self {
        self.flow.instructions = instructions;
        self
    }
    /// Idle and hard timeouts in seconds.
    pub fn timeouts(mut self, idle: u16, hard: u16) -> Self {
        self.flow.idle_timeout = idle;
        self.flow.hard_timeout = hard;
        self
    }
    /// The flow, validated ([`Flow::validate`]), its actions in canonical form
    /// ([`Action::canonicalize`]) so that it equals the flow the switch reports.
    pub fn build(mut self) -> Result<Flow, FlowError> {
        let ins = &mut self.flow.instructions;
        ins.apply.iter_mut().chain(ins.write.iter_mut()).for_each(Action::canonicalize);
        self.flow.validate()?;
        Ok(self.flow)
    }
}

/// `ofp_flow_mod_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    /// Add, replacing a flow with the same [`FlowKey`] (its counters reset).
    Add = 0,
    /// Change the instructions of every flow the match covers (cookie filtered by the mask).
    Modify = 1,
    /// Change the instructions of the flow with exactly this key.
    ModifyStrict = 2,
    /// Delete every flow the match covers (cookie filtered by the mask, `out_port`).
    Delete = 3,
    /// Delete the flow with exactly this key.
    DeleteStrict = 4,
}

impl FlowModCommand {
    fn from_u8(v: u8) -> Option<FlowModCommand> {
        use FlowModCommand::*;
        [Add, Modify, ModifyStrict, Delete, DeleteStrict].get(usize::from(v)).copied()
    }

    /// `add`, `modify`, `modify_strict`, `delete`, `delete_strict`.
    pub fn name(self) -> &'static str {
        match self {
            FlowModCommand::Add => "add",
            FlowModCommand::Modify => "modify",
            FlowModCommand::ModifyStrict => "modify_strict",
            FlowModCommand::Delete => "delete",
            FlowModCommand::DeleteStrict => "delete_strict",
        }
    }
}

/// `OFPFF_SEND_FLOW_REM`.
pub const OFPFF_SEND_FLOW_REM: u16 = 1;
/// `OFPFF_CHECK_OVERLAP`.
pub const OFPFF_CHECK_OVERLAP: u16 = 2;
/// `OFPFF_RESET_COUNTS`.
pub const OFPFF_RESET_COUNTS: u16 = 4;

/// One `OFPT_FLOW_MOD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    /// What to do.
    pub command: FlowModCommand,
    /// The flow (for deletes, only table, priority (strict), cookie and match count).
    pub flow: Flow,
    /// Which cookie bits must equal `flow.cookie` for modify and delete (0: any cookie).
    pub cookie_mask: u64,
    /// Delete only flows that output to this port ([`port::ANY`]: any).
    pub out_port: u32,
    /// Delete only flows that output to this group ([`OFPG_ANY`]: any).
    pub out_group: u32,
    /// `OFPFF_*` flags.
    pub flags: u16,
}

impl FlowMod {
    fn new(command: FlowModCommand, flow: Flow) -> FlowMod {
        FlowMod { command, flow, cookie_mask: 0, out_port: port::ANY, out_group: OFPG_ANY, flags: 0 }
    }

    /// Adds `flow` (replacing one with the same key).
    pub fn add(flow: Flow) -> FlowMod {
        FlowMod::new(FlowModCommand::Add, flow)
    }

    /// Replaces the instructions of the flow with `flow`'s key, if there is one (its cookie and
    /// counters stay).
    pub fn modify_strict(flow: Flow) -> FlowMod {
        FlowMod::new(FlowModCommand::ModifyStrict, flow)
    }

    /// Replaces the instructions of every flow in `flow.table` that `flow.matching` covers and
    /// whose cookie equals `flow.cookie` under `cookie_mask`.
    pub fn modify(flow: Flow, cookie_mask: u64) -> FlowMod {
        FlowMod { cookie_mask, ..FlowMod::new(FlowModCommand::Modify, flow) }
    }

    /// Deletes exactly the flow with `key`.
    pub fn delete_strict(key: &FlowKey) -> FlowMod {
        let flow = Flow { table: key.table, priority: key.priority, matching: key.matching.clone(), ..empty_flow() };
        FlowMod::new(FlowModCommand::DeleteStrict, flow)
    }

    /// Deletes every flow of `table` ([`OFPTT_ALL`]: every table) that `matching` covers.
    pub fn delete(table: u8, matching: Match) -> FlowMod {
        FlowMod::new(FlowModCommand::Delete, Flow { table, matching, ..empty_flow() })
    }

    /// Deletes every flow of `table` ([`OFPTT_ALL`]: every table) whose cookie equals `cookie`
    /// under `cookie_mask` (`u64::MAX`: exactly this cookie).
    pub fn delete_by_cookie(table: u8, cookie: u64, cookie_mask: u64) -> FlowMod {
        FlowMod { cookie_mask, ..FlowMod::new(FlowModCommand::Delete, Flow { table, cookie, ..empty_flow() }) }
    }

    /// Restricts a delete to flows that output to `port`.
    pub fn out_port(mut self, port: u32) -> FlowMod {
        self.out_port = port;
        self
    }

    /// Sets the `OFPFF_*` flags.
    pub fn flags(mut self, flags: u16) -> FlowMod {
        self.flags = flags;
        self
    }

    /// Appends the message (`version` 1.3 or 1.4: the layout is the same).
    pub fn encode(&self, version: u8, xid: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = start_message(out, version, msg_type::FLOW_MOD, xid);
        let f = &self.flow;
        out.put_u64(f.cookie);
        out.put_u64(self.cookie_mask);
        out.put_u8(f.table);
        out.put_u8(self.command as u8);
        out.put_u16(f.idle_timeout);
        out.put_u16(f.hard_timeout);
        out.put_u16(f.priority);
        out.put_u32(OFP_NO_BUFFER);
        out.put_u32(self.out_port);
        out.put_u32(self.out_group);
        out.put_u16(self.flags);
        out.put_u16(0); // pad (OpenFlow 1.3), importance 0 (1.4)
        f.matching.encode(out)?;
        f.instructions.encode(out)?;
        finish_message(out, start)
    }

    /// The message alone.
    pub fn to_bytes(&self, version: u8, xid: u32) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode(version, xid, &mut out)?;
        Ok(out)
    }

    /// Decodes a whole `OFPT_FLOW_MOD` (header included), as [`FlowMod::encode`] writes it:
    /// what a client that keeps only the bytes it sent reads back to name a refused flow_mod.
    pub fn decode(message: &[u8]) -> Result<FlowMod, DecodeError> {
        let h = Header::parse(message)?;
        if h.msg_type != msg_type::FLOW_MOD {
            return Err(DecodeError::UnexpectedType {
                msg_type: h.msg_type,
                name: crate::header::type_name(h.msg_type),
            });
        }
        let len = usize::from(h.length);
        let body = message.get(HEADER_LEN..len).ok_or(DecodeError::BadLength {
            what: "flow_mod",
            len,
            reason: "longer than the bytes given",
        })?;
        let mut r = Reader::new(body);
        let cookie = r.u64("flow_mod cookie")?;
        let cookie_mask = r.u64("flow_mod cookie_mask")?;
        let table = r.u8("flow_mod table_id")?;
        let command = r.u8("flow_mod command")?;
        let command = FlowModCommand::from_u8(command)
            .ok_or_else(|| DecodeError::BadValue { what: "flow_mod command", detail: command.to_string() })?;
        let idle_timeout = r.u16("flow_mod idle_timeout")?;
        let hard_timeout = r.u16("flow_mod hard_timeout")?;
        let priority = r.u16("flow_mod priority")?;
        r.skip(4, "flow_mod buffer_id")?;
        let out_port = r.u32("flow_mod out_port")?;
        let out_group = r.u32("flow_mod out_group")?;
        let flags = r.u16("flow_mod flags")?;
        r.skip(2, "flow_mod pad / importance")?;
        let matching = Match::decode(&mut r)?;
        let instructions = Instructions::decode(&mut r)?;
        let flow = Flow { table, priority, cookie, idle_timeout, hard_timeout, matching, instructions };
        Ok(FlowMod { command, flow, cookie_mask, out_port, out_group, flags })
    }
}

fn empty_flow() -> Flow {
    Flow {
        table: 0,
        priority: 0,
        cookie: 0,
        idle_timeout: 0,
        hard_timeout: 0,
        matching: Match::new(),
        instructions: Instructions::default(),
    }
}

impl fmt::Display for FlowMod {
    /// ovs-ofctl's flow_mod form: `add table=1,priority=10,... actions=...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fl = &self.flow;
        write!(f, "{} table={}", self.command.name(), fl.table)?;
        if matches!(self.command, FlowModCommand::Add | FlowModCommand::ModifyStrict | FlowModCommand::DeleteStrict) {
            write!(f, ",priority={}", fl.priority)?;
        }
        if self.cookie_mask != 0 {
            write!(f, ",cookie={:#x}/{:#x}", fl.cookie, self.cookie_mask)?;
        } else if fl.cookie != 0 {
            write!(f, ",cookie={:#x}", fl.cookie)?;
        }
        if !fl.matching.is_empty() {
            write!(f, ",{}", fl.matching)?;
        }
        if self.out_port != port::ANY {
            f.write_str(",out_port=")?;
            fmt_port(f, self.out_port)?;
        }
        if matches!(self.command, FlowModCommand::Add | FlowModCommand::Modify | FlowModCommand::ModifyStrict) {
            write!(f, " actions={}", fl.instructions)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::OFP13_VERSION;

    #[test]
    fn layout_of_a_flow_mod() {
        let flow = Flow::builder(1, 10)
            .cookie(0xabc)
            .matching(Match::builder().in_port(1).build().unwrap())
            .action(Action::output(2))
            .build()
            .unwrap();
        let b = FlowMod::add(flow).to_bytes(OFP13_VERSION, 7).unwrap();
        // header 8 + fixed 40 + match 16 + apply_actions 24 = 88 (OpenFlow 1.3 7.3.4.1).
        assert_eq!(b.len(), 88);
        assert_eq!(&b[..8], [4, 14, 0, 88, 0, 0, 0, 7]);
        assert_eq!(&b[8..16], 0xabcu64.to_be_bytes());
        assert_eq!(&b[24..26], [1, 0]); // table 1, OFPFC_ADD
        assert_eq!(&b[30..32], [0, 10]); // priority
        assert_eq!(&b[32..44], [0xff; 12]); // buffer, out_port, out_group: none/any
        assert_eq!(&b[48..52], [0, 1, 0, 12]); // OXM match, length 12
    }

    #[test]
    fn decodes_what_it_encodes() {
        let flow = Flow::builder(1, 10)
            .cookie(0xabc)
            .timeouts(5, 60)
            .matching(Match::builder().in_port(1).vlan_vid(3).build().unwrap())
            .actions([Action::PopVlan, Action::output(2)])
            .goto_table(4)
            .build()
            .unwrap();
        let mods = [
            FlowMod::add(flow.clone()).flags(OFPFF_CHECK_OVERLAP),
            FlowMod::modify(flow.clone(), 0xfff),
            FlowMod::delete_strict(&flow.key()),
            FlowMod::delete_by_cookie(OFPTT_ALL, 7, u64::MAX).out_port(9),
        ];
        for m in mods {
            let b = m.to_bytes(OFP13_VERSION, 3).unwrap();
            assert_eq!(FlowMod::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                assert!(FlowMod::decode(&b[..cut]).is_err(), "cut {cut}");
            }
        }
        let mut b = FlowMod::add(flow).to_bytes(OFP13_VERSION, 3).unwrap();
        b[25] = 9;
        assert!(matches!(FlowMod::decode(&b), Err(DecodeError::BadValue { what: "flow_mod command", .. })));
        b[1] = msg_type::BARRIER_REQUEST;
        assert!(matches!(FlowMod::decode(&b), Err(DecodeError::UnexpectedType { .. })));
    }

    #[test]
    fn delete_by_cookie_layout() {
        let b = FlowMod::delete_by_cookie(3, 0x42, u64::MAX).to_bytes(OFP13_VERSION, 1).unwrap();
        assert_eq!(b.len(), 56);
        assert_eq!(&b[8..16], 0x42u64.to_be_bytes());
        assert_eq!(&b[16..24], [0xff; 8]);
        assert_eq!(&b[24..26], [3, 3]);
    }
}
