//! Any bytes as one DHCPv6 message: the owned parser and the borrowed walk agree on whether
//! it is valid, and a valid one emits back to exactly the input, re-parses to an equal value,
//! and renders (tree and JSON) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lqagent::wire::pretty::Decoded;
use lqagent::wire::{Message, MessageView};

fuzz_target!(|data: &[u8]| {
    let walked = MessageView::new_checked(data).and_then(|v| v.walk());
    let parsed = Message::parse(data);
    assert_eq!(
        walked.is_ok(),
        parsed.is_ok(),
        "view walk {walked:?} vs parse {parsed:?}"
    );
    // The operator's view (`lqagent decode`) finds a malformed part exactly when parse fails.
    let shown = Decoded::new(data);
    assert_eq!(shown.malformed == 0, parsed.is_ok(), "{}", shown.to_text());
    let json = serde_json::to_string(&shown).expect("the tree serializes");
    assert!(json.starts_with('{'));
    let Ok(msg) = parsed else { return };
    assert_eq!(
        msg.buffer_len(),
        data.len(),
        "buffer_len of a parsed message"
    );
    let bytes = msg.to_vec().expect("a parsed message emits");
    assert_eq!(bytes, data, "emit(parse(b)) != b");
    let again = Message::parse(&bytes).expect("emitted bytes re-parse");
    assert_eq!(again, msg, "re-parse differs");
});
