//! Numbers of the Xen PV ABI: hypercalls, sub-operations, flags, selectors, note types.
//! Sources: xen/include/public/{xen.h, vcpu.h, sched.h, event_channel.h, memory.h, version.h,
//! callback.h, nmi.h, elfnote.h, features.h} (Xen 4.17).

/// Hypercall numbers (xen.h `__HYPERVISOR_*`).
pub mod hc {
    pub const SET_TRAP_TABLE: u64 = 0;
    pub const MMU_UPDATE: u64 = 1;
    pub const SET_GDT: u64 = 2;
    pub const STACK_SWITCH: u64 = 3;
    pub const SET_CALLBACKS: u64 = 4;
    pub const FPU_TASKSWITCH: u64 = 5;
    pub const UPDATE_DESCRIPTOR: u64 = 10;
    pub const MEMORY_OP: u64 = 12;
    pub const MULTICALL: u64 = 13;
    pub const UPDATE_VA_MAPPING: u64 = 14;
    pub const SET_TIMER_OP: u64 = 15;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VM_ASSIST: u64 = 21;
    pub const IRET: u64 = 23;
    pub const VCPU_OP: u64 = 24;
    pub const SET_SEGMENT_BASE: u64 = 25;
    pub const MMUEXT_OP: u64 = 26;
    pub const NMI_OP: u64 = 28;
    pub const SCHED_OP: u64 = 29;
    pub const CALLBACK_OP: u64 = 30;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const PHYSDEV_OP: u64 = 33;
}

/// `DOMID_SELF` and friends, for `foreigndom` and `dom` fields.
pub const DOMID_SELF: u16 = 0x7FF0;
pub const DOMID_IO: u16 = 0x7FF1;
pub const DOMID_XEN: u16 = 0x7FF2;

/// `mmu_update.ptr` low-bit commands.
pub mod mmu {
    pub const NORMAL_PT_UPDATE: u64 = 0;
    pub const MACHPHYS_UPDATE: u64 = 1;
    pub const PT_UPDATE_PRESERVE_AD: u64 = 2;
    pub const PT_UPDATE_NO_TRANSLATE: u64 = 3;
}

/// `mmuext_op.cmd`.
pub mod mmuext {
    pub const PIN_L1_TABLE: u32 = 0;
    pub const PIN_L2_TABLE: u32 = 1;
    pub const PIN_L3_TABLE: u32 = 2;
    pub const PIN_L4_TABLE: u32 = 3;
    pub const UNPIN_TABLE: u32 = 4;
    pub const NEW_BASEPTR: u32 = 5;
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    pub const INVLPG_LOCAL: u32 = 7;
    pub const TLB_FLUSH_MULTI: u32 = 8;
    pub const INVLPG_MULTI: u32 = 9;
    pub const TLB_FLUSH_ALL: u32 = 10;
    pub const INVLPG_ALL: u32 = 11;
    pub const FLUSH_CACHE: u32 = 12;
    pub const SET_LDT: u32 = 13;
    pub const NEW_USER_BASEPTR: u32 = 15;
    pub const CLEAR_PAGE: u32 = 16;
    pub const COPY_PAGE: u32 = 17;
    pub const FLUSH_CACHE_GLOBAL: u32 = 18;
}

/// `update_va_mapping` flags.
pub mod uvmf {
    pub const NONE: u64 = 0;
    pub const TLB_FLUSH: u64 = 1;
    pub const INVLPG: u64 = 2;
    pub const LOCAL: u64 = 0;
    pub const ALL: u64 = 4;
}

/// `vcpu_op` commands (vcpu.h).
pub mod vcpuop {
    pub const INITIALISE: u64 = 0;
    pub const UP: u64 = 1;
    pub const DOWN: u64 = 2;
    pub const IS_UP: u64 = 3;
    pub const GET_RUNSTATE_INFO: u64 = 4;
    pub const REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
    pub const SET_PERIODIC_TIMER: u64 = 6;
    pub const STOP_PERIODIC_TIMER: u64 = 7;
    pub const SET_SINGLESHOT_TIMER: u64 = 8;
    pub const STOP_SINGLESHOT_TIMER: u64 = 9;
    pub const REGISTER_VCPU_INFO: u64 = 10;
    pub const SEND_NMI: u64 = 11;
    pub const REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;
    /// pvkexec's Xen patch (xen-patches/, `XENFEAT_vcpu_reset`): resets a VCPU of the caller's
    /// that is down so `VCPUOP_initialise` works on it again. Stock Xen answers -ENOSYS.
    pub const RESET: u64 = 16;
}

