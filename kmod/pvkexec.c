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
 *   PVKEXEC_IOC_EXEC    refused (-EOPNOTSUPP): the handover is not done yet
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/cpumask.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

#include <xen/xen.h>
#include <xen/xen-ops.h>
#include <xen/interface/grant_table.h>
#include <xen/interface/memory.h>
#include <xen/interface/vcpu.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/hypervisor.h>

#include "pvkexec_uapi.h"

/* The image file format this module checks (docs/kexec-image.md). */
#define IMAGE_MAGIC		"PVKXIMG"	/* and a NUL: 8 bytes */
#define IMAGE_VERSION		2
#define IMAGE_HEADER_SIZE	64
#define IMAGE_SEGMENT_DESC_SIZE	64
#define IMAGE_MAX_SEGMENTS	64
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

static int ioctl_load(const struct pvkexec_load __user *uarg)
{
	struct pvkexec_load arg;
	struct image_header h;
	const u8 __user *src;
	struct image *img;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.flags || arg.reserved)
		return -EINVAL;
	if (arg.len < sizeof(h) || arg.len > IMAGE_MAX_BYTES) {
		pr_err("load refused: %llu bytes (%zu to %llu allowed)\n",
		       arg.len, sizeof(h), IMAGE_MAX_BYTES);
		return -EFBIG;
	}
	src = u64_to_user_ptr(arg.image);
	if (copy_from_user(&h, src, sizeof(h)))
		return -EFAULT;
	ret = header_check(&h, arg.len);
	if (ret)
		return ret;
	ret = memory_check(DIV_ROUND_UP(arg.len, PAGE_SIZE));
	if (ret)
		return ret;

	img = kzalloc(sizeof(*img), GFP_KERNEL);
	if (!img)
		return -ENOMEM;
	img->len = arg.len;
	img->nr_pages = DIV_ROUND_UP(arg.len, PAGE_SIZE);
	img->nr_segments = h.nr_segments;
	img->pages = kvcalloc(img->nr_pages, sizeof(*img->pages), GFP_KERNEL);
	if (!img->pages) {
		kfree(img);
		return -ENOMEM;
	}
	ret = image_copy_in(img, src);
	if (ret) {
		image_free(img);
		return ret;
	}
	image_free(loaded);
	loaded = img;
	pr_info("image loaded: %llu bytes, %u segments, %lu pages\n",
		img->len, img->nr_segments, img->nr_pages);
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

static int ioctl_info(struct pvkexec_info __user *uarg)
{
	struct pvkexec_info info = {
		.abi_version = PVKEXEC_ABI_VERSION,
		.flags = PVKEXEC_INFO_PV,
		.start_info_pages = xen_start_info->nr_pages,
		.possible_cpus = num_possible_cpus(),
		.online_cpus = num_online_cpus(),
		.vcpus_up = vcpus_up(),
		.gnttab_version = gnttab_version(),
		.linux_version = LINUX_VERSION_CODE,
	};
	long cur = reservation(XENMEM_current_reservation);
	long max = reservation(XENMEM_maximum_reservation);

	if (cur < 0 || max < 0) {
		pr_err("XENMEM_current/maximum_reservation failed: %ld, %ld\n",
		       cur, max);
		return -EIO;
	}
	info.current_pages = cur;
	info.maximum_pages = max;
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
	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
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
		ret = ioctl_load(uarg);
		break;
	case PVKEXEC_IOC_UNLOAD:
		ret = ioctl_unload();
		break;
	case PVKEXEC_IOC_EXEC:
		pr_err("exec refused: the handover (device shutdown, VCPUs to the purgatory, unpinning, jump) is not implemented in this module yet\n");
		ret = -EOPNOTSUPP;
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
	pr_info("ready: /dev/pvkexec (%s domain)\n",
		xen_start_info->flags & SIF_INITDOMAIN ? "initial" : "PV");
	return 0;
}

static void __exit pvkexec_exit(void)
{
	misc_deregister(&pvkexec_dev);
	image_free(loaded);
	loaded = NULL;
}

module_init(pvkexec_init);
module_exit(pvkexec_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kexec for Xen PV guests: image store and handover");
MODULE_VERSION("0.1");
