//! The JSON-RPC framer on arbitrary bytes, cut at arbitrary points: it must never panic, and
//! however the stream is cut it must yield the same messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ovsdb_client::framing::Framer;

fn run(chunks: &[&[u8]]) -> Result<Vec<serde_json::Value>, String> {
    let mut f = Framer::new(1 << 20);
    let mut out = Vec::new();
    for c in chunks {
        f.push(c);
        loop {
            match f.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let whole = run(&[data]);
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let split = run(&[&data[..cut], &data[cut..]]);
    let bytewise: Vec<&[u8]> = data.chunks(1).collect();
    let bytes = run(&bytewise);
    // Messages found before an error are the same whatever the cut; only Ok results compare
    // whole, as an error may surface at a different read.
    if let (Ok(a), Ok(b), Ok(c)) = (&whole, &split, &bytes) {
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
});
