//! The decoders of every value the agent reads from etcd: never a panic, and what decodes is
//! valid and survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use overlay::model::{parse_lease_key_segment, Endpoint, HostRecord, SubnetLease, Tenant};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tenant::from_json(data) {
        assert_eq!(Tenant::from_json(&t.to_json()).unwrap(), t);
    }
    if let Ok(h) = HostRecord::from_json(data) {
        h.validate().unwrap();
        assert_eq!(HostRecord::from_json(&h.to_json()).unwrap(), h);
    }
    if let Ok(l) = SubnetLease::from_json(data) {
        assert_eq!(SubnetLease::from_json(&l.to_json()).unwrap(), l);
    }
    if let Ok(e) = Endpoint::from_json(data) {
        assert_eq!(Endpoint::from_json(&e.to_json()).unwrap(), e);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_lease_key_segment(s);
    }
});