/// `vcpu_register_vcpu_info.mfn` that unregisters: the area moves back to the VCPU's
/// shared_info slot (pvkexec's Xen patch, `XENFEAT_vcpu_info_reregister`; stock Xen: -EINVAL).
pub const VCPU_INFO_UNREGISTER_MFN: u64 = u64::MAX;

/// `sched_op` commands and shutdown reasons (sched.h).
pub mod schedop {
    pub const YIELD: u64 = 0;
    pub const BLOCK: u64 = 1;
    pub const SHUTDOWN: u64 = 2;
    pub const POLL: u64 = 3;
    pub const REMOTE_SHUTDOWN: u64 = 4;
    pub const SHUTDOWN_CODE: u64 = 5;
    pub const WATCHDOG: u64 = 6;
}

/// `SHUTDOWN_*` reasons.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Suspend = 2,
    Crash = 3,
    Watchdog = 4,
    SoftReset = 5,
}

/// `event_channel_op` commands (event_channel.h).
pub mod evtchnop {
    pub const BIND_INTERDOMAIN: u64 = 0;
    pub const BIND_VIRQ: u64 = 1;
    pub const BIND_PIRQ: u64 = 2;
    pub const CLOSE: u64 = 3;
    pub const SEND: u64 = 4;
    pub const STATUS: u64 = 5;
    pub const ALLOC_UNBOUND: u64 = 6;
    pub const BIND_IPI: u64 = 7;
    pub const BIND_VCPU: u64 = 8;
    pub const UNMASK: u64 = 9;
    pub const RESET: u64 = 10;
    pub const INIT_CONTROL: u64 = 11;
    pub const EXPAND_ARRAY: u64 = 12;
    pub const SET_PRIORITY: u64 = 13;

    /// `evtchn_status.status` values.
    pub const STATUS_CLOSED: u32 = 0;
    pub const STATUS_UNBOUND: u32 = 1;
    pub const STATUS_INTERDOMAIN: u32 = 2;
    pub const STATUS_PIRQ: u32 = 3;
    pub const STATUS_VIRQ: u32 = 4;
    pub const STATUS_IPI: u32 = 5;
}

/// `VIRQ_*` virtual interrupt numbers (xen/include/public/xen.h).
pub mod virq {
    /// `VIRQ_TIMER`: the per-VCPU timer.
    pub const TIMER: u32 = 0;
}

/// Event channel port space and FIFO event words (xen/include/public/event_channel.h).
pub mod evtchn {
    /// `EVTCHN_2L_NR_CHANNELS` on x86_64 (`sizeof(xen_ulong_t)^2 * 64`): ports of the 2-level ABI.
    pub const NR_CHANNELS_2L: u32 = 8 * 8 * 64;
    /// Bit numbers in a FIFO event word (`EVTCHN_FIFO_PENDING` ... `EVTCHN_FIFO_BUSY`).
    pub const FIFO_PENDING: u32 = 31;
    pub const FIFO_MASKED: u32 = 30;
    pub const FIFO_LINKED: u32 = 29;
    pub const FIFO_BUSY: u32 = 28;
}

/// `grant_table_op` commands (grant_table.h).
pub mod gnttabop {
    pub const MAP_GRANT_REF: u64 = 0;
    pub const UNMAP_GRANT_REF: u64 = 1;
    pub const SETUP_TABLE: u64 = 2;
    pub const QUERY_SIZE: u64 = 6;
    pub const SET_VERSION: u64 = 8;
    pub const GET_VERSION: u64 = 10;
    /// Refs the toolstack and Linux keep for the console and xenstore pages (0..7).
    pub const NR_RESERVED_ENTRIES: u32 = 8;
}

