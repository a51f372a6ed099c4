//! Unit tests. The byte layouts are hand-derived from `include/uapi/linux/ip_vs.h`,
//! `include/uapi/linux/netlink.h` and `genetlink.h`, written out with a comment per field, so
//! they check the encoder and decoder against the C layout rather than against themselves.
//! Host-order fields are written little-endian: these tests run on little-endian machines.

#![cfg(target_endian = "little")]

mod dumps;
mod golden;

/// Family id used in the tests; the kernel picks a real one at module load.
const FAMILY: u16 = 0x24;
