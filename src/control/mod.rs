//! The local control socket: answers the operator's show / clear commands.
