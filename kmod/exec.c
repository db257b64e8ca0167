// SPDX-License-Identifier: GPL-2.0
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
 *
 * This file: PVKEXEC_IOC_EXEC's checks and the preparation of a handover
 * (image, free pool, working memory, handoff block, purgatory mapping), which
 * a crash load makes too (crash.c). What runs once kernel_restart() is under
 * way is in handover.c.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/vmalloc.h>
#include <xen/xen.h>
#include <xen/interface/memory.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/page.h>

#include "pvkexec.h"

#define HANDOFF_MAGIC		0x46464f48584b5650ULL	/* "PVKXHOFF" */
#define L1_SPAN			(512UL * PAGE_SIZE)

/* Set only while PVKEXEC_IOC_EXEC maps the purgatory (under pvkexec_lock). */
static struct exec_prep *mapping_for;

struct page *alloc_block(unsigned int order)
{
	/*
	 * Reclaim and compact in earnest: after a large file was written
	 * (a saved vmcore), the page cache holds most of memory and a 4 MiB
	 * block is only found once it is compacted.
	 */
	struct page *page = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN |
					__GFP_RETRY_MAYFAIL, order);

	if (page)
		split_page(page, order);
	return page;
}

void free_block(struct page *page, unsigned int order)
{
	unsigned long i;

	if (!page)
		return;
	for (i = 0; i < (1UL << order); i++)
		__free_page(page + i);
}

void exec_prep_free(struct exec_prep *p)
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
int prep_image(struct exec_prep *p, const struct image *img,
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
int prep_work(struct exec_prep *p, const struct image *img,
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

void prep_handoff(struct exec_prep *p, const struct image *img)
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

int pvkexec_mmap(struct file *file, struct vm_area_struct *vma)
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

/* The purgatory segment at its base in the caller's process (pages inserted now). */
int map_purgatory(struct file *file, struct exec_prep *p,
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

int ioctl_exec(struct file *file)
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

/* Ascending u64s, for sort(). */
int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}
