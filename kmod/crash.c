// SPDX-License-Identifier: GPL-2.0
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
 *
 * This file: PVKEXEC_IOC_CRASH_RESERVE (the frames set aside, the view), the
 * crash load (exec's preparation on the set-aside frames), unload, the crash
 * side of PVKEXEC_IOC_INFO and the test that corrupts a loaded crash image.
 * The panic path is in panic.c.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/uaccess.h>
#include <xen/xen.h>
#include <xen/interface/memory.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/page.h>

#include "pvkexec.h"

#define BLOCK_PAGES		(1UL << BLOCK_ORDER_MAX)
#define SEG_KIND_KERNEL		1

struct crash *crash;		/* under pvkexec_lock */

/*
 * The P2M entries a dump covers: Linux keeps shared_info's max_pfn at the end of
 * the P2M it has populated (xen_p2m_last_pfn; the balloon moves it), far below
 * xen_p2m_size, which spans the whole virtual P2M area.
 */
unsigned long crash_dump_len(const struct shared_info *s)
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

/*
 * The record's P2M directory: one list page per 512 P2M pages (1 GiB of PFNs)
 * of the most PFNs a dump may need, and one directory page per 511 list pages
 * (the directory is used for every size). Zeroed: 0 past the last entry. Filled
 * at the panic (panic.c), when the P2M's length and every MFN are final.
 */
static int crash_alloc_lists(struct crash *c)
{
	unsigned long p2m_pages = DIV_ROUND_UP(crash_dump_limit(c), P2M_PER_PAGE);
	unsigned long i, n;

	c->nr_lists = max(1UL, DIV_ROUND_UP(p2m_pages, P2M_PER_PAGE));
	c->nr_dirs = DIV_ROUND_UP(c->nr_lists, CRASH_DIR_LISTS);
	n = c->nr_lists + c->nr_dirs;
	c->lists = kvcalloc(n, sizeof(*c->lists), GFP_KERNEL);
	if (!c->lists)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		c->lists[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!c->lists[i])
			return -ENOMEM;
	}
	return 0;
}

