//! The block-device ring (xen/include/public/io/blkif.h, io/ring.h) and the xenbus device
//! states (io/xenbus.h): what a blkfront puts in the shared ring page and in xenstore.

use crate::assert_layout;

/// `BLKIF_OP_READ`, `BLKIF_OP_WRITE`.
pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: pages one direct request can carry.
pub const MAX_SEGMENTS: usize = 11;
/// Ring sector unit: `sector_number`, `first_sect` and `last_sect` count 512-byte sectors
/// unless the frontend asked for `feature-large-sector-size`.
pub const SECTOR_SIZE: u64 = 512;
/// `BLKIF_RSP_OKAY`, `BLKIF_RSP_ERROR`, `BLKIF_RSP_EOPNOTSUPP`.
pub const RSP_OKAY: i16 = 0;
pub const RSP_ERROR: i16 = -1;
pub const RSP_EOPNOTSUPP: i16 = -2;
/// The `protocol` a 64-bit frontend writes (`XEN_IO_PROTO_ABI_X86_64`, io/protocols.h).
pub const PROTOCOL_X86_64: &str = "x86_64-abi";

/// `struct blkif_request_segment`: a granted page and the sectors of it to transfer.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlkifSegment {
    pub gref: u32,
    /// First and last 512-byte sector in the page (inclusive, 0..=7).
    pub first_sect: u8,
    pub last_sect: u8,
    pub _pad: u16,
}
assert_layout!(BlkifSegment, 8; gref @ 0, first_sect @ 4, last_sect @ 5);

/// `struct blkif_request` (read/write form).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlkifRequest {
    pub operation: u8,
    pub nr_segments: u8,
    /// The virtual device (the vbd's id).
    pub handle: u16,
    pub _pad: u32,
    /// Echoed in the response.
    pub id: u64,
    pub sector_number: u64,
    pub seg: [BlkifSegment; MAX_SEGMENTS],
}
assert_layout!(BlkifRequest, 112;
    operation @ 0, nr_segments @ 1, handle @ 2, id @ 8, sector_number @ 16, seg @ 24);

/// `BLKIF_OP_INDIRECT` (io/blkif.h): a read or write whose segments are in granted pages
/// (`feature-max-indirect-segments`).
pub const OP_INDIRECT: u8 = 6;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// `blkif_request_segment`s in one indirect page.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = crate::PAGE_SIZE as usize / 8;

/// `struct blkif_request_indirect` (64 bytes of a ring entry): `nr_segments` segments in the
/// pages `indirect_grefs` names.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlkifRequestIndirect {
    /// [`OP_INDIRECT`].
    pub operation: u8,
    /// [`OP_READ`] or [`OP_WRITE`].
    pub indirect_op: u8,
    pub nr_segments: u16,
    pub _pad1: u32,
    pub id: u64,
    pub sector_number: u64,
    pub handle: u16,
    pub _pad2: u16,
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
    pub _pad3: u32,
}
assert_layout!(BlkifRequestIndirect, 64;
    operation @ 0, indirect_op @ 1, nr_segments @ 2, id @ 8, sector_number @ 16, handle @ 24,
    indirect_grefs @ 28);

/// `struct blkif_response`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlkifResponse {
    pub id: u64,
    pub operation: u8,
    pub _pad: u8,
    pub status: i16,
    pub _pad2: u32,
}
assert_layout!(BlkifResponse, 16; id @ 0, operation @ 8, status @ 10);

/// `struct blkif_sring`'s header (ring.h `DEFINE_RING_TYPES`): the indices, then padding to
/// 64 bytes where the entries start.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SringHeader {
    pub req_prod: u32,
    pub req_event: u32,
    pub rsp_prod: u32,
    pub rsp_event: u32,
    pub _pad: [u8; 48],
}
assert_layout!(SringHeader, 64; req_prod @ 0, req_event @ 4, rsp_prod @ 8, rsp_event @ 12);

/// Bytes of one ring entry: the union of request and response.
pub const ENTRY_SIZE: usize = 112;
/// Entries in a one-page ring: `__RING_SIZE`, the largest power of two that fits after the
/// header ((4096 - 64) / 112 = 36 -> 32).
pub const RING_SIZE: u32 = 32;
const _: () = {
    let fit = (crate::PAGE_SIZE as usize - core::mem::size_of::<SringHeader>()) / ENTRY_SIZE;
    assert!(RING_SIZE as usize <= fit && 2 * RING_SIZE as usize > fit);
    assert!(core::mem::size_of::<BlkifRequest>() == ENTRY_SIZE);
};

/// `enum xenbus_state` (io/xenbus.h): the `state` node of a frontend or backend.
pub mod state {
    pub const UNKNOWN: u32 = 0;
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;
    pub const RECONFIGURING: u32 = 7;
    pub const RECONFIGURED: u32 = 8;

    /// The state's name in io/xenbus.h, for messages.
    pub fn name(s: u32) -> &'static str {
        match s {
            UNKNOWN => "Unknown",
            INITIALISING => "Initialising",
            INIT_WAIT => "InitWait",
            INITIALISED => "Initialised",
            CONNECTED => "Connected",
            CLOSING => "Closing",
            CLOSED => "Closed",
            RECONFIGURING => "Reconfiguring",
            RECONFIGURED => "Reconfigured",
            _ => "invalid",
        }
    }
}
