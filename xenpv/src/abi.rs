//! `#[repr(C)]` structures Xen and the guest exchange (x86_64 layouts of Xen 4.17's public
//! headers). Each is followed by a compile-time assert of its size and field offsets, with the
//! numbers of those headers (`xen/include/public/xen.h`, `vcpu.h`, `event_channel.h`,
//! `grant_table.h`, ... and `arch-x86/xen-x86_64.h`).

use crate::assert_layout;

/// `start_info` (xen.h), the page whose address a PV kernel receives in `%rsi`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StartInfo {
    /// `"xen-3.0-x86_64"` (domU and 4.18+ dom0) or `"xen-3.0-x86_64p"` (4.17 dom0 with PAE note).
    pub magic: [u8; 32],
    /// Pages allocated to the domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page (not mapped for the guest).
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    pub _pad0: u32,
    /// MFN of the xenstore ring.
    pub store_mfn: u64,
    /// Local event channel port of xenstore.
    pub store_evtchn: u32,
    pub _pad1: u32,
    /// domU: MFN of the console ring; dom0: `info_off` (low u32) and `info_size` (high u32).
    pub console_mfn: u64,
    /// domU: local event channel port of the console.
    pub console_evtchn: u32,
    pub _pad2: u32,
    /// Virtual address of the bootstrap L4.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the P2M list (one u64 MFN per PFN).
    pub mfn_list: u64,
    /// Virtual address of the initrd, or its first PFN with `SIF_MOD_START_PFN`.
    pub mod_start: u64,
    /// Initrd length in bytes.
    pub mod_len: u64,
    /// NUL-terminated command line.
    pub cmd_line: [u8; 1024],
    /// First PFN of a relocated P2M and its page tables.
    pub first_p2m_pfn: u64,
    /// Frames of the relocated P2M (0 when not relocated).
    pub nr_p2m_frames: u64,
}
assert_layout!(StartInfo, 1168;
    magic @ 0x000, nr_pages @ 0x020, shared_info @ 0x028, flags @ 0x030, store_mfn @ 0x038,
    store_evtchn @ 0x040, console_mfn @ 0x048, console_evtchn @ 0x050, pt_base @ 0x058,
    nr_pt_frames @ 0x060, mfn_list @ 0x068, mod_start @ 0x070, mod_len @ 0x078,
    cmd_line @ 0x080, first_p2m_pfn @ 0x480, nr_p2m_frames @ 0x488);
// SAFETY: integers and byte arrays only; the explicit `_pad` fields fill the gaps, so the
// offsets above plus the last field's 8 bytes cover all 1168 bytes.
unsafe impl crate::Pod for StartInfo {}

impl StartInfo {
    /// The magic string up to its NUL.
    pub fn magic_str(&self) -> &[u8] {
        until_nul(&self.magic)
    }

    /// The command line up to its NUL.
    pub fn cmdline(&self) -> &[u8] {
        until_nul(&self.cmd_line)
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// `vcpu_time_info` (xen.h): the per-VCPU clock parameters.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct VcpuTimeInfo {
    /// Odd while Xen updates the record.
    pub version: u32,
    pub pad0: u32,
    pub tsc_timestamp: u64,
    /// Nanoseconds since boot at `tsc_timestamp`.
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub pad1: [u8; 2],
}
assert_layout!(VcpuTimeInfo, 32;
    version @ 0, tsc_timestamp @ 8, system_time @ 16, tsc_to_system_mul @ 24, tsc_shift @ 28,
    flags @ 29);

impl VcpuTimeInfo {
    /// System time in ns for a TSC reading, as Xen defines the scaling.
    pub fn system_time_at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.wrapping_sub(self.tsc_timestamp);
        if self.tsc_shift >= 0 {
            delta <<= self.tsc_shift as u32;
        } else {
            delta >>= (-self.tsc_shift) as u32;
        }
        let scaled = ((delta as u128 * self.tsc_to_system_mul as u128) >> 32) as u64;
        self.system_time.wrapping_add(scaled)
    }
}

