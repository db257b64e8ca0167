//! Reading the plan record and the handoff block from bytes, and the consistency each must
//! have before any of its numbers is used as a frame number or an address: every sum checked,
//! every range inside the domain. Shared by `pvkexec inspect`, the purgatory and the fuzzers.

use crate::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION, MAX_VCPUS};
use crate::image::{PlanRecord, PLAN_MAGIC};
use xenpv::Pod;

/// Reads a plain-data record from the start of `bytes`.
fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    T::read_from(bytes)
}

/// `start + len` must fit and lie within `end`.
fn within(start: u64, len: u64, end: u64) -> bool {
    start.checked_add(len).is_some_and(|e| e <= end)
}

impl PlanRecord {
    /// The record at the start of a plan segment's bytes, if it carries the magic.
    pub fn read(bytes: &[u8]) -> Option<PlanRecord> {
        read_pod::<PlanRecord>(bytes).filter(|r| r.magic == PLAN_MAGIC)
    }

    /// What the loader guarantees of every record it writes.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.nr_pages == 0 {
            return Err("plan record: no pages for the new kernel");
        }
        if self.nr_pages.checked_add(self.hidden_pages) != Some(self.domain_pages) {
            return Err("plan record: nr_pages + hidden_pages is not the domain's frames");
        }
        if self.flags & !crate::image::PLAN_FLAGS_KNOWN != 0 {
            return Err("plan record: unknown flags (an image for a newer purgatory)");
        }
        if let Some(a) = self.crash_aliases() {
            if a.count == 0 {
                return Err("plan record: aliases without a count");
            }
            let covered = self.p2m_pages.saturating_mul(512);
            if self.nr_pages.saturating_add(a.count) > covered {
                return Err("plan record: aliases past the P2M");
            }
            // The header area lies between the built PFNs and the trampoline page, and holds
            // the four list pages, the notes and at least one PT_LOAD.
            if self.trampoline_pfn != self.nr_pages - 1
                || a.first_pfn(self.nr_pages) < self.fill_pages
                || a.phdr_capacity() < 2
            {
                return Err("plan record: the ELF core header area does not fit");
            }
        }
        if self.old_p2m_len != 0 && self.old_p2m_len < self.domain_pages {
            return Err("plan record: more present frames than the old P2M has entries");
        }
        if self.grant_reserve > self.hidden_pages {
            return Err("plan record: the grant reserve exceeds the hidden frames");
        }
        if self.region_pages > self.fill_pages
            || self.fill_pages > self.trampoline_pfn
            || self.trampoline_pfn >= self.nr_pages
        {
            return Err("plan record: region, built PFNs and trampoline PFN out of order");
        }
        if !within(self.pt_pfn, self.nr_pt_frames, self.fill_pages) || self.nr_pt_frames == 0 {
            return Err("plan record: the page tables lie outside the built PFNs");
        }
        if !within(self.p2m_pfn, self.p2m_pages, self.fill_pages) {
            return Err("plan record: the P2M lies outside the built PFNs");
        }
        let region_end = (self.region_pages > 0 && self.virt_base.is_multiple_of(4096))
            .then(|| self.region_pages.checked_mul(4096))
            .flatten()
            .and_then(|bytes| self.virt_base.checked_add(bytes));
        let Some(region_end) = region_end else {
            return Err("plan record: the initial region does not fit the address space");
        };
        let in_region = |va: u64| va >= self.virt_base && va < region_end;
        if !in_region(self.entry) || !in_region(self.start_info_va) {
            return Err("plan record: entry or start_info outside the initial region");
        }
        if self.rsp <= self.virt_base || self.rsp > region_end {
            return Err("plan record: boot stack outside the initial region");
        }
        if !self.trampoline_va.is_multiple_of(4096) {
            return Err("plan record: trampoline VA not page aligned");
        }
        Ok(())
    }
}

impl Handoff {
    /// The block at the start of `bytes`, if its magic and version are this build's.
    pub fn read(bytes: &[u8]) -> Option<Handoff> {
        read_pod::<Handoff>(bytes)
            .filter(|h| h.magic == HANDOFF_MAGIC && h.version == HANDOFF_VERSION)
    }

