// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: the kernel side of kexec for Xen PV guests, as a module for stock
 * Linux. It keeps a kexec image (built in user space by the pvkexec CLI) in
 * pages of its own and tells the CLI what it needs to know about the running
 * domain. Everything that can be decided in user space or in the purgatory is
 * decided there.
 *
 * /dev/pvkexec (root with CAP_SYS_BOOT only):
 *   PVKEXEC_IOC_INFO    the domain's facts and the loaded image, if any
 *   PVKEXEC_IOC_LOAD    replaces the loaded image (the old one stays on error)
 *   PVKEXEC_IOC_UNLOAD  frees it (-ENOENT when none is loaded)
 *   PVKEXEC_IOC_EXEC    hands the domain to the image's purgatory (exec.c notes
 *                       below say what is done and what is not)
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/sha2.h>
#include <linux/capability.h>
#include <linux/kprobes.h>
#include <linux/mman.h>
#include <linux/panic_notifier.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sort.h>
#include <linux/smp.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/reboot.h>
#include <linux/syscore_ops.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#if __has_include(<linux/vmcore_info.h>)
#include <linux/vmcore_info.h>	/* 6.9 and later */
#else
#include <linux/crash_core.h>
#endif

#include <xen/xen.h>
#include <xen/xen-ops.h>
#include <xen/xenbus.h>
#include <xen/interface/grant_table.h>
#include <xen/interface/memory.h>
#include <xen/interface/vcpu.h>
#include <xen/interface/version.h>
#include <asm/kexec.h>
#include <asm/nmi.h>
#include <asm/pvclock.h>
#include <asm/smp.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/page.h>
#include <asm/nospec-branch.h>

#include "pvkexec_uapi.h"

/* The image file format this module checks (docs/kexec-image.md). */
#define IMAGE_MAGIC		"PVKXIMG"	/* and a NUL: 8 bytes */
#define IMAGE_VERSION		2
#define IMAGE_HEADER_SIZE	64
#define IMAGE_SEGMENT_DESC_SIZE	64
#define IMAGE_MAX_SEGMENTS	64
/* The handoff block this module writes (docs/kexec-image.md): frame lists. */
#define HANDOFF_VERSION		6
/* The purgatory's working memory (handoff v5 on): stacks, batches, a frame bitmap. */
#define WORK_PAGES_MAX		65536UL
/* Larger than any image a PV domain this module can run in needs. */
#define IMAGE_MAX_BYTES		(2ULL << 30)

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

static DEFINE_MUTEX(pvkexec_lock);
static struct image *loaded;	/* under pvkexec_lock */

static void image_free(struct image *img)
{
	unsigned long i;

	if (!img)
		return;
	for (i = 0; i < img->nr_pages; i++)
		if (img->pages[i])
			__free_page(img->pages[i]);
	kvfree(img->pages);
	kfree(img);
}

/* Checks what the module relies on before it allocates anything. */
static int header_check(const struct image_header *h, u64 len)
{
	u64 table_end;

	if (memcmp(h->magic, IMAGE_MAGIC, sizeof(h->magic))) {
		pr_err("load refused: not a pvkexec image (bad magic)\n");
		return -EINVAL;
	}
	if (h->version != IMAGE_VERSION || h->header_size != IMAGE_HEADER_SIZE) {
		pr_err("load refused: image version %u, header size %u (this module reads version %u, header size %u)\n",
		       h->version, h->header_size, IMAGE_VERSION,
		       IMAGE_HEADER_SIZE);
		return -EINVAL;
	}
	if (h->nr_segments == 0 || h->nr_segments > IMAGE_MAX_SEGMENTS) {
		pr_err("load refused: %u segments (1 to %u allowed)\n",
		       h->nr_segments, IMAGE_MAX_SEGMENTS);
		return -EINVAL;
	}
	if (h->total_size != len) {
		pr_err("load refused: the header says %llu bytes, %llu were given\n",
		       h->total_size, len);
		return -EINVAL;
	}
	table_end = IMAGE_HEADER_SIZE +
		    (u64)h->nr_segments * IMAGE_SEGMENT_DESC_SIZE;
	if (h->data_offset < table_end || h->data_offset > len ||
	    !PAGE_ALIGNED(h->data_offset)) {
		pr_err("load refused: data offset %llu (table ends at %llu, file has %llu bytes)\n",
		       h->data_offset, table_end, len);
		return -EINVAL;
	}
	return 0;
}

/*
 * Refuses an image that would take more than half the memory the kernel can
 * still give without swapping: the domain must keep running until exec.
 */
static int memory_check(unsigned long nr_pages)
{
	long avail = si_mem_available();

	if (avail < 0 || nr_pages > (unsigned long)avail / 2) {
		pr_err("load refused: the image needs %lu pages, more than half of the %ld available\n",
		       nr_pages, avail);
		return -ENOMEM;
	}
	return 0;
}

static int image_copy_in(struct image *img, const u8 __user *src)
{
	unsigned long i;

	for (i = 0; i < img->nr_pages; i++) {
		u64 off = (u64)i << PAGE_SHIFT;
		size_t n = min_t(u64, PAGE_SIZE, img->len - off);
		struct page *page;

		page = alloc_page(GFP_KERNEL | __GFP_NOWARN);
		if (!page) {
			pr_err("load refused: out of memory after %lu of %lu pages\n",
			       i, img->nr_pages);
			return -ENOMEM;
		}
		img->pages[i] = page;
		if (copy_from_user(page_address(page), src + off, n))
			return -EFAULT;
		if (n < PAGE_SIZE)
			memset((u8 *)page_address(page) + n, 0, PAGE_SIZE - n);
		cond_resched();
	}
	return 0;
}

/* Copies len bytes at off of the image (bounds checked). */
static int image_read(const struct image *img, u64 off, void *buf, size_t len)
{
	u8 *out = buf;

	if (off > img->len || len > img->len - off)
		return -EINVAL;
	while (len) {
		size_t n = min_t(size_t, len, PAGE_SIZE - offset_in_page(off));

		memcpy(out, (u8 *)page_address(img->pages[off >> PAGE_SHIFT]) +
			    offset_in_page(off), n);
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

#define PARAMS_MAGIC		"PVKXPARM"
#define SEG_FLAG_PURGATORY_MAPPING 1

struct image_params {
	u8 magic[8];
	u64 table_len;
	u8 header_digest[SHA256_DIGEST_SIZE];
};
static_assert(sizeof(struct image_params) == 48);

/*
 * The header and descriptor table must hash to the digest the loader put in
 * the purgatory's parameter block (docs/kexec-image.md, "Header digest").
 */
static int header_digest_check(const struct image *img)
{
	const struct image_header *h = page_address(img->pages[0]);
	u32 table_len = IMAGE_HEADER_SIZE + h->nr_segments * IMAGE_SEGMENT_DESC_SIZE;
	u8 digest[SHA256_DIGEST_SIZE];
	struct image_params params;
	u64 off = h->data_offset;
	u8 *table;
	u32 k;
	int ret = -EINVAL;

	for (k = 0; k < h->nr_segments; k++) {
		u32 flags;
		u64 len;

		if (image_read(img, IMAGE_HEADER_SIZE + k * IMAGE_SEGMENT_DESC_SIZE + 4,
			       &flags, sizeof(flags)) ||
		    image_read(img, IMAGE_HEADER_SIZE + k * IMAGE_SEGMENT_DESC_SIZE + 24,
			       &len, sizeof(len)))
			break;
		if (flags & SEG_FLAG_PURGATORY_MAPPING) {
			ret = image_read(img, off + h->params_offset, &params,
					 sizeof(params));
			break;
		}
		off += PAGE_ALIGN(len);
	}
	if (ret || memcmp(params.magic, PARAMS_MAGIC, sizeof(params.magic)) ||
	    params.table_len != table_len) {
		pr_err("load refused: no purgatory parameter block for a %u-byte header and table\n",
		       table_len);
		return -EBADMSG;
	}
	table = kmalloc(table_len, GFP_KERNEL);
	if (!table)
		return -ENOMEM;
	ret = image_read(img, 0, table, table_len);
	if (!ret) {
		sha256(table, table_len, digest);
		if (memcmp(digest, params.header_digest, sizeof(digest))) {
			pr_err("load refused: the image's header and descriptor table do not match their digest (corrupted image)\n");
			ret = -EBADMSG;
		}
	}
	kfree(table);
	return ret;
}

/* Copies in and checks the image a PVKEXEC_IOC_LOAD names. */
static struct image *image_from_user(const struct pvkexec_load *arg)
{
	struct image_header h;
	const u8 __user *src;
	struct image *img;
	int ret;

	if (arg->handoff_version != HANDOFF_VERSION || !arg->work_pages ||
	    arg->work_pages > WORK_PAGES_MAX || !arg->pool_pages ||
	    arg->pool_pages > xen_start_info->nr_pages / 2) {
		pr_err("load refused: handoff version %u with %llu working pages and a %llu-frame pool (this module writes version %u with 1 to %lu working pages and a pool of 1 to %lu frames)\n",
		       arg->handoff_version, arg->work_pages, arg->pool_pages,
		       HANDOFF_VERSION, WORK_PAGES_MAX,
		       xen_start_info->nr_pages / 2);
		return ERR_PTR(-EINVAL);
	}
	if (arg->len < sizeof(h) || arg->len > IMAGE_MAX_BYTES) {
		pr_err("load refused: %llu bytes (%zu to %llu allowed)\n",
		       arg->len, sizeof(h), IMAGE_MAX_BYTES);
		return ERR_PTR(-EFBIG);
	}
	src = u64_to_user_ptr(arg->image);
	if (copy_from_user(&h, src, sizeof(h)))
		return ERR_PTR(-EFAULT);
	ret = header_check(&h, arg->len);
	/* The image now; its working memory and free pool at exec. */
	if (!ret)
		ret = memory_check(DIV_ROUND_UP(arg->len, PAGE_SIZE) +
				   arg->work_pages + arg->pool_pages);
	if (ret)
		return ERR_PTR(ret);

	img = kzalloc(sizeof(*img), GFP_KERNEL);
	if (!img)
		return ERR_PTR(-ENOMEM);
	img->len = arg->len;
	img->nr_pages = DIV_ROUND_UP(arg->len, PAGE_SIZE);
	img->nr_segments = h.nr_segments;
	img->handoff_version = arg->handoff_version;
	img->work_pages = arg->work_pages;
	img->pool_pages = arg->pool_pages;
	img->pages = kvcalloc(img->nr_pages, sizeof(*img->pages), GFP_KERNEL);
	if (!img->pages) {
		kfree(img);
		return ERR_PTR(-ENOMEM);
	}
	ret = image_copy_in(img, src);
	if (!ret)
		ret = header_digest_check(img);
	if (ret) {
		image_free(img);
		return ERR_PTR(ret);
	}
	return img;
}

static int crash_load(struct file *file, const struct image *img);

static int ioctl_load(struct file *file, const struct pvkexec_load __user *uarg)
{
	struct pvkexec_load arg;
	struct image *img;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.flags & ~PVKEXEC_LOAD_CRASH)
		return -EINVAL;
	img = image_from_user(&arg);
	if (IS_ERR(img))
		return PTR_ERR(img);
	if (arg.flags & PVKEXEC_LOAD_CRASH) {
		/* The image lives on in the crash image block. */
		ret = crash_load(file, img);
		image_free(img);
		return ret;
	}
	image_free(loaded);
	loaded = img;
	pr_info("image loaded: %llu bytes, %u segments, %lu pages; at exec %llu working pages and a %llu-frame free pool\n",
		img->len, img->nr_segments, img->nr_pages, img->work_pages,
		img->pool_pages);
	return 0;
}

static int ioctl_unload(void)
{
	if (!loaded)
		return -ENOENT;
	image_free(loaded);
	loaded = NULL;
	pr_info("image unloaded\n");
	return 0;
}

static long reservation(unsigned int op)
{
	domid_t self = DOMID_SELF;

	return HYPERVISOR_memory_op(op, &self);
}

static u32 gnttab_version(void)
{
	struct gnttab_get_version gv = { .dom = DOMID_SELF };

	if (HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1))
		return 0;
	return gv.version;
}

