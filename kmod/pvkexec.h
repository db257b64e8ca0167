/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvkexec: what the module's files share. The image and handoff formats
 * (docs/kexec-image.md), the state of an exec or crash handover, and the
 * functions one file calls in another. The files:
 *
 *   device.c    /dev/pvkexec, its ioctls, init and exit; the loaded image
 *   xen.c       the domain's facts (PVKEXEC_IOC_INFO), vcpu_info, kallsyms
 *   exec.c      PVKEXEC_IOC_EXEC: checks, preparation, purgatory mapping
 *   handover.c  syscore hook, backends closed, trees unpinned, the jump
 *   crash.c     frames set aside, the crash view, crash load and unload
 *   panic.c     the panic path: NMIs, the crash record, the notifier
 *
 * The user ABI is pvkexec_uapi.h.
 */
#ifndef PVKEXEC_H
#define PVKEXEC_H

#include <linux/build_bug.h>
#include <linux/stddef.h>
#include <linux/types.h>
#include <xen/xen-ops.h>
#include <asm/nospec-branch.h>

#include "pvkexec_uapi.h"

struct file;
struct mm_struct;
struct page;
struct shared_info;
struct vcpu_info;
struct vm_area_struct;

/*
 * The image file format this module checks (docs/kexec-image.md). Version 3
 * leaves zero pages out of segments after the zero-run table; the purgatory
 * comes before that table, so the walks to it (each segment taking
 * PAGE_ALIGN(len) bytes) are version 2's.
 */
#define IMAGE_MAGIC		"PVKXIMG"	/* and a NUL: 8 bytes */
#define IMAGE_VERSION		3
#define IMAGE_HEADER_SIZE	64
#define IMAGE_SEGMENT_DESC_SIZE	64
#define IMAGE_MAX_SEGMENTS	64

struct image_header {
	u8 magic[8];
	u32 version;
	u32 header_size;
	u32 nr_segments;
	u32 params_offset;
	u64 purgatory_base;
	u64 purgatory_entry;
	u64 kernel_entry;
	u64 data_offset;
	u64 total_size;
};
static_assert(sizeof(struct image_header) == IMAGE_HEADER_SIZE);

/* The loaded image: its bytes in pages that need not be contiguous. */
struct image {
	struct page **pages;
	unsigned long nr_pages;
	u64 len;
	u32 nr_segments;
	u32 handoff_version;
	u64 work_pages;
	u64 pool_pages;
};

#define SEG_FLAG_PURGATORY_MAPPING 1

/* The handoff block (docs/kexec-image.md) and what exec prepares for it. */
#define AP_ENTRY_OFFSET		0x100
#define MAX_VCPUS		8
#define BLOCK_ORDER_MAX		10	/* 4 MiB: MAX_ORDER - 1 (6.1), MAX_PAGE_ORDER (6.12) */

struct segment_desc {
	u32 kind;
	u32 flags;
	u64 dest_pfn;
	u64 nr_pages;
	u64 len;
	u8 sha256[32];
};
static_assert(sizeof(struct segment_desc) == IMAGE_SEGMENT_DESC_SIZE);

struct handoff {
	u64 magic;
	u32 version;
	u32 flags;	/* HANDOFF_XEN_*; padding before, so no version change */
	u64 image_va;
	u64 image_len;
	u64 old_start_info_va;
	u64 old_virt_base;
	u64 free_first_pfn;
	u64 free_pages;
	u64 direct_map_va;
	u64 scratch_va;
	u64 nr_vcpus;
	u32 keep_store_port;
	u32 keep_console_port;
	u64 vcpu_info_va;
	/* version 5 */
	u64 work_va;
	u64 work_pages;
	u64 work_pfns_va;
	/* version 6 */
	u64 image_pfns_va;	/* one old PFN per image page */
	u64 pool_pfns_va;	/* the free pool's old PFNs, ascending */
	u64 pool_pages;
};
static_assert(offsetof(struct handoff, flags) == 12);
static_assert(offsetof(struct handoff, work_va) == 104);
static_assert(offsetof(struct handoff, image_pfns_va) == 128);
static_assert(offsetof(struct handoff, pool_pfns_va) == 136);
static_assert(offsetof(struct handoff, pool_pages) == 144);
static_assert(sizeof(struct handoff) == 152);

/* Xen's struct vcpu_register_vcpu_info, as the handoff lists placements. */
struct vcpu_info_rec {
	u64 mfn;
	u32 offset;
	u32 rsvd;
};
static_assert(sizeof(struct vcpu_info_rec) == 16);

/* Everything exec prepares before the point of no return. */
struct exec_prep {
	struct page **image_pages;	/* exec: the loaded image's; crash: its block's */
	unsigned long image_nr;
	void *image_va;			/* image_pages vmap'ed */
	u64 *image_pfns;		/* their PFNs, in VA order */
	u64 *pool_pfns;			/* the free pool's PFNs, ascending */
	unsigned long pool_nr;
	struct page *block;		/* handoff, vcpu_info records, start_info */
	struct handoff *handoff;
	unsigned long purg_first;	/* first purgatory page in the copy */
	unsigned long purg_pages;
	u64 purg_base;
	u64 entry;
	struct mm_struct *mm;
	unsigned long mapped;		/* purgatory mapping's address, 0: none */
	void *work;			/* handoff v5: working memory (vmalloc) */
	u64 *work_pfns;			/* its frames' PFNs, in VA order */
	bool crash;			/* image, pool and work are set-aside frames */
};