    /// What the purgatory needs of the kernel side's numbers before it computes with them.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.nr_vcpus > MAX_VCPUS {
            return Err("handoff: more VCPUs than the purgatory parks");
        }
        if self.image_len < 64 || self.image_va.checked_add(self.image_len).is_none() {
            return Err("handoff: no image, or one that runs past the address space");
        }
        if (self.image_pfns_va == 0 && self.image_va < self.old_virt_base)
            || self.old_start_info_va < self.old_virt_base
        {
            return Err("handoff: the image or the old start_info lies below the old region");
        }
        if !self.image_va.is_multiple_of(4096) {
            return Err("handoff: the image is not page aligned");
        }
        if self.free_first_pfn.checked_add(self.free_pages).is_none() {
            return Err("handoff: the free pool runs past 2^64 frames");
        }
        self.check_pool_list()?;
        if !self.scratch_va.is_multiple_of(4096) || !self.old_virt_base.is_multiple_of(4096) {
            return Err("handoff: scratch VA or old region base not page aligned");
        }
        if !self.work_va.is_multiple_of(4096)
            || self.work_pages < crate::handoff::WORK_FIXED_PAGES
            || self
                .work_pages
                .checked_mul(4096)
                .and_then(|l| self.work_va.checked_add(l))
                .is_none()
            || self.work_pfns_va == 0
        {
            return Err("handoff: no working memory, or one not page aligned, too small for the stacks and batches, or past the address space");
        }
        Ok(())
    }

    /// Version 6's pool list excludes the v5 range: one of the two names the pool.
    fn check_pool_list(&self) -> Result<(), &'static str> {
        let listed = self.pool_pfns_va != 0;
        if listed && (self.free_first_pfn != 0 || self.free_pages != 0) {
            return Err("handoff: a free pool list (pool_pfns_va) and a free pool range (free_first_pfn, free_pages) both given");
        }
        if !listed && self.pool_pages != 0 {
            return Err("handoff: pool_pages without a pool list (pool_pfns_va 0)");
        }
        if listed
            && (!self.pool_pfns_va.is_multiple_of(8)
                || self
                    .pool_pages
                    .checked_mul(8)
                    .and_then(|l| self.pool_pfns_va.checked_add(l))
                    .is_none())
        {
            return Err("handoff: the pool list is unaligned or runs past the address space");
        }
        if self.image_pfns_va != 0
            && (!self.image_pfns_va.is_multiple_of(8)
                || self
                    .image_len
                    .div_ceil(4096)
                    .checked_mul(8)
                    .and_then(|l| self.image_pfns_va.checked_add(l))
                    .is_none())
        {
            return Err(
                "handoff: the image's frame list is unaligned or runs past the address space",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PlanRecord {
        PlanRecord {
            magic: PLAN_MAGIC,
            nr_pages: 0x4000,
            virt_base: 0xffff_ffff_8000_0000,
            region_pages: 0x80,
            entry: 0xffff_ffff_8000_1000,
            rsp: 0xffff_ffff_8008_0000,
            start_info_va: 0xffff_ffff_8004_f000,
            pt_pfn: 0x50,
            nr_pt_frames: 8,
            p2m_pfn: 0x20,
            p2m_pages: 0x20,
            trampoline_va: 0x4000_0000,
            trampoline_pfn: 0x3fff,
            mod_start: 0,
            mod_len: 0,
            fill_pages: 0x80,
            domain_pages: 0x4005,
            hidden_pages: 5,
            grant_reserve: 0,
            ..PlanRecord::zeroed()
        }
    }

    #[test]
    fn crash_aliases_fit_the_p2m_and_leave_room_for_the_header() {
        use crate::image::{elfcore_pages, CrashAliases, PLAN_FLAG_ALIASES};
        let with = |count, header_pages| PlanRecord {
            flags: PLAN_FLAG_ALIASES,
            p2m_pages: 64,
            _reserved: [CrashAliases {
                count,
                header_pages,
            }
            .word()],
            ..record()
        };
        let r = with(0x4000, elfcore_pages(0x4000));
        assert_eq!(r.check(), Ok(()));
        let a = r.crash_aliases().unwrap();
        assert_eq!(a.count, 0x4000);
        assert_eq!(
            a.first_pfn(r.nr_pages),
            r.nr_pages - 1 - elfcore_pages(0x4000)
        );
        assert!(a.phdr_capacity() >= 0x4000 + 4);
        assert_eq!(record().crash_aliases(), None);
        // No count, past the P2M, a header area into the built PFNs or with no PT_LOAD.
        for bad in [
            with(0, 40),
            with(64 * 512, 40),
            with(0x10, 0x3ff0),
            with(0x10, 7),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_header_area_grows_with_the_domain_up_to_elfs_limit() {
        use crate::image::{elfcore_pages, CrashAliases, ELFCORE_MAX_LOADS, ELFCORE_NOTE_PAGES};
        assert_eq!(ELFCORE_NOTE_PAGES, 3);
        // 512 MiB: capped by e_phnum, 3.5 MiB.
        assert_eq!(elfcore_pages(131_072), 4 + 3 + 897);
        assert_eq!(elfcore_pages(1 << 30), elfcore_pages(131_072));
        assert_eq!(elfcore_pages(1000), 4 + 3 + 14);
        for len in [1, 1000, 60_000, 131_072] {
            let a = CrashAliases {
                count: len,
                header_pages: elfcore_pages(len),
            };
            assert!(a.phdr_capacity() > (len + 4).min(ELFCORE_MAX_LOADS));
        }
    }

    #[test]
    fn a_consistent_record_passes_and_each_break_is_named() {
        assert_eq!(record().check(), Ok(()));
        let mut ballooned = record();
        ballooned.old_p2m_len = ballooned.domain_pages + 0x1000;
        assert_eq!(ballooned.check(), Ok(()));
        let reset = PlanRecord {
            flags: crate::image::PLAN_FLAG_VCPU_RESET,
            ..record()
        };
        assert_eq!(reset.check(), Ok(()));
        let cases: [fn(&mut PlanRecord); 10] = [
            // Found by the records fuzz target: region_pages * 4096 overflowed in the check.
            |r| r.region_pages = 1 << 60,
            |r| r.nr_pages = 0,
            |r| r.hidden_pages = u64::MAX,
            |r| r.grant_reserve = 6,
            |r| r.trampoline_pfn = r.nr_pages,
            |r| r.pt_pfn = u64::MAX - 2,
            |r| r.entry = 0,
            |r| r.rsp = r.virt_base,
            |r| r.old_p2m_len = r.domain_pages - 1,
            |r| r.flags = 1 << 2,
        ];
        for (i, break_it) in cases.iter().enumerate() {
            let mut r = record();
            break_it(&mut r);
            assert!(r.check().is_err(), "case {i}");
        }
    }

    #[test]
    fn header_digest_refuses_bad_lengths_and_counts() {
        use crate::image::{check_header_digest, HeaderDigestError, ImageParams};
        let mut image = [0u8; 4096];
        image[16] = 2; // nr_segments
        let sealed = |len: u64, bytes: &[u8]| ImageParams {
            table_len: len,
            header_digest: crate::digest::sha256(&bytes[..len as usize]),
            ..ImageParams::EMPTY
        };
        assert_eq!(check_header_digest(&image, &sealed(192, &image)), Ok(()));
        for len in [64, 100, 64 + 64 * 65] {
            let p = ImageParams {
                table_len: len,
                ..ImageParams::EMPTY
            };
            assert_eq!(
                check_header_digest(&image, &p),
                Err(HeaderDigestError::BadLength(len))
            );
        }
        // Past the image's end.
        let p = sealed(192, &image);
        assert_eq!(
            check_header_digest(&image[..128], &p),
            Err(HeaderDigestError::BadLength(192))
        );
        // The digest matches 256 bytes but the header says 2 segments (192 bytes).
        assert_eq!(
            check_header_digest(&image, &sealed(256, &image)),
            Err(HeaderDigestError::CountMismatch {
                nr_segments: 2,
                table_len: 256
            })
        );
        let mut other = image;
        other[100] = 1;
        assert!(matches!(
            check_header_digest(&other, &sealed(192, &image)),
            Err(HeaderDigestError::Mismatch(_))
        ));
    }

    fn block() -> Handoff {
        Handoff {
            magic: HANDOFF_MAGIC,
            version: HANDOFF_VERSION,
            flags: 0,
            image_va: 0xffff_c900_0010_0000,
            image_len: 3 * 4096 + 10,
            old_start_info_va: 0xffff_8880_0000_1000,
            old_virt_base: 0xffff_8880_0000_0000,
            free_first_pfn: 0,
            free_pages: 0,
            direct_map_va: 0xffff_8880_0000_0000,
            scratch_va: 0x4000_0000,
            nr_vcpus: 2,
            keep_store_port: 0,
            keep_console_port: 0,
            vcpu_info_va: 0,
            work_va: 0xffff_c900_0200_0000,
            work_pages: crate::handoff::WORK_FIXED_PAGES,
            work_pfns_va: 0xffff_8880_0000_3000,
            image_pfns_va: 0xffff_8880_0000_4000,
            pool_pfns_va: 0xffff_8880_0000_5000,
            pool_pages: 300,
        }
    }

    #[test]
    fn a_v6_block_names_its_pool_once_and_lists_that_fit() {
        assert_eq!(block().check(), Ok(()));
        // The v5 rules in a v6 block: the image in the old region, the pool a range.
        let v5 = Handoff {
            image_va: 0xffff_8880_0010_0000,
            image_pfns_va: 0,
            pool_pfns_va: 0,
            pool_pages: 0,
            free_first_pfn: 0x200,
            free_pages: 1024,
            ..block()
        };
        assert_eq!(v5.check(), Ok(()));
        let cases: [fn(&mut Handoff); 8] = [
            |h| h.free_pages = 5,
            |h| h.free_first_pfn = 5,
            |h| h.pool_pfns_va = 0,
            |h| h.pool_pfns_va += 4,
            |h| h.pool_pages = u64::MAX / 4,
            |h| h.image_pfns_va = u64::MAX - 8,
            |h| h.image_va += 8,
            // Without an image list the image must lie in the old region.
            |h| {
                h.image_pfns_va = 0;
                h.image_va = 0x10_0000;
            },
        ];
        for (i, break_it) in cases.iter().enumerate() {
            let mut h = block();
            break_it(&mut h);
            assert!(h.check().is_err(), "case {i}");
        }
        let bytes = block();
        assert_eq!(Handoff::read(xenpv::Pod::as_bytes(&bytes)), Some(block()));
    }

    #[test]
    fn records_read_only_with_their_magic() {
        let r = record();
        let bytes = r.as_bytes();
        assert_eq!(PlanRecord::read(bytes), Some(r));
        assert_eq!(PlanRecord::read(&bytes[1..]), None);
        assert_eq!(Handoff::read(bytes), None);
    }
}
