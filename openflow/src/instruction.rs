//! A flow's instructions (OpenFlow 1.3 section 5.9), held canonically: at most one of each,
//! in the order the spec executes them and Open vSwitch encodes them (meter, apply_actions,
//! clear_actions, write_actions, write_metadata, goto_table). An empty apply_actions is the
//! same as none (`actions=drop`), as the switch drops it too.

use std::fmt;

use crate::action::{check_actions, decode_actions, encode_actions, fmt_actions, Action};
use crate::error::{DecodeError, EncodeError, FlowError};
use crate::flow_match::Match;
use crate::wire::{len16, Put, Reader};

const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_WRITE_METADATA: u16 = 2;
const OFPIT_WRITE_ACTIONS: u16 = 3;
const OFPIT_APPLY_ACTIONS: u16 = 4;
const OFPIT_CLEAR_ACTIONS: u16 = 5;
const OFPIT_METER: u16 = 6;

/// What a flow does with a packet it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instructions {
    /// `meter:N`.
    pub meter: Option<u32>,
    /// `apply_actions`: run now, in order. Empty: none (drop unless goto_table follows).
    pub apply: Vec<Action>,
    /// `clear_actions`.
    pub clear_actions: bool,
    /// `write_actions`: added to the action set (kept in the order given).
    pub write: Vec<Action>,
    /// `write_metadata:VALUE/MASK`.
    pub write_metadata: Option<(u64, u64)>,
    /// `goto_table:N`.
    pub goto_table: Option<u8>,
    /// Instructions this crate does not decode, as sent.
    pub raw: Vec<Vec<u8>>,
}

impl Instructions {
    /// Apply `actions`.
    pub fn apply(actions: Vec<Action>) -> Instructions {
        Instructions { apply: actions, ..Instructions::default() }
    }

    /// No instruction: the packet is dropped.
    pub fn drop() -> Instructions {
        Instructions::default()
    }

    /// Checks the instructions against the flow's match and table.
    pub(crate) fn check(&self, m: &Match, table: u8) -> Result<(), FlowError> {
        check_actions(m, &self.apply)?;
        check_actions(m, &self.write)?;
        if let Some(to) = self.goto_table {
            if to <= table {
                return Err(FlowError::GotoBackwards { from: table, to });
            }
        }
        Ok(())
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Some(meter) = self.meter {
            out.put_u16(OFPIT_METER);
            out.put_u16(8);
            out.put_u32(meter);
        }
        let actions = |out: &mut Vec<u8>, kind: u16, list: &[Action]| -> Result<(), EncodeError> {
            let start = out.len();
            out.put_u16(kind);
            out.put_u16(0);
            out.put_zeros(4);
            encode_actions(list, out)?;
            let len = len16(out, start)?;
            out.set_u16(start + 2, len);
            Ok(())
        };
        if !self.apply.is_empty() {
            actions(out, OFPIT_APPLY_ACTIONS, &self.apply)?;
        }
        if self.clear_actions {
            out.put_u16(OFPIT_CLEAR_ACTIONS);
            out.put_u16(8);
            out.put_zeros(4);
        }
        if !self.write.is_empty() {
            actions(out, OFPIT_WRITE_ACTIONS, &self.write)?;
        }
        if let Some((value, mask)) = self.write_metadata {
            out.put_u16(OFPIT_WRITE_METADATA);
            out.put_u16(24);
            out.put_zeros(4);
            out.put_u64(value);
            out.put_u64(mask);
        }
        if let Some(t) = self.goto_table {
            out.put_u16(OFPIT_GOTO_TABLE);
            out.put_u16(8);
            out.put_u8(t);
            out.put_zeros(3);
        }
        for raw in &self.raw {
            out.extend_from_slice(raw);
        }
        Ok(())
    }

    /// Reads instructions until `r` is empty.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Instructions, DecodeError> {
        let mut ins = Instructions::default();
        while !r.is_empty() {
            let whole = r.rest();
            let kind = r.u16("instruction type")?;
            let len = usize::from(r.u16("instruction length")?);
            if len < 8 || len % 8 != 0 {
                return Err(DecodeError::BadLength {
                    what: "instruction",
                    len,
                    reason: "want a multiple of 8, at least 8",
                });
            }
            let mut body = r.sub(len - 4, "instruction body")?;
            match kind {
                OFPIT_GOTO_TABLE => ins.goto_table = Some(body.u8("goto_table table")?),
                OFPIT_WRITE_METADATA if len == 24 => {
                    body.skip(4, "write_metadata pad")?;
                    ins.write_metadata = Some((body.u64("metadata")?, body.u64("metadata mask")?));
                }
                OFPIT_APPLY_ACTIONS | OFPIT_WRITE_ACTIONS => {
                    body.skip(4, "instruction pad")?;
                    let list = decode_actions(&mut body)?;
                    if kind == OFPIT_APPLY_ACTIONS {
                        ins.apply.extend(list);
                    } else {
                        ins.write.extend(list);
                    }
                }
                OFPIT_CLEAR_ACTIONS => ins.clear_actions = true,
                OFPIT_METER => ins.meter = Some(body.u32("meter id")?),
                _ => ins.raw.push(whole[..len].to_vec()),
            }
        }
        Ok(ins)
    }
}

impl fmt::Display for Instructions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = self.meter {
            parts.push(format!("meter:{m}"));
        }
        if !self.apply.is_empty() {
            parts.push(Actions(&self.apply).to_string());
        }
        if self.clear_actions {
            parts.push("clear_actions".into());
        }
        if !self.write.is_empty() {
            parts.push(format!("write_actions({})", Actions(&self.write)));
        }
        if let Some((v, m)) = self.write_metadata {
            parts.push(format!("write_metadata:{v:#x}/{m:#x}"));
        }
        if let Some(t) = self.goto_table {
            parts.push(format!("goto_table:{t}"));
        }
        for r in &self.raw {
            parts.push(format!("instruction({})", r.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        }
        if parts.is_empty() {
            return f.write_str("drop");
        }
        f.write_str(&parts.join(","))
    }
}

struct Actions<'a>(&'a [Action]);

impl fmt::Display for Actions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_actions(f, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let ins = Instructions {
            apply: vec![Action::output(1)],
            write_metadata: Some((5, 0xff)),
            goto_table: Some(3),
            ..Instructions::default()
        };
        let mut out = Vec::new();
        ins.encode(&mut out).unwrap();
        // apply_actions: type 4, len 8 + 16; write_metadata: type 2, len 24; goto: type 1, len 8.
        assert_eq!(&out[..4], [0, 4, 0, 24]);
        assert_eq!(&out[24..28], [0, 2, 0, 24]);
        assert_eq!(&out[48..], [0, 1, 0, 8, 3, 0, 0, 0]);
        assert_eq!(Instructions::decode(&mut Reader::new(&out)).unwrap(), ins);
        assert_eq!(ins.to_string(), "output:1,write_metadata:0x5/0xff,goto_table:3");
        // An empty apply_actions reads back as no instruction.
        let empty = [0, 4, 0, 8, 0, 0, 0, 0];
        assert_eq!(Instructions::decode(&mut Reader::new(&empty)).unwrap(), Instructions::drop());
    }

    #[test]
    fn goto_must_go_forward() {
        let ins = Instructions { goto_table: Some(1), ..Instructions::default() };
        assert_eq!(ins.check(&Match::new(), 2), Err(FlowError::GotoBackwards { from: 2, to: 1 }));
        assert!(ins.check(&Match::new(), 0).is_ok());
    }
}
