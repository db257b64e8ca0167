// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: the running domain as Xen and Linux show it. PVKEXEC_IOC_INFO (the
 * reservation, the grant table version, the VCPUs that are up, Xen's features
 * of pvkexec's patches); where each VCPU's vcpu_info is placed and the CPU to
 * VCPU numbering the purgatory needs (exec and crash load); kallsyms lookups.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/kprobes.h>
#include <linux/mm.h>
#include <linux/percpu.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <xen/xen.h>
#include <xen/xen-ops.h>
#include <xen/interface/grant_table.h>
#include <xen/interface/memory.h>
#include <xen/interface/vcpu.h>
#include <xen/interface/version.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/page.h>

#include "pvkexec.h"

long reservation(unsigned int op)
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

/* XENFEAT bits of pvkexec's Xen patches (not in Linux's headers). */
#define PVKEXEC_XENFEAT_VCPU_INFO_REREGISTER	21
#define PVKEXEC_XENFEAT_VCPU_RESET		22

/*
 * Xen's features of pvkexec's patches as HANDOFF_XEN_* bits. Asked of Xen
 * here rather than through xen_feature(): the decision is the CLI's and the
 * purgatory's, and this reads the same submap the purgatory reads. A failed
 * query means none (stock Xen's path).
 */
u32 xen_vcpu_features(void)
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

int ioctl_info(struct pvkexec_info __user *uarg)
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

/* kallsyms_lookup_name is not exported: a kprobe finds it. */
unsigned long lookup_name(const char *name)
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
int prep_vcpu_info(struct vcpu_info_rec *rec, struct vcpu_info **vis,
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
int cpus_check(const char *what)
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
