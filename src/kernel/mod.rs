//! Route programming over rtnetlink: makes the kernel's routes agree with the cache.