/// `vcpu_info` (xen.h): 64 bytes per VCPU, in shared_info or where the guest registered it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    /// Non-zero: no event upcalls.
    pub evtchn_upcall_mask: u8,
    pub _pad0: [u8; 6],
    pub evtchn_pending_sel: u64,
    /// `arch.cr2`: Xen stores the page-fault address here.
    pub cr2: u64,
    pub _arch_pad: u64,
    pub time: VcpuTimeInfo,
}
assert_layout!(VcpuInfo, 64;
    evtchn_upcall_pending @ 0, evtchn_upcall_mask @ 1, evtchn_pending_sel @ 8, cr2 @ 16,
    time @ 32);

/// Number of `vcpu_info` slots in shared_info.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// `shared_info` (xen.h + arch-x86/xen.h); occupies one page.
#[repr(C)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// 2-level event channel pending bits (4096 ports).
    pub evtchn_pending: [u64; 64],
    pub evtchn_mask: [u64; 64],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
    /// `arch.max_pfn`, written by the guest.
    pub max_pfn: u64,
    /// `arch.pfn_to_mfn_frame_list_list` (MFN).
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    pub p2m_cr3: u64,
    pub p2m_vaddr: u64,
    pub p2m_generation: u64,
}
assert_layout!(SharedInfo, 3136;
    vcpu_info @ 0x000, evtchn_pending @ 0x800, evtchn_mask @ 0xA00, wc_version @ 0xC00,
    wc_sec @ 0xC04, wc_nsec @ 0xC08, wc_sec_hi @ 0xC0C, max_pfn @ 0xC10,
    pfn_to_mfn_frame_list_list @ 0xC18, nmi_reason @ 0xC20, p2m_cr3 @ 0xC28, p2m_vaddr @ 0xC30,
    p2m_generation @ 0xC38);

/// `mmu_update`: `ptr` = machine address of the PTE with the command in its low 2 bits.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MmuUpdate {
    pub ptr: u64,
    pub val: u64,
}
assert_layout!(MmuUpdate, 16; ptr @ 0, val @ 8);

/// `mmuext_op`: `arg1` is an MFN or a linear address, `arg2` a count, a vCPU mask handle or a
/// source MFN, depending on `cmd`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    pub arg1: u64,
    pub arg2: u64,
}
assert_layout!(MmuextOp, 24; cmd @ 0, arg1 @ 8, arg2 @ 16);

/// `multicall_entry`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct MulticallEntry {
    pub op: u64,
    pub result: u64,
    pub args: [u64; 6],
}
assert_layout!(MulticallEntry, 64; op @ 0, result @ 8, args @ 16);

/// `trap_info`: one entry of the table passed to `set_trap_table`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct TrapInfo {
    pub vector: u8,
    /// Bits 0-1: DPL allowed for `int n`; bit 2: mask events on entry.
    pub flags: u8,
    pub cs: u16,
    pub _pad: u32,
    pub address: u64,
}
assert_layout!(TrapInfo, 16; vector @ 0, flags @ 1, cs @ 2, address @ 8);

/// `cpu_user_regs` (arch-x86/xen-x86_64.h).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub error_code: u32,
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: [u8; 2],
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    pub fs: u16,
    pub _pad5: [u16; 3],
    pub gs: u16,
    pub _pad6: [u16; 3],
}
assert_layout!(CpuUserRegs, 200;
    r15 @ 0, r14 @ 8, r13 @ 16, r12 @ 24, rbp @ 32, rbx @ 40, r11 @ 48, r10 @ 56, r9 @ 64,
    r8 @ 72, rax @ 80, rcx @ 88, rdx @ 96, rsi @ 104, rdi @ 112, error_code @ 120,
    entry_vector @ 124, rip @ 128, cs @ 136, saved_upcall_mask @ 140, rflags @ 144, rsp @ 152,
    ss @ 160, es @ 168, ds @ 176, fs @ 184, gs @ 192);