/*
 * Into the purgatory (exec: handover.c; crash: panic.c). Defined here, in
 * every file that enters it: on 6.1 objtool checks each object of a module
 * alone and would take a call to another file's function for one that
 * returns.
 */
/* A call, not a jump, so objtool sees no sibling call; it never returns. */
static inline __noreturn void jump(u64 entry, u64 rdi, u64 rsi)
{
	asm volatile(ANNOTATE_RETPOLINE_SAFE "call *%[entry]\n\tud2"
		     : ASM_CALL_CONSTRAINT
		     : [entry] "r" (entry), "D" (rdi), "S" (rsi)
		     : "memory");
	unreachable();
}

/* VCPU 0 to the boot entry, the others to the AP entry with their id. */
static inline __noreturn void enter_purgatory(struct exec_prep *p, unsigned int cpu)
{
	jump(cpu ? p->entry + AP_ENTRY_OFFSET : p->entry,
	     (unsigned long)p->handoff, cpu ? xen_vcpu_nr(cpu) : 0);
}

/*
 * The reservation and, once loaded, the prepared handover (crash.c). The
 * crash record names the P2M's pages through a directory (pvhandoff::crash):
 * list pages of 512 P2M page MFNs, and a chain of directory pages whose slots
 * 0..510 name list pages and whose last slot names the next directory page.
 */
#define CRASH_DIR_LISTS		511
#define CRASH_DIR_NEXT		511

/*
 * handoff.flags: what Xen advertises (pvhandoff::handoff::HANDOFF_XEN_*); the
 * purgatory asks Xen again and decides with the image's plan.
 */
#define HANDOFF_XEN_VCPU_RESET			(1U << 0)
#define HANDOFF_XEN_VCPU_INFO_REREGISTER	(1U << 1)

struct crash {
	unsigned long pages;
	struct page *pool;		/* block 0: the purgatory's free pool */
	struct page *image;		/* block 1: the image */
	u64 *rest;			/* PFNs of the other set-aside frames, ascending */
	unsigned long nr_rest;
	struct page *record;
	struct page **lists;		/* kvcalloc'd: list pages, then directory pages */
	unsigned long nr_lists;
	unsigned long nr_dirs;
	u64 *view;			/* kvmalloc'd: nr_pages entries */
	unsigned long p2m_len;
	unsigned long present;
	struct mm_struct *mm;		/* held (mmget) until unload */
	unsigned int nr_cpus;
	struct vcpu_info *vi[MAX_VCPUS];
	struct exec_prep *prep;		/* NULL: no image loaded */
	atomic_t *panic_cpu;		/* Linux's, through kallsyms */
	struct shared_info **shared_info;
	bool linux_crash;		/* PVKEXEC_RESERVE_LINUX: a Linux crash kernel */
};

/* device.c */
extern struct image *loaded;	/* under pvkexec_lock */

/* xen.c */
long reservation(unsigned int op);
u32 xen_vcpu_features(void);
int ioctl_info(struct pvkexec_info __user *uarg);
unsigned long lookup_name(const char *name);
int prep_vcpu_info(struct vcpu_info_rec *rec, struct vcpu_info **vis,
		   const char *what);
int cpus_check(const char *what);

/* exec.c */
struct page *alloc_block(unsigned int order);
void free_block(struct page *page, unsigned int order);
void exec_prep_free(struct exec_prep *p);
int prep_image(struct exec_prep *p, const struct image *img,
	       const char *what);
int prep_work(struct exec_prep *p, const struct image *img,
	      struct page **frames);
void prep_handoff(struct exec_prep *p, const struct image *img);
int pvkexec_mmap(struct file *file, struct vm_area_struct *vma);
int map_purgatory(struct file *file, struct exec_prep *p, const char *what);
int ioctl_exec(struct file *file);
int cmp_u64(const void *a, const void *b);

/* handover.c */
extern struct exec_prep *armed;	/* the prepared exec, in kernel_restart() */
void unpin_other_trees(struct exec_prep *p, unsigned long *flagged,
		       unsigned long *unflagged);
void exec_hook_register(void);
void exec_hook_unregister(void);

/* crash.c */
extern struct crash *crash;	/* under pvkexec_lock */
unsigned long crash_dump_len(const struct shared_info *s);
int ioctl_crash_reserve(struct pvkexec_crash_reserve __user *uarg);
int crash_load(struct file *file, const struct image *img);
int ioctl_crash_unload(void);
void crash_info(struct pvkexec_info *info);
int test_corrupt_crash(void);

/* panic.c */
int crash_arm(struct crash *c);
void crash_disarm(void);
bool crash_linux_armed(void);
int test_park_cpu1(void);

/* sysfs.c */
int kexec_flags_register(void);
void kexec_flags_unregister(void);

#endif /* PVKEXEC_H */
