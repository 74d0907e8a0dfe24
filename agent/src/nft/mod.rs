//! The agent's nf_tables table in a network namespace, programmed over netlink
//! (`NETLINK_NETFILTER`) without the `nft` binary: replaced whole in one transaction when its
//! content changes, left alone when the comment it carries says it holds that content already
//! (so an agent restart that computes the same table touches nothing), deleted with what it
//! served.
//!
//! The messages are built by [`encode`]; this module sends them from a thread inside the
//! namespace ([`Netns::run_inside`]) and reads the kernel's acknowledgements.

use std::io;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use overlay::gateway::Table;
use rtnetlink::sys::protocols::NETLINK_NETFILTER;
use rtnetlink::sys::Socket;

use crate::netlink::{NetlinkError, Netns};

pub mod encode;

/// How long the kernel may take to answer a batch.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// The send buffer a large batch needs (the default, 208 KiB, holds about 1,000 rules).
const SEND_BUFFER: usize = 8 << 20;

/// Why the agent's table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The namespace could not be entered.
    #[error("entering the namespace")]
    Netns(#[from] NetlinkError),
    /// The netfilter socket failed.
    #[error("netfilter netlink socket in netns {netns}: {op}")]
    Socket {
        /// The namespace.
        netns: String,
        /// What was done.
        op: &'static str,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a message of the batch; nothing of the batch was applied.
    #[error(
        "the kernel refused {what} in netns {netns} (nothing was changed): does the kernel have nf_tables \
         and NAT (CONFIG_NF_TABLES, CONFIG_NFT_NAT, CONFIG_NFT_CT)?"
    )]
    Refused {
        /// The namespace.
        netns: String,
        /// The message refused.
        what: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
}

/// What one netlink exchange answered.
struct Answer {
    /// `(sequence number, errno)` of every acknowledgement (errno 0: done).
    acks: Vec<(u32, i32)>,
    /// The attributes of every data message (`NEWTABLE` answers).
    data: Vec<Vec<u8>>,
}

/// Sends `bytes` and reads answers until `expected` acknowledgements came.
fn exchange(bytes: &[u8], expected: usize) -> Result<Answer, (&'static str, io::Error)> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| ("opening", e))?;
    socket.bind_auto().map_err(|e| ("binding", e))?;
    let timeout = TimeVal::new(ANSWER_WITHIN.as_secs() as _, 0);
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeout).map_err(|e| ("setting a timeout", e.into()))?;
    if bytes.len() > 200 << 10 {
        setsockopt(&socket, sockopt::SndBufForce, &SEND_BUFFER).map_err(|e| ("growing the send buffer", e.into()))?;
    }
    socket.send(bytes, 0).map_err(|e| ("sending", e))?;
    let mut answer = Answer { acks: Vec::new(), data: Vec::new() };
    while answer.acks.len() < expected {
        let (buf, _) = socket.recv_from_full().map_err(|e| ("receiving", e))?;
        let mut at = 0;
        while at + 16 <= buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len < 16 || at + len > buf.len() {
                break;
            }
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
            const NLMSG_ERROR: u16 = 2;
            if kind == NLMSG_ERROR && len >= 20 {
                let errno = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                answer.acks.push((seq, -errno));
            } else if len > 20 {
                answer.data.push(buf[at + 20..at + len].to_vec());
            }
            at += len.next_multiple_of(4);
        }
    }
    Ok(answer)
}

/// Sequence numbers: unique enough per exchange (each exchange has its own socket).
fn first_seq() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1) | 1
}

/// Sends a batch; the first refusal is the error.
async fn send(netns: &Netns, batch: encode::Batch) -> Result<(), NftError> {
    let label = netns.label();
    let expected = batch.acked.len();
    let bytes = batch.bytes;
    let answer = netns
        .run_inside(move || exchange(&bytes, expected))
        .await?
        .map_err(|(op, source)| NftError::Socket { netns: label.clone(), op, source })?;
    if let Some((seq, errno)) = answer.acks.iter().find(|(_, e)| *e != 0) {
        let what = batch.acked.iter().find(|(s, _)| s == seq).map(|(_, w)| w.clone()).unwrap_or_default();
        return Err(NftError::Refused { netns: label, what, source: io::Error::from_raw_os_error(*errno) });
    }
    Ok(())
}

/// The fingerprint the agent's table `name` in `netns` carries, or `None` if there is no such
/// table (or it is not the agent's).
pub async fn fingerprint(netns: &Netns, name: &str) -> Result<Option<u64>, NftError> {
    let label = netns.label();
    let request = encode::get_table(name, first_seq());
    let answer = netns.run_inside(move || exchange(&request, 1)).await?.map_err(|(op, source)| NftError::Socket {
        netns: label.clone(),
        op,
        source,
    })?;
    match answer.acks.first() {
        Some((_, 0)) | None => {}
        Some((_, e)) if *e == nix::libc::ENOENT => return Ok(None),
        Some((_, e)) => {
            return Err(NftError::Refused {
                netns: label,
                what: format!("reading table {name}"),
                source: io::Error::from_raw_os_error(*e),
            })
        }
    }
    Ok(answer.data.iter().find_map(|attrs| comment_in(attrs)).and_then(|c| encode::fingerprint_of(&c)))
}

/// The comment of a `NEWTABLE` answer (attributes after the nfgenmsg), if it has one.
fn comment_in(attrs: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let len = u16::from_ne_bytes([attrs[at], attrs[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]) & 0x3fff;
        if len < 4 || at + len > attrs.len() {
            return None;
        }
        if kind == encode::NFTA_TABLE_USERDATA {
            // TLVs: type, length, value; the comment is type 0, NUL-terminated.
            let udata = &attrs[at + 4..at + len];
            let mut u = 0;
            while u + 2 <= udata.len() {
                let (t, l) = (udata[u], udata[u + 1] as usize);
                let value = udata.get(u + 2..u + 2 + l)?;
                if t == 0 {
                    return Some(String::from_utf8_lossy(value).trim_end_matches('\0').to_owned());
                }
                u += 2 + l;
            }
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// Makes `netns` hold exactly `table` (replacing the agent's table of that name in one
/// transaction), unless it holds it already. Returns whether it wrote.
pub async fn apply(netns: &Netns, table: &Table) -> Result<bool, NftError> {
    if fingerprint(netns, &table.name).await? == Some(table.fingerprint()) {
        return Ok(false);
    }
    send(netns, encode::replace(table, first_seq())).await?;
    Ok(true)
}

/// Removes the agent's table `name` from `netns`, if it is there.
pub async fn remove(netns: &Netns, name: &str) -> Result<(), NftError> {
    send(netns, encode::delete(name, first_seq())).await
}
