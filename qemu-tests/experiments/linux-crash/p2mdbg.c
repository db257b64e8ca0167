// SPDX-License-Identifier: GPL-2.0
/*
 * Diagnostic for docs/linux-crash-kernel.md (not built by the harness): for each
 * PFN in pfns=, prints its P2M entry and M2P back-translation, what
 * ioremap_cache() wrote into the PTE, and Xen's answer to the same frame mapped
 * WB (PAGE_KERNEL_IO), UC- and UC through update_va_mapping.
 * make -C <linux-headers-6.1.0-N-amd64> M=$PWD CC=gcc-12 modules
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/io.h>
#include <xen/xen.h>
#include <asm/memtype.h>
#include <asm/xen/page.h>
#include <asm/xen/hypervisor.h>
#include <asm/xen/hypercall.h>

static unsigned long pfns[16];
static int nr;
module_param_array(pfns, ulong, &nr, 0444);

static void probe(unsigned long pfn)
{
	unsigned long entry = __pfn_to_mfn(pfn);
	unsigned long mfn = entry & ~(FOREIGN_FRAME_BIT | IDENTITY_FRAME_BIT);
	pte_t io = pfn_pte(pfn, PAGE_KERNEL_IO);
	pte_t ucm = pfn_pte(pfn, __pgprot(pgprot_val(PAGE_KERNEL_IO) |
			    cachemode2protval(_PAGE_CACHE_MODE_UC_MINUS)));
	pte_t uc = pfn_pte(pfn, PAGE_KERNEL_IO_NOCACHE);
	void __iomem *va = ioremap_cache(PFN_PHYS(pfn), PAGE_SIZE);
	unsigned int level;
	pte_t *ptep;
	int rc_io, rc_ucm, rc_uc;

	pr_info("p2mdbg: pfn %#lx -> %#lx (m2p %#lx), pat_enabled %d\n", pfn,
		entry, mfn_to_pfn_no_overrides(mfn), pat_enabled());
	if (!va) {
		pr_info("p2mdbg: ioremap_cache(pfn %#lx) failed\n", pfn);
		return;
	}
	ptep = lookup_address((unsigned long)va, &level);
	pr_info("p2mdbg: ioremap_cache pfn %#lx: pte as ioremap left it (machine) %#llx\n",
		pfn, ptep ? (unsigned long long)ptep->pte : 0ULL);
	rc_ucm = HYPERVISOR_update_va_mapping((unsigned long)va, ucm, UVMF_INVLPG);
	rc_uc = HYPERVISOR_update_va_mapping((unsigned long)va, uc, UVMF_INVLPG);
	rc_io = HYPERVISOR_update_va_mapping((unsigned long)va, io, UVMF_INVLPG);
	pr_info("p2mdbg: pfn %#lx mapped by update_va_mapping: WB %d (pte %#llx), UC- %d, UC %d; first word %#lx\n",
		pfn, rc_io, (unsigned long long)io.pte, rc_ucm, rc_uc,
		rc_io ? 0UL : *(volatile unsigned long *)va);
	iounmap(va);
}

static int __init p2mdbg_init(void)
{
	int i;

	pr_info("p2mdbg: nr_pages %lu xen_p2m_size %lu xen_max_p2m_pfn %lu\n",
		xen_start_info->nr_pages, xen_p2m_size, xen_max_p2m_pfn);
	for (i = 0; i < nr; i++)
		probe(pfns[i]);
	return 0;
}
module_init(p2mdbg_init);
MODULE_LICENSE("GPL");