/// v1 grant entry `flags` (`GTF_*`).
pub mod gtf {
    pub const TYPE_MASK: u16 = 3;
    pub const PERMIT_ACCESS: u16 = 1;
    pub const READONLY: u16 = 1 << 2;
    /// Set by Xen while the grantee maps the frame for reading / writing.
    pub const READING: u16 = 1 << 3;
    pub const WRITING: u16 = 1 << 4;
}

/// `GNTMAP_*` flags of `gnttab_map_grant_ref`.
pub mod gntmap {
    pub const DEVICE_MAP: u32 = 1 << 0;
    pub const HOST_MAP: u32 = 1 << 1;
    pub const READONLY: u32 = 1 << 2;
}

/// `memory_op` sub-ops (memory.h).
pub mod memop {
    pub const INCREASE_RESERVATION: u64 = 0;
    pub const DECREASE_RESERVATION: u64 = 1;
    pub const MAXIMUM_RAM_PAGE: u64 = 2;
    pub const CURRENT_RESERVATION: u64 = 3;
    pub const MAXIMUM_RESERVATION: u64 = 4;
    pub const POPULATE_PHYSMAP: u64 = 6;
    pub const MEMORY_MAP: u64 = 9;
    pub const EXCHANGE: u64 = 11;
    pub const MACHPHYS_MAPPING: u64 = 12;
    pub const MAXIMUM_GPFN: u64 = 14;
}

/// `console_io` commands.
pub mod consoleio {
    pub const WRITE: u64 = 0;
    pub const READ: u64 = 1;
}

/// `xen_version` sub-ops (version.h).
pub mod xenver {
    pub const VERSION: u64 = 0;
    pub const EXTRAVERSION: u64 = 1;
    pub const COMPILE_INFO: u64 = 2;
    pub const CAPABILITIES: u64 = 3;
    pub const CHANGESET: u64 = 4;
    pub const PLATFORM_PARAMETERS: u64 = 5;
    pub const GET_FEATURES: u64 = 6;
    pub const PAGESIZE: u64 = 7;
}

/// `callback_op` commands and callback types (callback.h), `nmi_op` commands (nmi.h).
pub mod callback {
    pub const OP_REGISTER: u64 = 0;
    pub const OP_UNREGISTER: u64 = 1;
    pub const TYPE_EVENT: u16 = 0;
    pub const TYPE_FAILSAFE: u16 = 1;
    pub const TYPE_SYSCALL: u16 = 2;
    pub const TYPE_NMI: u16 = 4;
    pub const FLAG_MASK_EVENTS: u16 = 1;
    pub const NMIOP_REGISTER_CALLBACK: u64 = 0;
    pub const NMIOP_UNREGISTER_CALLBACK: u64 = 1;
}

/// `start_info.flags` (`SIF_*`).
pub mod sif {
    pub const PRIVILEGED: u32 = 1 << 0;
    pub const INITDOMAIN: u32 = 1 << 1;
    pub const MULTIBOOT_MOD: u32 = 1 << 2;
    pub const MOD_START_PFN: u32 = 1 << 3;
    pub const VIRT_P2M_4TOOLS: u32 = 1 << 4;
    pub const PM_MASK: u32 = 0xFF << 8;
}

/// `sizeof(struct dom0_vga_console_info)` (xen/include/public/xen.h): the dom0 builder places
/// one after start_info.
pub const DOM0_VGA_CONSOLE_INFO_SIZE: u64 = 40;

/// Flat selectors every 64-bit PV guest may use without a GDT of its own (arch-x86/xen-x86_64.h).
pub mod selector {
    pub const FLAT_KERNEL_CS: u16 = 0xE033;
    pub const FLAT_KERNEL_SS: u16 = 0xE02B;
    pub const FLAT_KERNEL_DS: u16 = 0;
    pub const FLAT_RING3_CS32: u16 = 0xE023;
    pub const FLAT_RING3_DS32: u16 = 0xE02B;
    /// Guest GDT entries available to `set_gdt`.
    pub const FIRST_RESERVED_GDT_ENTRY: u32 = 7168;
    pub const FIRST_RESERVED_GDT_PAGE: u32 = 14;
}