static u32 vcpus_up(void)
{
	unsigned int cpu;
	u32 n = 0;

	for_each_possible_cpu(cpu)
		if (HYPERVISOR_vcpu_op(VCPUOP_is_up, xen_vcpu_nr(cpu), NULL) > 0)
			n++;
	return n;
}

/*
 * handoff.flags: what Xen advertises (pvhandoff::handoff::HANDOFF_XEN_*); the
 * purgatory asks Xen again and decides with the image's plan.
 */
#define HANDOFF_XEN_VCPU_RESET			(1U << 0)
#define HANDOFF_XEN_VCPU_INFO_REREGISTER	(1U << 1)
/* XENFEAT bits of pvkexec's Xen patches (not in Linux's headers). */
#define PVKEXEC_XENFEAT_VCPU_INFO_REREGISTER	21
#define PVKEXEC_XENFEAT_VCPU_RESET		22

static void crash_info(struct pvkexec_info *info);

/*
 * Xen's features of pvkexec's patches as HANDOFF_XEN_* bits. Asked of Xen
 * here rather than through xen_feature(): the decision is the CLI's and the
 * purgatory's, and this reads the same submap the purgatory reads. A failed
 * query means none (stock Xen's path).
 */
static u32 xen_vcpu_features(void)
{
	struct xen_feature_info fi = { .submap_idx = 0 };
	u32 flags = 0;
	int ret;

	ret = HYPERVISOR_xen_version(XENVER_get_features, &fi);
	if (ret < 0) {
		pr_warn("XENVER_get_features(0) failed: %d; assuming stock Xen\n",
			ret);
		return 0;
	}
	if (fi.submap & BIT(PVKEXEC_XENFEAT_VCPU_RESET))
		flags |= HANDOFF_XEN_VCPU_RESET;
	if (fi.submap & BIT(PVKEXEC_XENFEAT_VCPU_INFO_REREGISTER))
		flags |= HANDOFF_XEN_VCPU_INFO_REREGISTER;
	return flags;
}

static int ioctl_info(struct pvkexec_info __user *uarg)
{
	struct pvkexec_info info = {
		.abi_version = PVKEXEC_ABI_VERSION,
		.flags = PVKEXEC_INFO_PV | PVKEXEC_INFO_EXEC_SUPPORTED,
		.start_info_pages = xen_start_info->nr_pages,
		.possible_cpus = num_possible_cpus(),
		.online_cpus = num_online_cpus(),
		.vcpus_up = vcpus_up(),
		.gnttab_version = gnttab_version(),
		.linux_version = LINUX_VERSION_CODE,
	};
	long cur = reservation(XENMEM_current_reservation);
	long max = reservation(XENMEM_maximum_reservation);
	u32 xen;

	if (cur < 0 || max < 0) {
		pr_err("XENMEM_current/maximum_reservation failed: %ld, %ld\n",
		       cur, max);
		return -EIO;
	}
	info.current_pages = cur;
	info.maximum_pages = max;
	xen = xen_vcpu_features();
	if (xen & HANDOFF_XEN_VCPU_RESET)
		info.flags |= PVKEXEC_INFO_XEN_VCPU_RESET;
	if (xen & HANDOFF_XEN_VCPU_INFO_REREGISTER)
		info.flags |= PVKEXEC_INFO_XEN_VCPU_INFO_REREGISTER;
	if (xen_start_info->flags & SIF_INITDOMAIN)
		info.flags |= PVKEXEC_INFO_INITIAL_DOMAIN;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
	/*
	 * Since 5.16 xen_vcpu_setup() registers vcpu_info for every CPU it
	 * brings up and panics when that fails: this kernel runs, so each
	 * CPU that was ever up has its vcpu_info placed.
	 */
	info.flags |= PVKEXEC_INFO_VCPU_INFO_PLACED;
#else
#error "pvkexec needs Linux 5.16 or later (vcpu_info placement is not certain before)"
#endif
	if (loaded) {
		info.flags |= PVKEXEC_INFO_IMAGE_LOADED;
		info.image_bytes = loaded->len;
		info.image_pages = loaded->nr_pages;
		info.image_segments = loaded->nr_segments;
	}
	crash_info(&info);
	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

/*
 * Exec: the handoff contract v6 (docs/kexec-image.md) on a stock Linux.
 * The image stays in the pages the load copied it into (no contiguity):
 * they are vmap'ed for image_va and their PFNs listed. The free pool is as
 * many pages as the CLI computed the image needs, allocated at exec in any
 * orders, their PFNs listed in ascending order. The purgatory writes pool
 * frames through Linux's direct map. The purgatory segment is mapped at its
 * base in the calling process's tables (a mapping of this device), every CPU
 * is sent there on those tables, and every pinned tree but the current L4 is
 * unpinned before the jump.
 *
 * The handover runs inside kernel_restart(): reboot notifiers, device
 * shutdown (xenbus frontends close, so backends unmap their grants), a move
 * to CPU 0, then syscore shutdown, where this module's hook waits (bounded)
 * for every backend to reach Closed and jumps. If the hook is not reached,
 * kernel_restart() ends in an ordinary reboot.
 *
 * A ballooned domain (holes in the P2M) is handed over as it is: the
 * purgatory skips the holes.
 */
#define HANDOFF_MAGIC		0x46464f48584b5650ULL	/* "PVKXHOFF" */
#define AP_ENTRY_OFFSET		0x100
#define MAX_VCPUS		8
#define BLOCK_ORDER_MAX		10	/* 4 MiB: MAX_ORDER - 1 (6.1), MAX_PAGE_ORDER (6.12) */
#define L1_SPAN			(512UL * PAGE_SIZE)

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

static int cmp_u64(const void *a, const void *b);

/* Set only while PVKEXEC_IOC_EXEC maps the purgatory (under pvkexec_lock). */
static struct exec_prep *mapping_for;

static struct page *alloc_block(unsigned int order)
{
	struct page *page = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN,
					order);

	if (page)
		split_page(page, order);
	return page;
}

static void free_block(struct page *page, unsigned int order)
{
	unsigned long i;

	if (!page)
		return;
	for (i = 0; i < (1UL << order); i++)
		__free_page(page + i);
}

static void exec_prep_free(struct exec_prep *p)
{
	/* A crash image's mm may be another process's: it goes with mmput. */
	if (p->mapped && p->mm == current->mm &&
	    vm_munmap(p->mapped, p->purg_pages << PAGE_SHIFT))
		pr_err("could not unmap the purgatory at %#lx\n", p->mapped);
	if (p->image_va)
		vunmap(p->image_va);
	if (p->crash) {
		if (p->work)
			vunmap(p->work);
	} else {
		unsigned long i;

		for (i = 0; i < p->pool_nr; i++)
			__free_page(pfn_to_page(p->pool_pfns[i]));
		vfree(p->work);
	}
	free_block(p->block, 1);
	kvfree(p->work_pfns);
	kvfree(p->image_pages);
	kvfree(p->image_pfns);
	kvfree(p->pool_pfns);
	kfree(p);
}

