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
 *   PVKEXEC_IOC_EXEC    hands the domain to the image's purgatory (exec.c
 *                       says what is done and what is not)
 *   PVKEXEC_IOC_CRASH_* the crash kernel (crash.c, panic.c)
 *
 * This file: the device and its ioctls, the module's init and exit, and the
 * loaded image (the load's checks, the copy, unload).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/sha2.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <xen/xen.h>
#include <asm/xen/hypervisor.h>

#include "pvkexec.h"

/* The handoff block this module writes (docs/kexec-image.md): frame lists. */
#define HANDOFF_VERSION		6
/* The purgatory's working memory (handoff v5 on): stacks, batches, a frame bitmap. */
#define WORK_PAGES_MAX		65536UL
/* Larger than any image a PV domain this module can run in needs. */
#define IMAGE_MAX_BYTES		(2ULL << 30)

static DEFINE_MUTEX(pvkexec_lock);
struct image *loaded;	/* under pvkexec_lock */

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
 * The image is copied in now; its working memory and free pool are taken at
 * exec, once the domain's services have stopped. So the image alone must fit
 * in half of what the kernel can still give without swapping (the domain must
 * keep running until exec), and the whole in half of the domain's RAM (what
 * exec can ever get).
 */
static int memory_check(unsigned long image_pages, unsigned long exec_pages)
{
	unsigned long ram = totalram_pages();
	long avail = si_mem_available();

	if (avail < 0 || image_pages > (unsigned long)avail / 2) {
		pr_err("load refused: the image needs %lu pages, more than half of the %ld available\n",
		       image_pages, avail);
		return -ENOMEM;
	}
	if (image_pages + exec_pages > ram / 2) {
		pr_err("load refused: the image (%lu pages) and what exec takes (%lu pages) are more than half of the domain's %lu pages of RAM\n",
		       image_pages, exec_pages, ram);
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
	if (!ret)
		ret = memory_check(DIV_ROUND_UP(arg->len, PAGE_SIZE),
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

static bool fault_injection;
module_param(fault_injection, bool, 0444);
MODULE_PARM_DESC(fault_injection,
		 "tests only: allow the PVKEXEC_IOC_TEST_* ioctls (corrupt the crash image, park CPU 1)");

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
	ret = kexec_flags_register();
	if (ret)
		return ret;
	ret = misc_register(&pvkexec_dev);
	if (ret) {
		pr_err("cannot register /dev/pvkexec: %d\n", ret);
		kexec_flags_unregister();
		return ret;
	}
	exec_hook_register();
	pr_info("ready: /dev/pvkexec (%s domain)\n",
		xen_start_info->flags & SIF_INITDOMAIN ? "initial" : "PV");
	return 0;
}

static void __exit pvkexec_exit(void)
{
	kexec_flags_unregister();
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