/// `vcpu_guest_context` (arch-x86/xen.h), the argument of `VCPUOP_initialise`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VcpuGuestContext {
    /// FXSAVE image.
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*`.
    pub flags: u64,
    pub user_regs: CpuUserRegs,
    pub trap_ctxt: [TrapInfo; 256],
    pub ldt_base: u64,
    pub ldt_ents: u64,
    /// GDT frame MFNs.
    pub gdt_frames: [u64; 16],
    pub gdt_ents: u64,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    /// `ctrlreg[3]` = kernel L4 `mfn << 12`, `ctrlreg[1]` = user L4.
    pub ctrlreg: [u64; 8],
    pub debugreg: [u64; 8],
    pub event_callback_eip: u64,
    pub failsafe_callback_eip: u64,
    pub syscall_callback_eip: u64,
    pub vm_assist: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
}
assert_layout!(VcpuGuestContext, 0x1430;
    fpu_ctxt @ 0x000, flags @ 0x200, user_regs @ 0x208, trap_ctxt @ 0x2D0, ldt_base @ 0x12D0,
    ldt_ents @ 0x12D8, gdt_frames @ 0x12E0, gdt_ents @ 0x1360, kernel_ss @ 0x1368,
    kernel_sp @ 0x1370, ctrlreg @ 0x1378, debugreg @ 0x13B8, event_callback_eip @ 0x13F8,
    failsafe_callback_eip @ 0x1400, syscall_callback_eip @ 0x1408, vm_assist @ 0x1410,
    fs_base @ 0x1418, gs_base_kernel @ 0x1420, gs_base_user @ 0x1428);

/// `vcpu_guest_context.flags` bits.
pub mod vgcf {
    pub const I387_VALID: u64 = 1 << 0;
    pub const IN_KERNEL: u64 = 1 << 2;
    pub const FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
    pub const SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
    pub const ONLINE: u64 = 1 << 5;
    pub const IN_SYSCALL: u64 = 1 << 8;
}

/// `vcpu_register_vcpu_info` (`VCPUOP_register_vcpu_info`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct VcpuRegisterVcpuInfo {
    pub mfn: u64,
    pub offset: u32,
    pub rsvd: u32,
}
assert_layout!(VcpuRegisterVcpuInfo, 16; mfn @ 0, offset @ 8, rsvd @ 12);

/// `vcpu_set_periodic_timer`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct VcpuSetPeriodicTimer {
    pub period_ns: u64,
}
assert_layout!(VcpuSetPeriodicTimer, 8; period_ns @ 0);

/// `vcpu_set_singleshot_timer`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct VcpuSetSingleshotTimer {
    pub timeout_abs_ns: u64,
    /// Bit 0: `VCPU_SSHOTTMR_future`.
    pub flags: u32,
    pub _pad: u32,
}
assert_layout!(VcpuSetSingleshotTimer, 16; timeout_abs_ns @ 0, flags @ 8);

/// `vcpu_register_runstate_memory_area` / `..._time_memory_area`: a guest virtual address.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct VcpuRegisterArea {
    pub addr: u64,
}
assert_layout!(VcpuRegisterArea, 8; addr @ 0);

/// `vcpu_runstate_info`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct VcpuRunstateInfo {
    pub state: i32,
    pub _pad: u32,
    pub state_entry_time: u64,
    pub time: [u64; 4],
}
assert_layout!(VcpuRunstateInfo, 48; state @ 0, state_entry_time @ 8, time @ 16);

/// `sched_shutdown`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SchedShutdown {
    pub reason: u32,
}
assert_layout!(SchedShutdown, 4; reason @ 0);

/// `sched_poll`: wait for one of `nr_ports` ports (pointer in `ports`) until `timeout` (abs ns).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SchedPoll {
    pub ports: u64,
    pub nr_ports: u32,
    pub _pad: u32,
    pub timeout: u64,
}
assert_layout!(SchedPoll, 24; ports @ 0, nr_ports @ 8, timeout @ 16);

/// `sched_watchdog`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SchedWatchdog {
    pub id: u32,
    pub timeout: u32,
}
assert_layout!(SchedWatchdog, 8; id @ 0, timeout @ 4);

/// `evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    pub _pad: u16,
    pub remote_port: u32,
    pub local_port: u32,
}
assert_layout!(EvtchnBindInterdomain, 12; remote_dom @ 0, remote_port @ 4, local_port @ 8);

/// `evtchn_bind_virq`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    pub port: u32,
}
assert_layout!(EvtchnBindVirq, 12; virq @ 0, vcpu @ 4, port @ 8);

/// `evtchn_close`, `evtchn_send`, `evtchn_unmask`: one port.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnPort {
    pub port: u32,
}
assert_layout!(EvtchnPort, 4; port @ 0);