static const u8 *image_byte(const struct image *img, u64 off)
{
	return (const u8 *)page_address(img->pages[off >> PAGE_SHIFT]) +
	       offset_in_page(off);
}

/*
 * The image's pages as the purgatory reads them (handoff v6): p->image_pages
 * vmap'ed at image_va, their PFNs listed in VA order; finds its purgatory.
 */
static int prep_image(struct exec_prep *p, const struct image *img,
		      const char *what)
{
	const struct image_header *h = page_address(img->pages[0]);
	u64 off = h->data_offset;
	unsigned long i;
	u32 k;

	p->image_va = vmap(p->image_pages, p->image_nr, VM_MAP, PAGE_KERNEL);
	p->image_pfns = kvmalloc_array(p->image_nr, sizeof(u64), GFP_KERNEL);
	if (!p->image_va || !p->image_pfns) {
		pr_err("%s refused: out of memory to map and list the image's %lu pages\n",
		       what, p->image_nr);
		return -ENOMEM;
	}
	for (i = 0; i < p->image_nr; i++)
		p->image_pfns[i] = page_to_pfn(p->image_pages[i]);
	for (k = 0; k < h->nr_segments; k++) {
		struct segment_desc d;
		u64 k_off = IMAGE_HEADER_SIZE + (u64)k * IMAGE_SEGMENT_DESC_SIZE;

		memcpy(&d, image_byte(img, k_off), sizeof(d));
		if (d.flags & SEG_FLAG_PURGATORY_MAPPING) {
			if (PAGE_ALIGN(d.len) < d.nr_pages << PAGE_SHIFT ||
			    off + (d.nr_pages << PAGE_SHIFT) > img->len) {
				pr_err("%s refused: the purgatory segment's %llu pages are not all in the image\n",
				       what, d.nr_pages);
				return -EINVAL;
			}
			p->purg_first = off >> PAGE_SHIFT;
			p->purg_pages = d.nr_pages;
			break;
		}
		off += PAGE_ALIGN(d.len);
	}
	p->purg_base = h->purgatory_base;
	p->entry = h->purgatory_entry;
	if (!p->purg_pages || p->purg_pages > 510 ||
	    !IS_ALIGNED(p->purg_base, L1_SPAN) ||
	    p->entry < p->purg_base ||
	    p->entry + AP_ENTRY_OFFSET >= p->purg_base +
					   (p->purg_pages << PAGE_SHIFT)) {
		pr_err("%s refused: purgatory of %lu pages at %#llx, entry %#llx: not one L1 with slots 510 and 511 free\n",
		       what, p->purg_pages, p->purg_base, p->entry);
		return -EINVAL;
	}
	return 0;
}

/*
 * Exec's free pool: img->pool_pages fresh pages in any orders (largest
 * first), their PFNs sorted ascending for the purgatory's binary search.
 */
static int prep_pool(struct exec_prep *p, const struct image *img)
{
	unsigned long n = img->pool_pages, i;
	unsigned int order = BLOCK_ORDER_MAX;

	p->pool_pfns = kvmalloc_array(n, sizeof(u64), GFP_KERNEL);
	if (!p->pool_pfns)
		goto oom;
	while (p->pool_nr < n) {
		struct page *pg;

		while ((1UL << order) > n - p->pool_nr)
			order--;
		pg = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN |
				 __GFP_NORETRY, order);
		if (!pg) {
			if (!order)
				goto oom;
			order--;
			continue;
		}
		split_page(pg, order);
		for (i = 0; i < (1UL << order); i++)
			p->pool_pfns[p->pool_nr++] = page_to_pfn(pg) + i;
		cond_resched();
	}
	sort(p->pool_pfns, n, sizeof(u64), cmp_u64, NULL);
	return 0;
oom:
	pr_err("exec refused: out of memory for the free pool (%lu of %lu frames allocated)\n",
	       p->pool_nr, n);
	return -ENOMEM;
}

/* kallsyms_lookup_name is not exported: a kprobe finds it. */
static unsigned long lookup_name(const char *name)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	unsigned long (*fn)(const char *name);

	if (register_kprobe(&kp) < 0)
		return 0;
	fn = (void *)kp.addr;
	unregister_kprobe(&kp);
	return fn ? fn(name) : 0;
}

/*
 * Where each VCPU's vcpu_info is placed (Linux's per-cpu xen_vcpu_info); the
 * pointers too when vis is not NULL.
 */
static int prep_vcpu_info(struct vcpu_info_rec *rec, struct vcpu_info **vis,
			  const char *what)
{
	unsigned long info = lookup_name("xen_vcpu_info");
	unsigned long used = lookup_name("xen_vcpu");
	unsigned int cpu;

	if (!info || !used) {
		pr_err("%s refused: xen_vcpu_info/xen_vcpu not found through kallsyms\n",
		       what);
		return -ENOENT;
	}
	for_each_online_cpu(cpu) {
		struct vcpu_info *vi =
			per_cpu_ptr((struct vcpu_info __percpu *)info, cpu);
		struct vcpu_info *cur =
			*per_cpu_ptr((struct vcpu_info * __percpu *)used, cpu);
		u32 id = xen_vcpu_nr(cpu);

		if (cur != vi || id >= MAX_VCPUS) {
			pr_err("%s refused: CPU %u (VCPU %u) uses vcpu_info at %px, not its placed one\n",
			       what, cpu, id, cur);
			return -EINVAL;
		}
		rec[id].mfn = PFN_DOWN(arbitrary_virt_to_machine(vi).maddr);
		rec[id].offset = offset_in_page(vi);
		if (vis)
			vis[cpu] = vi;
	}
	return 0;
}

/* The purgatory takes VCPUs 0..n-1, at most 8: CPU n must be VCPU n. */
static int cpus_check(const char *what)
{
	unsigned int cpu;

	if (num_online_cpus() > MAX_VCPUS ||
	    num_online_cpus() != num_possible_cpus()) {
		pr_err("%s refused: %u of %u CPUs online; the purgatory needs all, at most %u\n",
		       what, num_online_cpus(), num_possible_cpus(), MAX_VCPUS);
		return -EBUSY;
	}
	for_each_online_cpu(cpu)
		if (xen_vcpu_nr(cpu) != cpu) {
			pr_err("%s refused: CPU %u is VCPU %u\n", what, cpu,
			       xen_vcpu_nr(cpu));
			return -EINVAL;
		}
	return 0;
}

static int exec_checks(void)
{
	long cur;
	int ret;

	ret = cpus_check("exec");
	if (ret)
		return ret;
	if (set_cpus_allowed_ptr(current, cpumask_of(0)) ||
	    raw_smp_processor_id() != 0) {
		pr_err("exec refused: cannot move to CPU 0 (VCPU 0 must enter the purgatory)\n");
		return -EBUSY;
	}
	if (xen_start_info->flags & SIF_INITDOMAIN) {
		/*
		 * Measured (Debian 6.1 as dom0, Xen 4.17): Linux's dom0 P2M
		 * remaps frames around the E820 holes and the purgatory's M2P
		 * update fails (-EINVAL) after the handover began.
		 */
		pr_err("exec refused: the initial domain's P2M (identity and remapped frames around the E820 holes) is not handled by the purgatory yet\n");
		return -EOPNOTSUPP;
	}
	/*
	 * A ballooned domain's P2M has holes (INVALID_P2M_ENTRY): the
	 * purgatory skips them and checks the present frames against the
	 * plan. Frames ballooned in past start_info's nr_pages have no entry
	 * in the P2M the handoff passes (its first nr_pages entries).
	 */
	cur = reservation(XENMEM_current_reservation);
	if (cur < 0 || cur > (long)xen_start_info->nr_pages) {
		pr_err("exec refused: the domain has %ld frames, start_info %lu: frames past the start-of-day P2M are not handed over\n",
		       cur, xen_start_info->nr_pages);
		return cur < 0 ? (int)cur : -EOPNOTSUPP;
	}
	if (!current->mm || current->mm != current->active_mm) {
		pr_err("exec refused: no process page tables to map the purgatory in\n");
		return -EINVAL;
	}
	return 0;
}

/*
 * Handoff v5 on: working memory, contiguous in VA, with its frames' PFNs: fresh
 * vmalloc pages, or (crash) the given frames vmap'ed.
 */
static int prep_work(struct exec_prep *p, const struct image *img,
		     struct page **frames)
{
	unsigned long i;

	if (frames)
		p->work = vmap(frames, img->work_pages, VM_MAP, PAGE_KERNEL);
	else
		p->work = vmalloc(img->work_pages << PAGE_SHIFT);
	p->work_pfns = kvmalloc_array(img->work_pages, sizeof(u64), GFP_KERNEL);
	if (!p->work || !p->work_pfns) {
		pr_err("%s refused: out of memory for %llu pages of the purgatory's working memory\n",
		       frames ? "crash load" : "exec", img->work_pages);
		return -ENOMEM;
	}
	for (i = 0; i < img->work_pages; i++)
		p->work_pfns[i] = vmalloc_to_pfn(p->work + (i << PAGE_SHIFT));
	return 0;
}

