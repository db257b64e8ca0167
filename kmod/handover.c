// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: the end of a handover, past the point of no return. Exec's hook in
 * syscore shutdown (the last step of kernel_restart()) waits for every
 * backend to close and hands each frontend back as the toolstack created it;
 * then the other CPUs are sent onto the exec task's tables and into the
 * purgatory, every other page-table tree is unpinned and VCPU 0 jumps. The
 * crash path (panic.c) unpins with the same function; both enter the
 * purgatory through enter_purgatory() (pvkexec.h).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/mm.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/syscore_ops.h>
#include <xen/xen.h>
#include <xen/xen-ops.h>
#include <xen/xenbus.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/page.h>

#include "pvkexec.h"

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
void unpin_other_trees(struct exec_prep *p, unsigned long *flagged,
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
struct exec_prep *armed;

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

void exec_hook_register(void)
{
	register_syscore(&exec_syscore);
}

void exec_hook_unregister(void)
{
	unregister_syscore(&exec_syscore);
}
#else
static struct syscore_ops exec_syscore_ops = {
	.shutdown = exec_shutdown_hook,
};

void exec_hook_register(void)
{
	register_syscore_ops(&exec_syscore_ops);
}

void exec_hook_unregister(void)
{
	unregister_syscore_ops(&exec_syscore_ops);
}
#endif