/// `evtchn_status`; the union at 16 is decoded by the accessors.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnStatus {
    pub dom: u16,
    pub _pad: u16,
    pub port: u32,
    pub status: u32,
    pub vcpu: u32,
    pub u: [u32; 2],
}
assert_layout!(EvtchnStatus, 24; dom @ 0, port @ 4, status @ 8, vcpu @ 12, u @ 16);

impl EvtchnStatus {
    /// `u.interdomain.dom` / `u.unbound.dom`.
    pub fn remote_dom(&self) -> u16 {
        self.u[0] as u16
    }
    /// `u.interdomain.port`.
    pub fn remote_port(&self) -> u32 {
        self.u[1]
    }
    /// `u.virq` / `u.pirq`.
    pub fn virq(&self) -> u32 {
        self.u[0]
    }
}

/// `evtchn_alloc_unbound`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    pub port: u32,
}
assert_layout!(EvtchnAllocUnbound, 8; dom @ 0, remote_dom @ 2, port @ 4);

/// `evtchn_bind_ipi`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnBindIpi {
    pub vcpu: u32,
    pub port: u32,
}
assert_layout!(EvtchnBindIpi, 8; vcpu @ 0, port @ 4);

/// `evtchn_send`: raise an event on a local port (an IPI port notifies its VCPU).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnSend {
    pub port: u32,
}
assert_layout!(EvtchnSend, 4; port @ 0);

/// `evtchn_reset`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnReset {
    pub dom: u16,
}
assert_layout!(EvtchnReset, 2; dom @ 0);

/// `evtchn_init_control` (FIFO ABI).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnInitControl {
    pub control_gfn: u64,
    pub offset: u32,
    pub vcpu: u32,
    pub link_bits: u8,
    pub _pad: [u8; 7],
}
assert_layout!(EvtchnInitControl, 24; control_gfn @ 0, offset @ 8, vcpu @ 12, link_bits @ 16);

/// `evtchn_expand_array` (FIFO ABI): one more event-array page.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EvtchnExpandArray {
    pub array_gfn: u64,
}
assert_layout!(EvtchnExpandArray, 8; array_gfn @ 0);

/// `xen_memory_reservation`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct XenMemoryReservation {
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
    pub _pad: [u16; 3],
}
assert_layout!(XenMemoryReservation, 32;
    extent_start @ 0, nr_extents @ 8, extent_order @ 16, mem_flags @ 20, domid @ 24);

/// `xen_memory_map` (`XENMEM_memory_map`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct XenMemoryMap {
    pub nr_entries: u32,
    pub _pad: u32,
    pub buffer: u64,
}
assert_layout!(XenMemoryMap, 16; nr_entries @ 0, buffer @ 8);

/// `xen_machphys_mapping` (`XENMEM_machphys_mapping`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct XenMachphysMapping {
    pub v_start: u64,
    pub v_end: u64,
    pub max_mfn: u64,
}
assert_layout!(XenMachphysMapping, 24; v_start @ 0, v_end @ 8, max_mfn @ 16);

/// An e820 entry as Xen copies it: packed, 20 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}
assert_layout!(E820Entry, 20; addr @ 0, size @ 8, kind @ 16);

/// `callback_register`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct CallbackRegister {
    pub kind: u16,
    pub flags: u16,
    pub _pad: u32,
    pub address: u64,
}
assert_layout!(CallbackRegister, 16; kind @ 0, flags @ 2, address @ 8);

/// `xen_feature_info` (`XENVER_get_features`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct XenFeatureInfo {
    pub submap_idx: u32,
    pub submap: u32,
}
assert_layout!(XenFeatureInfo, 8; submap_idx @ 0, submap @ 4);

/// `xencons_interface`: the console ring page of a domU.
#[repr(C)]
pub struct XenconsInterface {
    pub input: [u8; 1024],
    pub output: [u8; 2048],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}
assert_layout!(XenconsInterface, 0xC10;
    input @ 0, output @ 0x400, in_cons @ 0xC00, in_prod @ 0xC04, out_cons @ 0xC08,
    out_prod @ 0xC0C);

/// Grant table v1 entry.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}
assert_layout!(GrantEntryV1, 8; flags @ 0, domid @ 2, frame @ 4);