static void prep_handoff(struct exec_prep *p, const struct image *img)
{
	struct handoff *h = page_address(p->block);
	/* The records follow the block (152 bytes). */
	struct vcpu_info_rec *rec = (void *)(h + 1);
	struct start_info *si = page_address(p->block + 1);

	/* The old start_info as the purgatory reads it: Linux's P2M and L4. */
	memcpy(si, xen_start_info, sizeof(*si));
	si->mfn_list = (unsigned long)xen_p2m_addr;
	si->pt_base = (unsigned long)p->mm->pgd;
	*h = (struct handoff) {
		.magic = HANDOFF_MAGIC,
		.version = img->handoff_version,
		.flags = xen_vcpu_features(),
		.image_va = (unsigned long)p->image_va,
		.image_len = img->len,
		.old_start_info_va = (unsigned long)si,
		.old_virt_base = PAGE_OFFSET,
		.direct_map_va = PAGE_OFFSET,
		.scratch_va = p->purg_base + 511 * PAGE_SIZE,
		.nr_vcpus = num_online_cpus(),
		.keep_store_port = xen_start_info->store_evtchn,
		.keep_console_port = xen_initial_domain() ? 0 :
				     xen_start_info->console.domU.evtchn,
		.vcpu_info_va = (unsigned long)rec,
		.image_pfns_va = (unsigned long)p->image_pfns,
		.pool_pfns_va = (unsigned long)p->pool_pfns,
		.pool_pages = p->pool_nr,
	};
	if (p->work) {
		h->work_va = (unsigned long)p->work;
		h->work_pages = img->work_pages;
		h->work_pfns_va = (unsigned long)p->work_pfns;
	}
	p->handoff = h;
}

