//! `lqagent run`: wires snooping, requestor, cache and route installer together.