/// `gnttab_setup_table`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GnttabSetupTable {
    pub dom: u16,
    pub _pad0: u16,
    pub nr_frames: u32,
    pub status: i16,
    pub _pad1: [u16; 3],
    pub frame_list: u64,
}
assert_layout!(GnttabSetupTable, 24; dom @ 0, nr_frames @ 4, status @ 8, frame_list @ 16);

/// `gnttab_query_size`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub _pad0: u16,
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub status: i16,
    pub _pad1: u16,
}
assert_layout!(GnttabQuerySize, 16; dom @ 0, nr_frames @ 4, max_nr_frames @ 8, status @ 12);

/// `gnttab_get_version`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GnttabGetVersion {
    pub dom: u16,
    pub _pad0: u16,
    pub version: u32,
}
assert_layout!(GnttabGetVersion, 8; dom @ 0, version @ 4);

/// `gnttab_set_version`: in the version wanted, out the version in force.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GnttabSetVersion {
    pub version: u32,
}
assert_layout!(GnttabSetVersion, 4; version @ 0);

/// `gnttab_map_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct GnttabMapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub grant_ref: u32,
    pub dom: u16,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}
assert_layout!(GnttabMapGrantRef, 32; host_addr @ 0, flags @ 8, grant_ref @ 12, dom @ 16,
    status @ 18, handle @ 20, dev_bus_addr @ 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_accessors() {
        // SAFETY: StartInfo is plain old data; all-zero is a valid value.
        let mut si: StartInfo = unsafe { core::mem::zeroed() };
        si.magic[..14].copy_from_slice(b"xen-3.0-x86_64");
        si.cmd_line[..5].copy_from_slice(b"a b=c");
        assert_eq!(si.magic_str(), b"xen-3.0-x86_64");
        assert_eq!(si.cmdline(), b"a b=c");
    }

    #[test]
    fn time_scaling() {
        let t = VcpuTimeInfo {
            tsc_timestamp: 1000,
            system_time: 5,
            tsc_to_system_mul: 1 << 31, // x0.5
            tsc_shift: 1,               // x2
            ..Default::default()
        };
        assert_eq!(t.system_time_at(1100), 5 + 100);
        let t = VcpuTimeInfo { tsc_shift: -1, ..t };
        assert_eq!(t.system_time_at(1100), 5 + 25);
    }
}

#[cfg(test)]
mod layout_tests {
    //! The compile-time asserts above already fail the build on a wrong layout; these tests
    //! restate the reference's key numbers so a test run lists them.
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn reference_sizes() {
        assert_eq!(size_of::<StartInfo>(), 1168);
        assert_eq!(size_of::<SharedInfo>(), 3136);
        assert_eq!(size_of::<VcpuInfo>(), 64);
        assert_eq!(size_of::<VcpuTimeInfo>(), 32);
        assert_eq!(size_of::<MmuUpdate>(), 16);
        assert_eq!(size_of::<MmuextOp>(), 24);
        assert_eq!(size_of::<MulticallEntry>(), 64);
        assert_eq!(size_of::<TrapInfo>(), 16);
        assert_eq!(size_of::<CpuUserRegs>(), 200);
        assert_eq!(size_of::<VcpuGuestContext>(), 5168);
        assert_eq!(size_of::<EvtchnStatus>(), 24);
        assert_eq!(size_of::<XenMemoryReservation>(), 32);
        assert_eq!(size_of::<E820Entry>(), 20);
    }

    #[test]
    fn reference_offsets() {
        assert_eq!(offset_of!(StartInfo, cmd_line), 0x80);
        assert_eq!(offset_of!(StartInfo, first_p2m_pfn), 0x480);
        assert_eq!(offset_of!(SharedInfo, evtchn_pending), 0x800);
        assert_eq!(offset_of!(SharedInfo, max_pfn), 0xC10);
        assert_eq!(offset_of!(VcpuGuestContext, ctrlreg), 0x1378);
        assert_eq!(offset_of!(VcpuGuestContext, gs_base_user), 0x1428);
        assert_eq!(offset_of!(CpuUserRegs, rip), 128);
        assert_eq!(offset_of!(XenconsInterface, out_prod), 0xC0C);
    }
}
