//! Contracts between pvkexec's loader (host), the kernel side (old kernel) and the purgatory:
//! the segment descriptors with their SHA-256 digests, and the digest verification the
//! purgatory runs before it changes anything. Pure `no_std` logic, unit-tested on the host.
#![no_std]

pub mod chunks;
pub mod crash;
pub mod digest;
pub mod handoff;
pub mod image;
pub mod records;
pub mod renumber;
pub mod segment;
pub mod zero;

pub use digest::{verify_segment, DigestMismatch, SegmentHasher};
pub use segment::{SegmentDesc, SegmentKind};
