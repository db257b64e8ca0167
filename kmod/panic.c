// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: the crash path (docs/kernel-module.md, "Crash (kdump) load and
 * panic path"). Arming and disarming at crash load and unload; at a panic,
 * smp_ops.stop_other_cpus sends NMIs, each other CPU saves its registers in
 * the crash record and waits on the held mm's tables, and the panic notifier
 * fills the record, waits for them, unpins the other trees, writes the
 * digest and sends every CPU into the purgatory. The set-aside frames and the
 * crash load are in crash.c.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/sha2.h>
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/mm.h>
#include <linux/notifier.h>
#include <linux/panic_notifier.h>
#include <linux/sched.h>
#include <linux/smp.h>
#if __has_include(<linux/vmcore_info.h>)
#include <linux/vmcore_info.h>	/* 6.9 and later */
#else
#include <linux/crash_core.h>
#endif
#include <xen/xen.h>
#include <xen/xen-ops.h>
#include <xen/interface/vcpu.h>
#include <xen/interface/version.h>
#include <asm/kexec.h>
#include <asm/msr.h>
#include <asm/nmi.h>
#include <asm/pvclock.h>
#include <asm/smp.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/page.h>

#include "pvkexec.h"

#define CRASH_RECORD_MAGIC	0x48535243584b5650ULL	/* "PVKXCRSH" */
#define CRASH_RECORD_VERSION	2
#define CRASH_CPU_SAVED		1
#define CRASH_CPU_STOPPED	2
#define CRASH_WAIT_US		1000000
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
	u64 p2m_dir;		/* MFN of the first directory page */
	u64 p2m_dir_pages;	/* directory pages in the chain */
	u64 p2m_lists;		/* list pages the directory names */
	struct crash_cpu cpus[MAX_VCPUS];
	u64 panic_time_ns;
	u64 reserved[3];
	u8 sha256[SHA256_DIGEST_SIZE];
};
static_assert(offsetof(struct crash_record, p2m_dir) == 64);
static_assert(offsetof(struct crash_record, p2m_dir_pages) == 72);
static_assert(offsetof(struct crash_record, p2m_lists) == 80);
static_assert(offsetof(struct crash_record, cpus) == 88);
static_assert(offsetof(struct crash_record, panic_time_ns) == 1944);
static_assert(offsetof(struct crash_record, sha256) == 1976);
static_assert(sizeof(struct crash_record) == 2008);
static_assert(CRASH_DIR_LISTS == CRASH_DIR_NEXT &&
	      CRASH_DIR_NEXT + 1 == P2M_PER_PAGE);

static struct crash *crash_armed;	/* what the panic path reads */
static atomic_t crash_stopping;		/* the NMIs went out */
static atomic_t crash_entered;		/* the panic notifier ran */
static unsigned int crash_cpu;		/* the panicking CPU */
static int crash_arrived[MAX_VCPUS];	/* 1: saved, on the held tables; < 0: errno */
static int crash_go;
static void (*crash_orig_stop)(int wait);

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

static u64 page_mfn(struct page *page)
{
	return pfn_to_mfn(page_to_pfn(page));
}

/*
 * The MFN of every page of Linux's P2M (xen_p2m_addr) a dump covers, 512 to a
 * list page, and the directory: 511 list pages to a directory page, whose last
 * slot names the next one (0 in the last). MFNs are taken now, at the panic.
 */
static int crash_p2m_lists(struct crash *c, struct crash_record *r,
			   const struct shared_info *s)
{
	unsigned long n = DIV_ROUND_UP(crash_dump_len(s), P2M_PER_PAGE), i;
	struct page **dirs = c->lists + c->nr_lists;
	unsigned int level;

	if (DIV_ROUND_UP(n, P2M_PER_PAGE) > c->nr_lists) {
		pr_emerg("crash: the P2M grew to %lu entries, past the %lu list pages set aside\n",
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
	for (i = 0; i < c->nr_lists; i++) {
		u64 *dir = page_address(dirs[i / CRASH_DIR_LISTS]);

		dir[i % CRASH_DIR_LISTS] = page_mfn(c->lists[i]);
	}
	for (i = 0; i + 1 < c->nr_dirs; i++) {
		u64 *dir = page_address(dirs[i]);

		dir[CRASH_DIR_NEXT] = page_mfn(dirs[i + 1]);
	}
	r->p2m_dir = page_mfn(dirs[0]);
	r->p2m_dir_pages = c->nr_dirs;
	r->p2m_lists = c->nr_lists;
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

int crash_arm(struct crash *c)
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

/* A Linux crash kernel is armed (what /sys/kernel/kexec_crash_loaded says). */
bool crash_linux_armed(void)
{
	struct crash *c = READ_ONCE(crash_armed);

	return c && c->linux_crash;
}

void crash_disarm(void)
{
	if (!crash_armed)
		return;
	smp_ops.stop_other_cpus = crash_orig_stop;
	WRITE_ONCE(crash_armed, NULL);
	if (atomic_notifier_chain_unregister(&panic_notifier_list, &crash_nb))
		pr_err("crash: the panic notifier was not registered\n");
	unregister_nmi_handler(NMI_LOCAL, "pvkexec");
}

static void park_cpu(void *unused)
{
	unsigned int ms;

	local_irq_disable();
	for (ms = 0; ms < PARK_MAX_MS && !atomic_read(&crash_stopping); ms++)
		mdelay(1);
}

/* Tests: CPU 1 spins with interrupts off, where only an NMI reaches it. */
int test_park_cpu1(void)
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
