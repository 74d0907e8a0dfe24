//! Everything an OpenFlow switch can send, on arbitrary bytes cut at arbitrary points: the
//! framer, the message decoder (hello, error, echo, features, multipart, bundle control) and
//! the flow stats decoder (matches, actions, Nicira actions, instructions). It must never panic,
//! must frame the same messages however the stream is cut, and a decoded flow must encode and
//! decode back to itself (the canonical form is stable).
#![no_main]
use libfuzzer_sys::fuzz_target;
use openflow_client::{encode_flow_stats_reply, message, Framer};

fn frames(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut f = Framer::new();
    let mut out = Vec::new();
    for c in chunks {
        f.push(c);
        loop {
            match f.next_message() {
                Ok(Some(m)) => out.push(m.to_vec()),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let (whole, ok_whole) = frames(&[data]);
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let (split, ok_split) = frames(&[&data[..cut], &data[cut..]]);
    assert_eq!(whole, split);
    assert_eq!(ok_whole, ok_split);
    for m in &whole {
        let version = m.first().copied();
        let Ok((h, incoming)) = message::decode(m, version) else { continue };
        match incoming {
            message::Incoming::Error(e) => {
                let _ = e.to_string();
            }
            message::Incoming::MultipartReply(part) => {
                let mut stats = Vec::new();
                if part.flow_stats(&mut stats).is_ok() {
                    for s in &stats {
                        let _ = s.flow.to_string();
                    }
                    if let Ok(again) = encode_flow_stats_reply(h.version, h.xid, part.more, &stats) {
                        let (_, inc) = message::decode(&again, Some(h.version)).expect("re-encoded reply decodes");
                        let message::Incoming::MultipartReply(p2) = inc else { panic!("not a multipart reply") };
                        let mut back = Vec::new();
                        p2.flow_stats(&mut back).expect("re-encoded flow stats decode");
                        assert_eq!(back, stats);
                    }
                }
            }
            _ => {}
        }
    }
});