static int pvkexec_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct exec_prep *p = mapping_for;
	unsigned long i;
	int ret;

	if (!p || p->mm != current->mm || vma->vm_pgoff ||
	    vma->vm_start != p->purg_base ||
	    vma_pages(vma) != p->purg_pages)
		return -EINVAL;
	for (i = 0; i < p->purg_pages; i++) {
		ret = vm_insert_page(vma, vma->vm_start + (i << PAGE_SHIFT),
				     p->image_pages[p->purg_first + i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* A call, not a jump, so objtool sees no sibling call; it never returns. */
static __noreturn void jump(u64 entry, u64 rdi, u64 rsi)
{
	asm volatile(ANNOTATE_RETPOLINE_SAFE "call *%[entry]\n\tud2"
		     : ASM_CALL_CONSTRAINT
		     : [entry] "r" (entry), "D" (rdi), "S" (rsi)
		     : "memory");
	unreachable();
}

/* VCPU 0 to the boot entry, the others to the AP entry with their id. */
static __noreturn void enter_purgatory(struct exec_prep *p, unsigned int cpu)
{
	jump(cpu ? p->entry + AP_ENTRY_OFFSET : p->entry,
	     (unsigned long)p->handoff, cpu ? xen_vcpu_nr(cpu) : 0);
}

/* IPI handler on every other CPU: onto the exec task's tables, then away. */
static void ap_leave(void *info)
{
	struct exec_prep *p = info;

	write_cr3(__pa(p->mm->pgd));
	enter_purgatory(p, smp_processor_id());
}

static int unpin_mfn(unsigned long mfn)
{
	struct mmuext_op op = { .cmd = MMUEXT_UNPIN_TABLE, .arg1.mfn = mfn };

	return HYPERVISOR_mmuext_op(&op, 1, NULL, DOMID_SELF);
}

/*
 * Unpins every pinned frame but the current L4: first those Linux flags
 * PagePinned (process L4s, separately pinned L1s), then every other frame,
 * for trees pinned without the flag (Xen refuses frames that are not pinned).
 */
static void unpin_other_trees(struct exec_prep *p, unsigned long *flagged,
			      unsigned long *unflagged)
{
	unsigned long cur = PFN_DOWN(__pa(p->mm->pgd));
	unsigned long pfn;

	*flagged = 0;
	*unflagged = 0;
	for (pfn = 0; pfn < xen_start_info->nr_pages; pfn++) {
		bool pinned;

		if (pfn == cur || !pfn_valid(pfn))
			continue;
		pinned = PagePinned(pfn_to_page(pfn));
		if (unpin_mfn(pfn_to_mfn(pfn)))
			continue;
		(*(pinned ? flagged : unflagged))++;
		if (!pinned)
			pr_info("pfn %#lx was pinned without PagePinned (flags %pGp, count %d)\n",
				pfn, &pfn_to_page(pfn)->flags,
				page_count(pfn_to_page(pfn)));
	}
}

static struct cpumask exec_others;

static __noreturn void exec_go(struct exec_prep *p)
{
	unsigned long flagged, unflagged;

	cpumask_copy(&exec_others, cpu_online_mask);
	cpumask_clear_cpu(0, &exec_others);
	preempt_disable();
	smp_call_function_many(&exec_others, ap_leave, p, false);
	local_irq_disable();
	unpin_other_trees(p, &flagged, &unflagged);
	pr_emerg("exec: unpinned %lu frames Linux flags pinned and %lu it does not; entering the purgatory at %#llx\n",
		 flagged, unflagged, p->entry);
	enter_purgatory(p, 0);
}

/* The prepared exec, once kernel_restart() is under way. */
static struct exec_prep *armed;

#define BACKEND_WAIT_MS		5000

/* Polls a backend's state until it is @want, gone, or the deadline; the last state read. */
static int poll_backend_state(const char *be, int want, unsigned long deadline)
{
	int state = -1;

	while (xenbus_scanf(XBT_NIL, be, "state", "%d", &state) == 1 &&
	       state != want && time_before(jiffies, deadline))
		msleep(20);
	return state;
}

/*
 * One frontend: wait until its backend is Closed (6), so the backend has
 * unmapped our grants, then hand the device back as the toolstack created
 * it: frontend Initialising (1), backend InitWait (2). The next kernel's
 * frontend driver then connects as at boot; a PV Linux does not reset
 * frontends it finds Closed (xenbus_reset_state() is HVM-only).
 */
static void wait_backend(const char *fe, unsigned long deadline)
{
	char *be = xenbus_read(XBT_NIL, fe, "backend", NULL);
	int state, err;

	if (IS_ERR(be))
		return;
	state = poll_backend_state(be, XenbusStateClosed, deadline);
	if (state != XenbusStateClosed) {
		pr_err("exec: %s: backend %s still in state %d after the wait: its grants may stay mapped\n",
		       fe, be, state);
		goto out;
	}
	pr_info("exec: %s: backend %s closed\n", fe, be);
	err = xenbus_printf(XBT_NIL, fe, "state", "%d", XenbusStateInitialising);
	if (err) {
		pr_err("exec: %s: cannot set the frontend to Initialising (%d): the next kernel may not connect it\n",
		       fe, err);
		goto out;
	}
	state = poll_backend_state(be, XenbusStateInitWait, deadline);
	if (state == XenbusStateInitWait)
		pr_info("exec: %s: backend %s ready for the next kernel (InitWait)\n", fe, be);
	else
		pr_err("exec: %s: backend %s in state %d, not InitWait, after the frontend reset: the next kernel may not connect it\n",
		       fe, be, state);
out:
	kfree(be);
}

/* Every frontend of this domain (device/<type>/<id>): its backend's state. */
static void wait_backends_closed(void)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(BACKEND_WAIT_MS);
	unsigned int nt, ni, i, j;
	char **types, **ids;

	types = xenbus_directory(XBT_NIL, "device", "", &nt);
	if (IS_ERR(types))
		return;
	for (i = 0; i < nt; i++) {
		char *dir = kasprintf(GFP_KERNEL, "device/%s", types[i]);

		if (!dir)
			break;
		ids = xenbus_directory(XBT_NIL, dir, "", &ni);
		for (j = 0; !IS_ERR(ids) && j < ni; j++) {
			char *fe = kasprintf(GFP_KERNEL, "%s/%s", dir, ids[j]);

			if (fe)
				wait_backend(fe, deadline);
			kfree(fe);
		}
		if (!IS_ERR(ids))
			kfree(ids);
		kfree(dir);
	}
	kfree(types);
}

/*
 * Syscore shutdown, last step of kernel_restart() before machine_restart():
 * devices are shut down and this task runs on CPU 0.
 */
static void exec_shutdown_hook(void)
{
	struct exec_prep *p = READ_ONCE(armed);

	if (!p || current->mm != p->mm || raw_smp_processor_id() != 0)
		return;
	wait_backends_closed();
	exec_go(p);
}

#ifdef PVKEXEC_SYSCORE_DATA
static void exec_syscore_shutdown(void *data)
{
	exec_shutdown_hook();
}

static const struct syscore_ops exec_syscore_ops = {
	.shutdown = exec_syscore_shutdown,
};

static struct syscore exec_syscore = { .ops = &exec_syscore_ops };

static void exec_hook_register(void)
{
	register_syscore(&exec_syscore);
}

static void exec_hook_unregister(void)
{
	unregister_syscore(&exec_syscore);
}
#else
static struct syscore_ops exec_syscore_ops = {
	.shutdown = exec_shutdown_hook,
};

static void exec_hook_register(void)
{
	register_syscore_ops(&exec_syscore_ops);
}

static void exec_hook_unregister(void)
{
	unregister_syscore_ops(&exec_syscore_ops);
}
#endif

/* The purgatory segment at its base in the caller's process (pages inserted now). */
static int map_purgatory(struct file *file, struct exec_prep *p,
			 const char *what)
{
	unsigned long addr;

	mapping_for = p;
	addr = vm_mmap(file, p->purg_base, p->purg_pages << PAGE_SHIFT,
		       PROT_READ | PROT_WRITE | PROT_EXEC,
		       MAP_SHARED | MAP_FIXED_NOREPLACE, 0);
	mapping_for = NULL;
	if (IS_ERR_VALUE(addr) || addr != p->purg_base) {
		pr_err("%s refused: cannot map the purgatory at %#llx: %ld\n",
		       what, p->purg_base, (long)addr);
		return IS_ERR_VALUE(addr) ? (int)addr : -EEXIST;
	}
	p->mapped = addr;
	return 0;
}

static int ioctl_exec(struct file *file)
{
	struct exec_prep *p;
	int ret;

	if (!loaded) {
		pr_err("exec refused: no image loaded\n");
		return -ENOENT;
	}
	ret = exec_checks();
	if (ret)
		return ret;
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	p->mm = current->mm;
	/* The loaded image's own pages: listed, not copied. */
	ret = -ENOMEM;
	p->image_nr = loaded->nr_pages;
	p->image_pages = kvmalloc_array(p->image_nr, sizeof(*p->image_pages),
					GFP_KERNEL);
	if (!p->image_pages)
		goto fail;
	memcpy(p->image_pages, loaded->pages,
	       p->image_nr * sizeof(*p->image_pages));
	ret = prep_image(p, loaded, "exec") ?: prep_pool(p, loaded);
	if (ret)
		goto fail;
	ret = -ENOMEM;
	p->block = alloc_pages(GFP_KERNEL | __GFP_ZERO, 1);
	if (!p->block) {
		pr_err("exec refused: out of memory for the handoff block\n");
		goto fail;
	}
	split_page(p->block, 1);
	ret = prep_vcpu_info((void *)((struct handoff *)page_address(p->block) + 1),
			     NULL, "exec");
	if (ret)
		goto fail;
	ret = prep_work(p, loaded, NULL);
	if (ret)
		goto fail;
	prep_handoff(p, loaded);
	ret = map_purgatory(file, p, "exec");
	if (ret)
		goto fail;
	pr_info("exec: image of %lu pages listed (first pfn %#llx), free pool of %lu frames listed (pfn %#llx to %#llx), %u VCPUs, store port %u, console port %u\n",
		p->image_nr, p->image_pfns[0], p->pool_nr, p->pool_pfns[0],
		p->pool_pfns[p->pool_nr - 1], num_online_cpus(),
		p->handoff->keep_store_port, p->handoff->keep_console_port);
	WRITE_ONCE(armed, p);
	kernel_restart(NULL);
fail:
	exec_prep_free(p);
	return ret;
}

/*
 * Crash (kdump): docs/kernel-module.md, "Crash (kdump) load and panic path".
 * PVKEXEC_IOC_CRASH_RESERVE sets frames aside and builds the crash view: a
 * copy of Linux's P2M in which every frame but those set aside, the held L4,
 * the xenstore and console rings and the vcpu_info frames is a hole, so the
 * purgatory leaves the old kernel's memory alone. A load with
 * PVKEXEC_LOAD_CRASH prepares the whole handover at load (exec's functions)
 * and arms the panic path. At a panic, smp_send_stop() would put the other
 * CPUs down through Xen's stop_self (their registers lost, NMIs then ignored
 * as they are offline), so while armed smp_ops.stop_other_cpus sends NMIs
 * instead: each CPU saves its registers in the crash record and waits on the
 * held mm's tables. The panic notifier (priority INT_MAX, before Xen's
 * SHUTDOWN_crash) fills the record, waits for them, unpins the other trees,
 * writes the digest and sends everyone into the purgatory.
 */
#define CRASH_RECORD_MAGIC	0x48535243584b5650ULL	/* "PVKXCRSH" */
#define CRASH_RECORD_VERSION	1
#define CRASH_P2M_LISTS		16
#define CRASH_CPU_SAVED		1
#define CRASH_CPU_STOPPED	2
#define BLOCK_PAGES		(1UL << BLOCK_ORDER_MAX)
#define VIEW_MAX_ENTRIES	(BLOCK_PAGES * PAGE_SIZE / sizeof(u64))
#define CRASH_WAIT_US		1000000
#define SEG_KIND_KERNEL		1
#define PARK_MAX_MS		60000

struct crash_cpu {
	u32 vcpu;
	u32 state;
	u64 pid;
	u64 regs[27];	/* user_regs_struct order: pt_regs, then fs/gs base, ds es fs gs */
};
static_assert(sizeof(struct crash_cpu) == 232);
static_assert(sizeof(struct pt_regs) == 21 * sizeof(u64));

struct crash_record {
	u64 magic;
	u32 version;
	u32 nr_cpus;
	u32 panic_cpu;
	u32 xen_major_minor;
	u64 p2m_len;
	u64 max_pfn;
	u64 frame_list_list;
	u64 vmcoreinfo_maddr;
	u64 vmcoreinfo_size;
	u64 p2m_lists[CRASH_P2M_LISTS];
	struct crash_cpu cpus[MAX_VCPUS];
	u64 panic_time_ns;
	u64 reserved[3];
	u8 sha256[SHA256_DIGEST_SIZE];
};
static_assert(offsetof(struct crash_record, p2m_lists) == 64);
static_assert(offsetof(struct crash_record, cpus) == 192);
static_assert(offsetof(struct crash_record, panic_time_ns) == 2048);
static_assert(offsetof(struct crash_record, sha256) == 2080);
static_assert(sizeof(struct crash_record) == 2112);

/* The reservation and, once loaded, the prepared handover. */
struct crash {
	unsigned long pages;
	struct page *pool;		/* block 0: the purgatory's free pool */
	struct page *image;		/* block 1: the image */
	u64 *rest;			/* PFNs of the other set-aside frames, ascending */
	unsigned long nr_rest;
	struct page *record;
	struct page *lists[CRASH_P2M_LISTS];
	unsigned int nr_lists;
	u64 *view;			/* PFN-contiguous block in the direct map */
	unsigned int view_order;
	unsigned long p2m_len;
	unsigned long present;
	struct mm_struct *mm;		/* held (mmget) until unload */
	unsigned int nr_cpus;
	struct vcpu_info *vi[MAX_VCPUS];
	struct exec_prep *prep;		/* NULL: no image loaded */
	atomic_t *panic_cpu;		/* Linux's, through kallsyms */
	struct shared_info **shared_info;
};

static bool fault_injection;
module_param(fault_injection, bool, 0444);
MODULE_PARM_DESC(fault_injection,
		 "tests only: allow the PVKEXEC_IOC_TEST_* ioctls (corrupt the crash image, park CPU 1)");

static struct crash *crash;		/* under pvkexec_lock */
static struct crash *crash_armed;	/* what the panic path reads */
static atomic_t crash_stopping;		/* the NMIs went out */
static atomic_t crash_entered;		/* the panic notifier ran */
static unsigned int crash_cpu;		/* the panicking CPU */
static int crash_arrived[MAX_VCPUS];	/* 1: saved, on the held tables; < 0: errno */
static int crash_go;
static void (*crash_orig_stop)(int wait);

/* Ascending u64s, for sort(). */
static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/*
 * The P2M entries a dump covers: Linux keeps shared_info's max_pfn at the end of
 * the P2M it has populated (xen_p2m_last_pfn; the balloon moves it), far below
 * xen_p2m_size, which spans the whole virtual P2M area.
 */
static unsigned long crash_dump_len(const struct shared_info *s)
{
	return min_t(unsigned long, s->arch.max_pfn, xen_p2m_size);
}

/*
 * At reserve: the most PFNs a dump may need (the domain may balloon up to its
 * maximum).
 */
static unsigned long crash_dump_limit(const struct crash *c)
{
	const struct shared_info *s = READ_ONCE(*c->shared_info);
	long max = reservation(XENMEM_maximum_reservation);
	unsigned long limit;

	limit = max_t(unsigned long, crash_dump_len(s),
		      max > 0 ? ALIGN(max, P2M_PER_PAGE) : 0);
	return min_t(unsigned long, limit, xen_p2m_size);
}

/* Frames 2048 on: any orders (largest first), their PFNs sorted. */
static int crash_alloc_rest(struct crash *c)
{
	unsigned long n = c->pages - 2 * BLOCK_PAGES, i;
	unsigned int order = BLOCK_ORDER_MAX;

	c->rest = kvmalloc_array(n, sizeof(u64), GFP_KERNEL);
	if (!c->rest)
		return -ENOMEM;
	while (c->nr_rest < n) {
		struct page *pg;

		while ((1UL << order) > n - c->nr_rest)
			order--;
		pg = alloc_pages(GFP_KERNEL | __GFP_NOWARN | __GFP_NORETRY,
				 order);
		if (!pg) {
			if (!order)
				return -ENOMEM;
			order--;
			continue;
		}
		split_page(pg, order);
		for (i = 0; i < (1UL << order); i++)
			c->rest[c->nr_rest++] = page_to_pfn(pg) + i;
		cond_resched();
	}
	sort(c->rest, n, sizeof(u64), cmp_u64, NULL);
	return 0;
}

static int crash_alloc(struct crash *c)
{
	unsigned int i;

	c->pool = alloc_block(BLOCK_ORDER_MAX);
	c->image = alloc_block(BLOCK_ORDER_MAX);
	c->record = alloc_page(GFP_KERNEL | __GFP_ZERO);
	c->p2m_len = xen_start_info->nr_pages;
	c->view_order = get_order(c->p2m_len * sizeof(u64));
	c->view = (u64 *)__get_free_pages(GFP_KERNEL | __GFP_NOWARN,
					  c->view_order);
	c->nr_lists = DIV_ROUND_UP(DIV_ROUND_UP(crash_dump_limit(c),
						P2M_PER_PAGE), P2M_PER_PAGE);
	for (i = 0; i < c->nr_lists; i++) {
		c->lists[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!c->lists[i])
			break;
	}
	if (!c->pool || !c->image || !c->record || !c->view ||
	    i < c->nr_lists || crash_alloc_rest(c)) {
		pr_err("crash reserve refused: out of memory for %lu frames set aside (%lu of the rest allocated)\n",
		       c->pages, c->nr_rest);
		return -ENOMEM;
	}
	return 0;
}

static void crash_free(struct crash *c)
{
	unsigned long i;

	free_block(c->pool, BLOCK_ORDER_MAX);
	free_block(c->image, BLOCK_ORDER_MAX);
	for (i = 0; i < c->nr_rest; i++)
		__free_page(pfn_to_page(c->rest[i]));
	kvfree(c->rest);
	if (c->record)
		__free_page(c->record);
	for (i = 0; i < c->nr_lists; i++)
		if (c->lists[i])
			__free_page(c->lists[i]);
	if (c->view)
		free_pages((unsigned long)c->view, c->view_order);
	if (c->mm)
		mmput(c->mm);
	kfree(c);
}

/* Makes pfn present in the view with its real MFN. */
static int view_mark(struct crash *c, unsigned long pfn, const char *what)
{
	unsigned long mfn = pfn < c->p2m_len ? __pfn_to_mfn(pfn) :
			    INVALID_P2M_ENTRY;

	if (mfn == INVALID_P2M_ENTRY ||
	    (mfn & (FOREIGN_FRAME_BIT | IDENTITY_FRAME_BIT))) {
		pr_err("crash reserve refused: %s (pfn %#lx) has no frame of its own in the P2M (%#lx)\n",
		       what, pfn, mfn);
		return -EINVAL;
	}
	if (c->view[pfn] == INVALID_P2M_ENTRY) {
		c->view[pfn] = mfn;
		c->present++;
	}
	return 0;
}

static int view_mark_mfn(struct crash *c, unsigned long mfn, const char *what)
{
	unsigned long pfn = mfn_to_pfn(mfn);

	if (pfn >= c->p2m_len || __pfn_to_mfn(pfn) != mfn) {
		pr_err("crash reserve refused: %s (mfn %#lx) is not in the P2M\n",
		       what, mfn);
		return -EINVAL;
	}
	return view_mark(c, pfn, what);
}

/* The contract's present frames; every other entry stays a hole (~0). */
static int crash_build_view(struct crash *c)
{
	struct vcpu_info_rec rec[MAX_VCPUS] = {};
	unsigned long i;
	unsigned int cpu;
	int ret = 0;

	memset(c->view, 0xff, c->p2m_len * sizeof(u64));
	for (i = 0; i < BLOCK_PAGES && !ret; i++)
		ret = view_mark(c, page_to_pfn(c->pool) + i, "the free pool") ?:
		      view_mark(c, page_to_pfn(c->image) + i, "the image block");
	for (i = 0; i < c->nr_rest && !ret; i++)
		ret = view_mark(c, c->rest[i], "a set-aside frame");
	if (!ret)
		ret = view_mark(c, PFN_DOWN(__pa(c->mm->pgd)), "the held L4") ?:
		      view_mark_mfn(c, xen_start_info->store_mfn, "the xenstore ring") ?:
		      view_mark_mfn(c, xen_start_info->console.domU.mfn,
				    "the console ring") ?:
		      prep_vcpu_info(rec, c->vi, "crash reserve");
	for_each_online_cpu(cpu)
		if (!ret)
			ret = view_mark_mfn(c, rec[cpu].mfn, "a vcpu_info frame");
	c->nr_cpus = num_online_cpus();
	return ret;
}

static int crash_reserve_checks(struct crash *c, u64 pages)
{
	long cur = reservation(XENMEM_current_reservation);

	if (crash) {
		pr_err("crash reserve refused: %lu frames are already set aside (PVKEXEC_IOC_CRASH_UNLOAD first)\n",
		       crash->pages);
		return -EBUSY;
	}
	if (xen_start_info->flags & SIF_INITDOMAIN) {
		pr_err("crash reserve refused: not a PV domU (the initial domain's P2M is not handled by the purgatory)\n");
		return -EOPNOTSUPP;
	}
	if (cur < 0) {
		pr_err("crash reserve refused: XENMEM_current_reservation failed: %ld\n",
		       cur);
		return (int)cur;
	}
	if (pages % BLOCK_PAGES || pages < 2 * BLOCK_PAGES ||
	    pages > (u64)cur / 2) {
		pr_err("crash reserve refused: %llu frames (a multiple of %lu, at least %lu, at most half of the domain's %ld)\n",
		       pages, BLOCK_PAGES, 2 * BLOCK_PAGES, cur);
		return -EINVAL;
	}
	if (xen_start_info->nr_pages > VIEW_MAX_ENTRIES) {
		pr_err("crash reserve refused: the domain has %lu PFNs, a 4 MiB view block holds %lu\n",
		       xen_start_info->nr_pages, VIEW_MAX_ENTRIES);
		return -E2BIG;
	}
	c->panic_cpu = (atomic_t *)lookup_name("panic_cpu");
	c->shared_info = (struct shared_info **)lookup_name("HYPERVISOR_shared_info");
	if (!c->panic_cpu || !c->shared_info) {
		pr_err("crash reserve refused: panic_cpu/HYPERVISOR_shared_info not found through kallsyms\n");
		return -ENOENT;
	}
	if (DIV_ROUND_UP(crash_dump_limit(c), P2M_PER_PAGE) >
	    CRASH_P2M_LISTS * P2M_PER_PAGE) {
		pr_err("crash reserve refused: a dump of %lu PFNs needs more than %u P2M list pages\n",
		       crash_dump_limit(c), CRASH_P2M_LISTS);
		return -E2BIG;
	}
	if (!current->mm || current->mm != current->active_mm) {
		pr_err("crash reserve refused: no process page tables to hold\n");
		return -EINVAL;
	}
	return cpus_check("crash reserve");
}

static int ioctl_crash_reserve(struct pvkexec_crash_reserve __user *uarg)
{
	struct pvkexec_crash_reserve arg;
	struct crash *c;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	ret = crash_reserve_checks(c, arg.pages);
	if (ret) {
		kfree(c);
		return ret;
	}
	c->pages = arg.pages;
	c->mm = current->mm;
	mmget(c->mm);
	ret = crash_alloc(c);
	if (!ret)
		ret = crash_build_view(c);
	if (!ret) {
		arg.present = c->present;
		arg.record_mfn = pfn_to_mfn(page_to_pfn(c->record));
		arg.p2m_len = c->p2m_len;
		if (copy_to_user(uarg, &arg, sizeof(arg)))
			ret = -EFAULT;
	}
	if (ret) {
		crash_free(c);
		return ret;
	}
	crash = c;
	pr_info("crash: %lu frames set aside, view of %lu entries with %lu present, record mfn %#llx, %u VCPUs\n",
		c->pages, c->p2m_len, c->present, arg.record_mfn, c->nr_cpus);
	return 0;
}

/*
 * Onto mm's tables with direct hypercalls: write_cr3 would issue the
 * multicall batch an NMI may have interrupted.
 */
static int load_tables(struct mm_struct *mm)
{
	pgd_t *user = (pgd_t *)virt_to_page(mm->pgd)->private;
	struct mmuext_op op[2] = {
		{ .cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = virt_to_mfn(mm->pgd) },
		{ .cmd = MMUEXT_NEW_USER_BASEPTR,
		  .arg1.mfn = user ? virt_to_mfn(user) : 0 },
	};

	return HYPERVISOR_mmuext_op(op, 2, NULL, DOMID_SELF);
}

static void crash_save_cpu(struct crash *c, unsigned int cpu,
			   const struct pt_regs *regs)
{
	struct crash_cpu *s = &((struct crash_record *)page_address(c->record))->cpus[cpu];
	unsigned int seg;
	u64 base;

	s->vcpu = xen_vcpu_nr(cpu);
	s->pid = current->pid;
	memcpy(s->regs, regs, sizeof(*regs));
	s->regs[21] = rdmsrl_safe(MSR_FS_BASE, &base) ? 0 : base;
	s->regs[22] = rdmsrl_safe(MSR_KERNEL_GS_BASE, &base) ? 0 : base;
	asm volatile("movl %%ds, %0" : "=r" (seg));
	s->regs[23] = seg;
	asm volatile("movl %%es, %0" : "=r" (seg));
	s->regs[24] = seg;
	asm volatile("movl %%fs, %0" : "=r" (seg));
	s->regs[25] = seg;
	asm volatile("movl %%gs, %0" : "=r" (seg));
	s->regs[26] = seg;
	s->state = CRASH_CPU_SAVED;
}

/* Every other CPU: saved, on the held tables, waiting for the word. */
static __noreturn void crash_leave(struct crash *c, unsigned int cpu)
{
	int ret = load_tables(c->mm);

	smp_store_release(&crash_arrived[cpu], ret ?: 1);
	while (!smp_load_acquire(&crash_go))
		cpu_relax();
	enter_purgatory(c->prep, cpu);
}

static int crash_nmi(unsigned int type, struct pt_regs *regs)
{
	struct crash *c = READ_ONCE(crash_armed);
	unsigned int cpu = raw_smp_processor_id();

	if (!c || !atomic_read(&crash_stopping) ||
	    cpu == READ_ONCE(crash_cpu) || cpu >= c->nr_cpus)
		return NMI_DONE;
	local_irq_disable();
	crash_save_cpu(c, cpu, regs);
	crash_leave(c, cpu);
}

/* Once, from the panicking CPU: an NMI to every other armed VCPU. */
static void crash_send_nmis(struct crash *c)
{
	unsigned int me = raw_smp_processor_id(), cpu;
	int ret;

	WRITE_ONCE(crash_cpu, me);
	smp_mb();
	if (atomic_xchg(&crash_stopping, 1))
		return;
	for (cpu = 0; cpu < c->nr_cpus; cpu++) {
		if (cpu == me)
			continue;
		ret = HYPERVISOR_vcpu_op(VCPUOP_send_nmi, xen_vcpu_nr(cpu),
					 NULL);
		if (ret) {
			WRITE_ONCE(crash_arrived[cpu], ret);
			pr_emerg("crash: VCPUOP_send_nmi to VCPU %u failed: %d\n",
				 xen_vcpu_nr(cpu), ret);
		}
	}
}

/* smp_ops.stop_other_cpus while armed: NMIs at a panic, Xen's stop otherwise. */
static void crash_stop_other_cpus(int wait)
{
	struct crash *c = READ_ONCE(crash_armed);

	if (c && atomic_read(c->panic_cpu) == raw_smp_processor_id()) {
		crash_send_nmis(c);
		return;
	}
	crash_orig_stop(wait);
}

/* The MFN of every page of Linux's P2M (xen_p2m_addr) a dump covers, 512 to a list page. */
static int crash_p2m_lists(struct crash *c, struct crash_record *r,
			   const struct shared_info *s)
{
	unsigned long n = DIV_ROUND_UP(crash_dump_len(s), P2M_PER_PAGE), i;
	unsigned int level;

	if (DIV_ROUND_UP(n, P2M_PER_PAGE) > c->nr_lists) {
		pr_emerg("crash: the P2M grew to %lu entries, past the %u list pages set aside\n",
			 crash_dump_len(s), c->nr_lists);
		return -E2BIG;
	}
	for (i = 0; i < n; i++) {
		unsigned long va = (unsigned long)(xen_p2m_addr + i * P2M_PER_PAGE);
		pte_t *pte = lookup_address(va, &level);
		u64 *list = page_address(c->lists[i / P2M_PER_PAGE]);

		if (!pte || level != PG_LEVEL_4K || !pte_present(*pte)) {
			pr_emerg("crash: the P2M page at %#lx is not mapped by a 4 KiB PTE\n",
				 va);
			return -EFAULT;
		}
		list[i % P2M_PER_PAGE] = pte_mfn(*pte);
	}
	for (i = 0; i < c->nr_lists; i++)
		r->p2m_lists[i] = pfn_to_mfn(page_to_pfn(c->lists[i]));
	return 0;
}

static u64 vcpu_time_ns(const struct pvclock_vcpu_time_info *t)
{
	unsigned int v;
	u64 ns;

	do {
		v = pvclock_read_begin(t);
		ns = __pvclock_read_cycles(t, rdtsc_ordered());
	} while (pvclock_read_retry(t, v));
	return ns;
}

/* Everything but the other CPUs' slots and the digest. */
static int crash_fill_record(struct crash *c, unsigned int me,
			     const struct pt_regs *regs)
{
	struct crash_record *r = page_address(c->record);
	struct shared_info *s = READ_ONCE(*c->shared_info);
	int ver = HYPERVISOR_xen_version(XENVER_version, NULL);

	if (ver < 0) {
		pr_emerg("crash: XENVER_version failed: %d\n", ver);
		return ver;
	}
	r->magic = CRASH_RECORD_MAGIC;
	r->version = CRASH_RECORD_VERSION;
	r->nr_cpus = c->nr_cpus;
	r->panic_cpu = me;
	r->xen_major_minor = ver;
	r->p2m_len = crash_dump_len(s);
	r->max_pfn = s->arch.max_pfn;
	r->frame_list_list = s->arch.pfn_to_mfn_frame_list_list ?: ~0ULL;
	r->vmcoreinfo_maddr = paddr_vmcoreinfo_note();
	r->vmcoreinfo_size = VMCOREINFO_NOTE_SIZE;
	r->panic_time_ns = vcpu_time_ns(&c->vi[me]->time);
	crash_save_cpu(c, me, regs);
	return crash_p2m_lists(c, r, s);
}

/*
 * Waits (bounded) until every other CPU saved its registers. The purgatory
 * takes every VCPU of the handoff (it waits for each AP): a CPU that does not
 * answer is put down and the crash path ends here.
 */
static int crash_wait_cpus(struct crash *c, unsigned int me)
{
	struct crash_record *r = page_address(c->record);
	unsigned int cpu, left = 1;
	unsigned long us;
	int ret = 0;

	for (us = 0; us < CRASH_WAIT_US && left; us += 10) {
		left = 0;
		for (cpu = 0; cpu < c->nr_cpus; cpu++)
			left += cpu != me && !smp_load_acquire(&crash_arrived[cpu]);
		if (left)
			udelay(10);
	}
	for (cpu = 0; cpu < c->nr_cpus; cpu++) {
		int a = smp_load_acquire(&crash_arrived[cpu]);

		if (cpu == me || a == 1)
			continue;
		if (!a) {
			r->cpus[cpu].vcpu = xen_vcpu_nr(cpu);
			r->cpus[cpu].state = CRASH_CPU_STOPPED;
			pr_emerg("crash: CPU %u did not answer the NMI in %u ms: VCPUOP_down %d\n",
				 cpu, CRASH_WAIT_US / 1000,
				 HYPERVISOR_vcpu_op(VCPUOP_down, xen_vcpu_nr(cpu), NULL));
			ret = -ETIMEDOUT;
		} else {
			pr_emerg("crash: CPU %u was not stopped: %d\n", cpu, a);
			ret = a;
		}
	}
	if (ret)
		pr_emerg("crash: the purgatory needs every VCPU of the handoff: no capture\n");
	return ret;
}

static __noreturn void crash_enter(struct crash *c, unsigned int me)
{
	struct crash_record *r = page_address(c->record);
	unsigned long flagged, unflagged;
	unsigned int cpu;

	unpin_other_trees(c->prep, &flagged, &unflagged);
	sha256((u8 *)r, offsetof(struct crash_record, sha256), r->sha256);
	for (cpu = 0; cpu < c->nr_cpus; cpu++)
		pr_emerg("crash: CPU %u (VCPU %u, pid %llu) saved at %pS\n", cpu,
			 r->cpus[cpu].vcpu, r->cpus[cpu].pid,
			 (void *)(unsigned long)r->cpus[cpu].regs[16]);
	pr_emerg("crash: %u CPUs saved, record at mfn %#lx; unpinned %lu + %lu frames; entering the purgatory at %#llx\n",
		 c->nr_cpus, pfn_to_mfn(page_to_pfn(c->record)), flagged,
		 unflagged, c->prep->entry);
	smp_store_release(&crash_go, 1);
	enter_purgatory(c->prep, me);
}

/* Before Xen's own panic notifier (SHUTDOWN_crash), which runs if this returns. */
static int crash_panic(struct notifier_block *nb, unsigned long event,
		       void *msg)
{
	struct crash *c = READ_ONCE(crash_armed);
	unsigned int me = raw_smp_processor_id();
	struct pt_regs regs;
	int ret;

	if (!c || atomic_xchg(&crash_entered, 1))
		return NOTIFY_DONE;
	crash_setup_regs(&regs, NULL);
	regs.orig_ax = -1;
	local_irq_disable();
	crash_send_nmis(c);
	ret = crash_fill_record(c, me, &regs);
	if (!ret) {
		ret = load_tables(c->mm);
		if (ret)
			pr_emerg("crash: cannot switch to the held page tables: %d\n",
				 ret);
	}
	if (!ret)
		ret = crash_wait_cpus(c, me);
	if (ret) {
		pr_emerg("crash: the crash kernel is not entered (%d); Xen's crash shutdown follows\n",
			 ret);
		return NOTIFY_DONE;
	}
	crash_enter(c, me);
}

static struct notifier_block crash_nb = {
	.notifier_call = crash_panic,
	.priority = INT_MAX,
};

static int crash_arm(struct crash *c)
{
	int ret;

	atomic_set(&crash_stopping, 0);
	atomic_set(&crash_entered, 0);
	memset(crash_arrived, 0, sizeof(crash_arrived));
	crash_go = 0;
	ret = register_nmi_handler(NMI_LOCAL, crash_nmi, 0, "pvkexec");
	if (ret) {
		pr_err("crash load refused: NMI handler not registered: %d\n",
		       ret);
		return ret;
	}
	ret = atomic_notifier_chain_register(&panic_notifier_list, &crash_nb);
	if (ret) {
		pr_err("crash load refused: panic notifier not registered: %d\n",
		       ret);
		unregister_nmi_handler(NMI_LOCAL, "pvkexec");
		return ret;
	}
	WRITE_ONCE(crash_armed, c);
	crash_orig_stop = smp_ops.stop_other_cpus;
	smp_ops.stop_other_cpus = crash_stop_other_cpus;
	return 0;
}

static void crash_disarm(void)
{
	if (!crash_armed)
		return;
	smp_ops.stop_other_cpus = crash_orig_stop;
	WRITE_ONCE(crash_armed, NULL);
	if (atomic_notifier_chain_unregister(&panic_notifier_list, &crash_nb))
		pr_err("crash: the panic notifier was not registered\n");
	unregister_nmi_handler(NMI_LOCAL, "pvkexec");
}

static int crash_load_checks(const struct crash *c, const struct image *img)
{
	if (!c) {
		pr_err("crash load refused: no frames set aside (PVKEXEC_IOC_CRASH_RESERVE first)\n");
		return -ENOENT;
	}
	if (c->prep) {
		pr_err("crash load refused: a crash image is loaded (PVKEXEC_IOC_CRASH_UNLOAD first)\n");
		return -EBUSY;
	}
	if (current->mm != c->mm) {
		pr_err("crash load refused: the frames were set aside by another process, whose page tables are kept\n");
		return -EPERM;
	}
	if (img->pool_pages > BLOCK_PAGES) {
		pr_err("crash load refused: the image needs a free pool of %llu frames, the reservation's pool block has %lu\n",
		       img->pool_pages, BLOCK_PAGES);
		return -ENOSPC;
	}
	if (img->len > BLOCK_PAGES * PAGE_SIZE) {
		pr_err("crash load refused: a %llu-byte image does not fit the reservation's 4 MiB image block\n",
		       img->len);
		return -E2BIG;
	}
	if (img->work_pages > c->nr_rest) {
		pr_err("crash load refused: %llu working pages, %lu set-aside frames past the two blocks\n",
		       img->work_pages, c->nr_rest);
		return -ENOSPC;
	}
	if (num_online_cpus() != c->nr_cpus) {
		pr_err("crash load refused: %u CPUs online, %u at the reservation\n",
		       num_online_cpus(), c->nr_cpus);
		return -EBUSY;
	}
	return cpus_check("crash load");
}

/* Handoff v5's working memory: the first work_pages of the rest, vmap'ed. */
static int crash_prep_work(struct exec_prep *p, const struct crash *c,
			   const struct image *img)
{
	struct page **frames;
	unsigned long i;
	int ret;

	frames = kvmalloc_array(img->work_pages, sizeof(*frames), GFP_KERNEL);
	if (!frames)
		return -ENOMEM;
	for (i = 0; i < img->work_pages; i++)
		frames[i] = pfn_to_page(c->rest[i]);
	ret = prep_work(p, img, frames);
	kvfree(frames);
	return ret;
}

/*
 * The crash image is copied into the image block (handoff v6 lists its pages);
 * the pool block is listed whole (ascending).
 */
static int crash_prep_lists(struct exec_prep *p, const struct crash *c,
			    const struct image *img)
{
	unsigned long i;

	p->image_pages = kvmalloc_array(p->image_nr, sizeof(*p->image_pages),
					GFP_KERNEL);
	p->pool_pfns = kvmalloc_array(BLOCK_PAGES, sizeof(u64), GFP_KERNEL);
	if (!p->image_pages || !p->pool_pfns) {
		pr_err("crash load refused: out of memory to list the image and the pool\n");
		return -ENOMEM;
	}
	for (i = 0; i < p->image_nr; i++) {
		p->image_pages[i] = c->image + i;
		copy_page(page_address(c->image + i),
			  page_address(img->pages[i]));
	}
	for (i = 0; i < BLOCK_PAGES; i++)
		p->pool_pfns[i] = page_to_pfn(c->pool) + i;
	p->pool_nr = BLOCK_PAGES;
	return 0;
}

/* The handover exec prepares at the jump, prepared now in the set-aside frames. */
static int crash_load(struct file *file, const struct image *img)
{
	struct crash *c = crash;
	struct exec_prep *p;
	struct start_info *si;
	int ret;

	ret = crash_load_checks(c, img);
	if (ret)
		return ret;
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	*p = (struct exec_prep) {
		.crash = true, .mm = c->mm, .image_nr = img->nr_pages,
	};
	ret = crash_prep_lists(p, c, img);
	if (ret)
		goto fail;
	ret = prep_image(p, img, "crash load");
	if (ret)
		goto fail;
	ret = -ENOMEM;
	p->block = alloc_pages(GFP_KERNEL | __GFP_ZERO, 1);
	if (!p->block)
		goto fail;
	split_page(p->block, 1);
	ret = prep_vcpu_info((void *)((struct handoff *)page_address(p->block) + 1),
			     NULL, "crash load") ?:
	      crash_prep_work(p, c, img);
	if (ret)
		goto fail;
	prep_handoff(p, img);
	si = (struct start_info *)(unsigned long)p->handoff->old_start_info_va;
	si->mfn_list = (unsigned long)c->view;
	si->nr_pages = c->p2m_len;
	ret = map_purgatory(file, p, "crash load");
	if (ret)
		goto fail;
	c->prep = p;
	ret = crash_arm(c);
	if (ret) {
		c->prep = NULL;
		goto fail;
	}
	pr_info("crash: image of %llu bytes loaded and armed: %u VCPUs, %llu working pages, purgatory at %#llx\n",
		img->len, c->nr_cpus, img->work_pages, p->purg_base);
	return 0;
fail:
	exec_prep_free(p);
	return ret;
}

static int ioctl_crash_unload(void)
{
	struct crash *c = crash;

	if (!c)
		return -ENOENT;
	crash_disarm();
	if (c->prep)
		exec_prep_free(c->prep);
	crash = NULL;
	pr_info("crash: unloaded, %lu frames released\n", c->pages);
	crash_free(c);
	return 0;
}

static void crash_info(struct pvkexec_info *info)
{
	if (!crash)
		return;
	info->flags |= PVKEXEC_INFO_CRASH_RESERVED;
	if (crash->prep)
		info->flags |= PVKEXEC_INFO_CRASH_LOADED;
	info->crash_pages = crash->pages;
	info->crash_present = crash->present;
	info->crash_record_mfn = pfn_to_mfn(page_to_pfn(crash->record));
}

/* Tests: one byte of the kernel segment in the image block. */
static int test_corrupt_crash(void)
{
	const struct image_header *h;
	struct segment_desc d;
	u64 off;
	u32 k;
	u8 *img;

	if (!crash || !crash->prep)
		return -ENOENT;
	img = page_address(crash->image);
	h = (const void *)img;
	off = h->data_offset;
	for (k = 0; k < h->nr_segments; k++) {
		memcpy(&d, img + IMAGE_HEADER_SIZE + k * IMAGE_SEGMENT_DESC_SIZE,
		       sizeof(d));
		if (d.kind == SEG_KIND_KERNEL && d.len &&
		    off + d.len / 2 < crash->prep->handoff->image_len) {
			img[off + d.len / 2] ^= 0xff;
			pr_warn("test: flipped byte %llu of the crash image (its kernel segment)\n",
				off + d.len / 2);
			return 0;
		}
		off += PAGE_ALIGN(d.len);
	}
	return -ENOENT;
}

static void park_cpu(void *unused)
{
	unsigned int ms;

	local_irq_disable();
	for (ms = 0; ms < PARK_MAX_MS && !atomic_read(&crash_stopping); ms++)
		mdelay(1);
}

/* Tests: CPU 1 spins with interrupts off, where only an NMI reaches it. */
static int test_park_cpu1(void)
{
	int ret = -EBUSY;

	if (!cpu_online(1))
		return -ENODEV;
	if (get_cpu() != 1)
		ret = smp_call_function_single(1, park_cpu, NULL, 0);
	put_cpu();
	if (!ret)
		pr_warn("test: CPU 1 parked with interrupts off for up to %u ms\n",
			PARK_MAX_MS);
	return ret;
}

static long pvkexec_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	long ret;

	if (!capable(CAP_SYS_BOOT))
		return -EPERM;
	if (mutex_lock_interruptible(&pvkexec_lock))
		return -EINTR;
	switch (cmd) {
	case PVKEXEC_IOC_INFO:
		ret = ioctl_info(uarg);
		break;
	case PVKEXEC_IOC_LOAD:
		ret = ioctl_load(file, uarg);
		break;
	case PVKEXEC_IOC_UNLOAD:
		ret = ioctl_unload();
		break;
	case PVKEXEC_IOC_EXEC:
		ret = ioctl_exec(file);
		break;
	case PVKEXEC_IOC_CRASH_RESERVE:
		ret = ioctl_crash_reserve(uarg);
		break;
	case PVKEXEC_IOC_CRASH_UNLOAD:
		ret = ioctl_crash_unload();
		break;
	case PVKEXEC_IOC_TEST_CORRUPT_CRASH:
		ret = fault_injection ? test_corrupt_crash() : -ENOTTY;
		break;
	case PVKEXEC_IOC_TEST_PARK_CPU1:
		ret = fault_injection ? test_park_cpu1() : -ENOTTY;
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&pvkexec_lock);
	return ret;
}

static const struct file_operations pvkexec_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = pvkexec_ioctl,
	.mmap = pvkexec_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice pvkexec_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pvkexec",
	.fops = &pvkexec_fops,
	.mode = 0600,
};

static int __init pvkexec_init(void)
{
	int ret;

	if (!xen_pv_domain()) {
		pr_err("not a Xen PV guest: pvkexec only works in a PV domain\n");
		return -ENODEV;
	}
	ret = misc_register(&pvkexec_dev);
	if (ret) {
		pr_err("cannot register /dev/pvkexec: %d\n", ret);
		return ret;
	}
	exec_hook_register();
	pr_info("ready: /dev/pvkexec (%s domain)\n",
		xen_start_info->flags & SIF_INITDOMAIN ? "initial" : "PV");
	return 0;
}

static void __exit pvkexec_exit(void)
{
	exec_hook_unregister();
	misc_deregister(&pvkexec_dev);
	image_free(loaded);
	loaded = NULL;
	if (crash)
		ioctl_crash_unload();
}

module_init(pvkexec_init);
module_exit(pvkexec_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kexec for Xen PV guests: image store and handover");
MODULE_VERSION("0.1");
