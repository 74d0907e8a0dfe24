//! A second oracle for the encoder: `ovs-ofctl ofp-print` decodes every flow_mod this crate
//! encodes (flow-lab's pipeline and every other shape), in OpenFlow 1.3 and 1.4, and prints the
//! actions ovs-ofctl's own dump prints for the installed flow, with no decode complaint.

mod common;

use std::process::Command;

use common::*;
use openflow_client::{FlowMod, OFP13_VERSION, OFP14_VERSION};

fn ofp_print(bytes: &[u8]) -> String {
    let bin = testbed::require_binary("ovs-ofctl", "apt-get install openvswitch-switch");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(bin).args(["ofp-print", &hex]).output().expect("run ovs-ofctl ofp-print");
    assert!(out.status.success(), "ofp-print failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ovs_ofctl_decodes_every_flow_mod_as_intended() {
    let all: Vec<_> = flow_lab(1, 0x10).into_iter().chain(shapes(0x10)).collect();
    for version in [OFP13_VERSION, OFP14_VERSION] {
        for (flow, text) in &all {
            let bytes = FlowMod::add(flow.clone()).to_bytes(version, 1).unwrap();
            let printed = ofp_print(&bytes);
            assert!(!printed.contains("***"), "ovs-ofctl complains about\n{flow}\n{printed}");
            let want_actions = text.split(" actions=").nth(1).unwrap();
            let got_actions = printed.trim_end().split(" actions=").nth(1).unwrap_or("");
            assert_eq!(got_actions, want_actions, "version {version}: {flow}\n{printed}");
            assert!(printed.contains(&format!("priority={}", flow.priority)), "{printed}");
        }
    }
}
