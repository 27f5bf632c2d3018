//! Any bytes the NFLOG socket could hand us are walked without a panic: the message walker ends,
//! yields nothing after its first error, every packet's payload lies inside the input, and the
//! IPv6 source reader and the log-prefix reader accept or refuse any payload and prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lqagent::trigger::nflog::{self, Item};
use lqagent::trigger::ruleset;

fuzz_target!(|data: &[u8]| {
    let range = data.as_ptr_range();
    let mut items = 0usize;
    let mut failed = false;
    for item in nflog::messages(data) {
        assert!(!failed, "an item after an error");
        items += 1;
        assert!(
            items <= data.len() / 16 + 1,
            "more messages than headers fit"
        );
        match item {
            Ok(Item::Packet(p)) => {
                let pr = p.payload.as_ptr_range();
                assert!(range.start <= pr.start && pr.end <= range.end);
                if let Ok(src) = nflog::source_of(p.payload) {
                    assert_eq!(&p.payload[8..24], &src.octets());
                }
                if let Some(prefix) = p.prefix {
                    let _ = ruleset::link_of_prefix(prefix);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = e.label();
                failed = matches!(
                    e,
                    nflog::NflogError::HeaderTruncated { .. }
                        | nflog::NflogError::BadMessageLength { .. }
                );
            }
        }
    }
});
