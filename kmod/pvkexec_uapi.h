/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * pvkexec: the ioctl ABI of /dev/pvkexec. The Rust CLI mirrors these structs
 * (loader/src/device.rs) with compile-time size and offset asserts.
 */
#ifndef PVKEXEC_UAPI_H
#define PVKEXEC_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define PVKEXEC_ABI_VERSION	5
#define PVKEXEC_IOC_MAGIC	0xcf

/* pvkexec_info.flags */
#define PVKEXEC_INFO_PV			(1U << 0) /* a Xen PV guest */
#define PVKEXEC_INFO_INITIAL_DOMAIN	(1U << 1) /* SIF_INITDOMAIN in start_info */
#define PVKEXEC_INFO_VCPU_INFO_PLACED	(1U << 2) /* every up CPU's vcpu_info registered */
#define PVKEXEC_INFO_IMAGE_LOADED	(1U << 3)
#define PVKEXEC_INFO_EXEC_SUPPORTED	(1U << 4)
#define PVKEXEC_INFO_CRASH_RESERVED	(1U << 5)
#define PVKEXEC_INFO_CRASH_LOADED	(1U << 6)
/* ABI 5: Xen advertises pvkexec's Xen patches (XENVER_get_features submap 0) */
#define PVKEXEC_INFO_XEN_VCPU_RESET	(1U << 7) /* XENFEAT bit 22: VCPUOP_reset */
#define PVKEXEC_INFO_XEN_VCPU_INFO_REREGISTER (1U << 8) /* XENFEAT bit 21 */

struct pvkexec_info {
	__u32 abi_version;
	__u32 flags;
	__u64 current_pages;	/* XENMEM_current_reservation */
	__u64 maximum_pages;	/* XENMEM_maximum_reservation */
	__u64 start_info_pages;	/* xen_start_info->nr_pages */
	__u32 possible_cpus;
	__u32 online_cpus;
	__u32 vcpus_up;		/* VCPUOP_is_up over the possible CPUs */
	__u32 gnttab_version;	/* GNTTABOP_get_version; 0: unknown */
	__u32 linux_version;	/* LINUX_VERSION_CODE the module was built for */
	__u32 image_segments;
	__u64 image_bytes;	/* 0: no image loaded */
	__u64 image_pages;
	__u64 crash_pages;	/* frames set aside (0: none) */
	__u64 crash_present;	/* present frames of the crash view */
	__u64 crash_record_mfn;	/* the crash record page's MFN (0: none) */
};

/*
 * pvkexec_crash_reserve.present on input (flags; 0 before this was defined, and
 * a module that predates it ignores the field): a Linux crash
 * kernel on a Xen that resets VCPUs (docs/kdump.md). The vcpu_info
 * frames stay holes in the view (the purgatory unregisters them instead of
 * hiding them), and the image and the free pool may take set-aside frames past
 * the two 4 MiB blocks. Refused unless Xen offers both XENFEATs.
 */
#define PVKEXEC_RESERVE_LINUX	(1U << 0)

struct pvkexec_crash_reserve {
	__u64 pages;		/* in: frames to set aside, a multiple of 1024 (4 MiB), >= 2048 */
	__u64 present;		/* in: PVKEXEC_RESERVE_* flags; out: present frames */
				/* of the view the image must be planned for */
	__u64 record_mfn;	/* out: MFN of the crash record page */
	__u64 p2m_len;		/* out: entries of the view (the real P2M's length) */
};

/* pvkexec_load.flags */
#define PVKEXEC_LOAD_CRASH	(1U << 0) /* into the frames set aside; arms the panic path */

struct pvkexec_load {
	__u64 image;		/* user address of the image file's bytes */
	__u64 len;
	__u32 flags;		/* PVKEXEC_LOAD_* */
	__u32 handoff_version;	/* the image's purgatory reads this version: 6 */
	__u64 work_pages;	/* the purgatory's working memory, frames */
	__u64 pool_pages;	/* its free pool, frames (exec: allocated at exec, listed) */
};

#define PVKEXEC_IOC_INFO	_IOR(PVKEXEC_IOC_MAGIC, 0, struct pvkexec_info)
#define PVKEXEC_IOC_LOAD	_IOW(PVKEXEC_IOC_MAGIC, 1, struct pvkexec_load)
#define PVKEXEC_IOC_UNLOAD	_IO(PVKEXEC_IOC_MAGIC, 2)
#define PVKEXEC_IOC_EXEC	_IO(PVKEXEC_IOC_MAGIC, 3)
#define PVKEXEC_IOC_CRASH_RESERVE _IOWR(PVKEXEC_IOC_MAGIC, 4, struct pvkexec_crash_reserve)
#define PVKEXEC_IOC_CRASH_UNLOAD _IO(PVKEXEC_IOC_MAGIC, 5) /* unload + release the reservation */

/*
 * Tests only: -ENOTTY unless the module was loaded with fault_injection=1.
 * CORRUPT_CRASH flips one byte of the loaded crash image's kernel segment (the
 * purgatory's digest check must refuse it); PARK_CPU1 parks CPU 1 with
 * interrupts off until a crash is in progress (at most 60 s), where only the
 * NMI reaches it.
 */
#define PVKEXEC_IOC_TEST_CORRUPT_CRASH	_IO(PVKEXEC_IOC_MAGIC, 0x40)
#define PVKEXEC_IOC_TEST_PARK_CPU1	_IO(PVKEXEC_IOC_MAGIC, 0x41)

#endif /* PVKEXEC_UAPI_H */
