//! Merge rule R17 (ownership) over arbitrary sequences of store inputs: snooped replies,
//! leasequery and bulk answers, releases from any client/link/IAID, operator clears,
//! confirmations and expiry, about three clients on two links and overlapping keys. After
//! every input: nothing that is not from a binding's holder on its link changes it without a
//! server's word about it (or its lifetime ending); nothing lands inside another client's
//! delegated prefix unless the server was asked about it; every move is counted; a doubt
//! changes nothing. The model and the checks are the proptest's (`tests/unit_like`), included
//! by path so both check the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/unit_like/ownership_model.rs"]
mod ownership_model;

fuzz_target!(|data: &[u8]| {
    ownership_model::check(&ownership_model::decode(data));
});