/// Virtual layout Xen imposes on every 64-bit PV guest.
pub mod layout {
    /// Read-only machine-to-phys table (u64 per MFN), L4 slot 256.
    pub const M2P_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
    pub const M2P_VIRT_END: u64 = 0xFFFF_8040_0000_0000;
    /// First and last L4 slot Xen owns in every guest L4 (inclusive).
    pub const XEN_L4_FIRST_SLOT: usize = 256;
    pub const XEN_L4_LAST_SLOT: usize = 271;
    /// Xen's reserved virtual range in every 64-bit PV guest, L4 slots 256..271
    /// (arch-x86/xen-x86_64.h `HYPERVISOR_VIRT_START`, `HYPERVISOR_VIRT_END`).
    pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
    pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
    /// M2P entry for a frame with no PFN.
    pub const INVALID_P2M_ENTRY: u64 = !0;
}

/// Xen ELF note types (elfnote.h `XEN_ELFNOTE_*`); note name is "Xen".
pub mod elfnote {
    pub const INFO: u32 = 0;
    pub const ENTRY: u32 = 1;
    pub const HYPERCALL_PAGE: u32 = 2;
    pub const VIRT_BASE: u32 = 3;
    pub const PADDR_OFFSET: u32 = 4;
    pub const XEN_VERSION: u32 = 5;
    pub const GUEST_OS: u32 = 6;
    pub const GUEST_VERSION: u32 = 7;
    pub const LOADER: u32 = 8;
    pub const PAE_MODE: u32 = 9;
    pub const FEATURES: u32 = 10;
    pub const BSD_SYMTAB: u32 = 11;
    pub const HV_START_LOW: u32 = 12;
    pub const L1_MFN_VALID: u32 = 13;
    pub const SUSPEND_CANCEL: u32 = 14;
    pub const INIT_P2M: u32 = 15;
    pub const MOD_START_PFN: u32 = 16;
    pub const SUPPORTED_FEATURES: u32 = 17;
    pub const PHYS32_ENTRY: u32 = 18;
    pub const PHYS32_RELOC: u32 = 19;
    /// The note name Xen requires.
    pub const NAME: &[u8] = b"Xen";
}

/// `XENFEAT_*` bit numbers (features.h).
pub mod xenfeat {
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
    pub const HIGHMEM_ASSIST: u32 = 6;
    pub const GNTTAB_MAP_AVAIL_BITS: u32 = 7;
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
    pub const HVM_PIRQS: u32 = 10;
    pub const DOM0: u32 = 11;
    pub const MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
    pub const ARM_SMCCC: u32 = 14;
    pub const LINUX_RSDP_UNRESTRICTED: u32 = 15;
    pub const NOT_DIRECT_MAPPED: u32 = 16;
    pub const DIRECT_MAPPED: u32 = 17;
    /// pvkexec's Xen patch: `VCPUOP_register_vcpu_info` may move a registration, or undo it
    /// with [`super::VCPU_INFO_UNREGISTER_MFN`]. The first bit free in Xen master.
    pub const VCPU_INFO_REREGISTER: u32 = 21;
    /// pvkexec's Xen patch: `VCPUOP_reset` on a VCPU that is down (PV guests).
    pub const VCPU_RESET: u32 = 22;
}

/// The xenstore ring page (xen/include/public/io/xs_wire.h): `struct xenstore_domain_interface`'s
/// offsets, `struct xsd_sockmsg`'s size and the `XS_*` message types a reader needs.
pub mod xs {
    /// `XENSTORE_RING_SIZE`: bytes in each of the request and response rings.
    pub const RING_SIZE: u32 = 1024;
    /// Offsets of `req`, `rsp`, `req_cons`, `req_prod`, `rsp_cons`, `rsp_prod`.
    pub const REQ: usize = 0;
    pub const RSP: usize = 1024;
    pub const REQ_CONS: usize = 2048;
    pub const REQ_PROD: usize = 2052;
    pub const RSP_CONS: usize = 2056;
    pub const RSP_PROD: usize = 2060;
    /// `sizeof(struct xsd_sockmsg)`: type, req_id, tx_id, len.
    pub const HEADER: usize = 16;
    /// `XENSTORE_PAYLOAD_MAX`: the longest message body.
    pub const PAYLOAD_MAX: usize = 4096;
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 11;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
    pub const RESET_WATCHES: u32 = 21;
}