static int crash_alloc(struct crash *c)
{
	c->pool = alloc_block(BLOCK_ORDER_MAX);
	c->image = alloc_block(BLOCK_ORDER_MAX);
	c->record = alloc_page(GFP_KERNEL | __GFP_ZERO);
	c->p2m_len = xen_start_info->nr_pages;
	/*
	 * Past 2 GiB of PFNs the view outgrows a buddy block: vmalloc'd, it is still
	 * one virtual range, which the purgatory reads through the held tables as it
	 * reads Linux's own virtually mapped P2M at an exec. __GFP_RETRY_MAYFAIL: a
	 * page cache full of a saved vmcore must not make the contiguous try fail.
	 */
	c->view = kvmalloc_array(c->p2m_len, sizeof(u64),
				 GFP_KERNEL | __GFP_RETRY_MAYFAIL);
	if (!c->pool || !c->image || !c->record || !c->view ||
	    crash_alloc_lists(c) || crash_alloc_rest(c)) {
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
	for (i = 0; c->lists && i < c->nr_lists + c->nr_dirs; i++)
		if (c->lists[i])
			__free_page(c->lists[i]);
	kvfree(c->lists);
	kvfree(c->view);
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
	/*
	 * A Linux crash kernel (PVKEXEC_RESERVE_LINUX): Xen resets VCPUs and the
	 * purgatory unregisters vcpu_info before any frame changes hands, so those
	 * frames (the old kernel's per-CPU data) stay holes, kept for the dump.
	 */
	for_each_online_cpu(cpu)
		if (!ret && !c->linux_crash)
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
	if (c->linux_crash) {
		u32 both = HANDOFF_XEN_VCPU_RESET |
			   HANDOFF_XEN_VCPU_INFO_REREGISTER;

		if ((xen_vcpu_features() & both) != both) {
			pr_err("crash reserve refused: a Linux crash kernel needs a Xen that resets VCPUs (XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister)\n");
			return -EOPNOTSUPP;
		}
	}
	if (pages % BLOCK_PAGES || pages < 2 * BLOCK_PAGES ||
	    pages > (u64)cur / 2) {
		pr_err("crash reserve refused: %llu frames (a multiple of %lu, at least %lu, at most half of the domain's %ld)\n",
		       pages, BLOCK_PAGES, 2 * BLOCK_PAGES, cur);
		return -EINVAL;
	}
	c->panic_cpu = (atomic_t *)lookup_name("panic_cpu");
	c->shared_info = (struct shared_info **)lookup_name("HYPERVISOR_shared_info");
	if (!c->panic_cpu || !c->shared_info) {
		pr_err("crash reserve refused: panic_cpu/HYPERVISOR_shared_info not found through kallsyms\n");
		return -ENOENT;
	}
	if (!current->mm || current->mm != current->active_mm) {
		pr_err("crash reserve refused: no process page tables to hold\n");
		return -EINVAL;
	}
	return cpus_check("crash reserve");
}

int ioctl_crash_reserve(struct pvkexec_crash_reserve __user *uarg)
{
	struct pvkexec_crash_reserve arg;
	struct crash *c;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	if (arg.present & ~(u64)PVKEXEC_RESERVE_LINUX) {
		kfree(c);
		pr_err("crash reserve refused: unknown flags %#llx\n", arg.present);
		return -EINVAL;
	}
	c->linux_crash = arg.present & PVKEXEC_RESERVE_LINUX;
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
	pr_info("crash: %lu frames set aside, view of %lu entries with %lu present, record mfn %#llx, %u VCPUs, P2M directory of %lu list pages in %lu directory pages%s\n",
		c->pages, c->p2m_len, c->present, arg.record_mfn, c->nr_cpus,
		c->nr_lists, c->nr_dirs,
		c->linux_crash ?
		" (a Linux crash kernel: vcpu_info frames left out)" :
		"");
	return 0;
}

/* A Linux crash image's pool frames past block 0 (PVKEXEC_RESERVE_LINUX). */
static u64 crash_extra_pool(const struct image *img)
{
	return img->pool_pages > BLOCK_PAGES ? img->pool_pages - BLOCK_PAGES : 0;
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
	if (c->linux_crash) {
		/* The image and the pool past block 0 follow the working pages. */
		u64 need = img->work_pages + img->nr_pages +
			   crash_extra_pool(img);

		if (need > c->nr_rest) {
			pr_err("crash load refused: %llu working pages, %lu image pages and %llu pool frames past the pool block need %llu set-aside frames past the two blocks, there are %lu\n",
			       img->work_pages, img->nr_pages,
			       crash_extra_pool(img), need, c->nr_rest);
			return -ENOSPC;
		}
	} else if (img->pool_pages > BLOCK_PAGES) {
		pr_err("crash load refused: the image needs a free pool of %llu frames, the reservation's pool block has %lu\n",
		       img->pool_pages, BLOCK_PAGES);
		return -ENOSPC;
	}
	if (!c->linux_crash && img->len > BLOCK_PAGES * PAGE_SIZE) {
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
	/*
	 * A Linux crash image (PVKEXEC_RESERVE_LINUX) is larger than a block: its
	 * pages and the pool past block 0 are the set-aside frames after the
	 * working pages (checked at load), the pool listed ascending.
	 */
	u64 extra = c->linux_crash ? crash_extra_pool(img) : 0;
	unsigned long base = img->work_pages, i;

	p->image_pages = kvmalloc_array(p->image_nr, sizeof(*p->image_pages),
					GFP_KERNEL);
	p->pool_pfns = kvmalloc_array(BLOCK_PAGES + extra, sizeof(u64),
				      GFP_KERNEL);
	if (!p->image_pages || !p->pool_pfns) {
		pr_err("crash load refused: out of memory to list the image and the pool\n");
		return -ENOMEM;
	}
	for (i = 0; i < p->image_nr; i++) {
		p->image_pages[i] = c->linux_crash ? pfn_to_page(c->rest[base + i]) :
					       c->image + i;
		copy_page(page_address(p->image_pages[i]),
			  page_address(img->pages[i]));
	}
	for (i = 0; i < BLOCK_PAGES; i++)
		p->pool_pfns[i] = page_to_pfn(c->pool) + i;
	for (i = 0; i < extra; i++)
		p->pool_pfns[BLOCK_PAGES + i] = c->rest[base + p->image_nr + i];
	p->pool_nr = BLOCK_PAGES + extra;
	if (extra)
		sort(p->pool_pfns, p->pool_nr, sizeof(u64), cmp_u64, NULL);
	return 0;
}

/* The handover exec prepares at the jump, prepared now in the set-aside frames. */
int crash_load(struct file *file, const struct image *img)
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

int ioctl_crash_unload(void)
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

void crash_info(struct pvkexec_info *info)
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
int test_corrupt_crash(void)
{
	const struct image_header *h;
	struct segment_desc d;
	u64 off;
	u32 k;
	u8 *img;

	/* A Linux crash image is not in the image block. */
	if (!crash || !crash->prep || crash->linux_crash)
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
