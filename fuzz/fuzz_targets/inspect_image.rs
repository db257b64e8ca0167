//! Any bytes as a kexec image: `pvkexec inspect`'s reader and the purgatory's parsers (the
//! header digest check, `ImageView` with its zero-run table, a segment's contents as pieces,
//! the chunk table, a kernel side's walk to the purgatory) return a value or an error, never
//! panic; what inspect accepts as all-ok the purgatory's own parsers accept too, and every
//! segment's contents hash to their digest there as well.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvhandoff::digest::verify_pieces;
use pvhandoff::image::{
    check_header_digest, find_purgatory, ImageParams, ImageView, SEG_FLAG_PURGATORY_MAPPING,
};

fuzz_target!(|data: &[u8]| {
    let inspected = loader::image::inspect("fuzz", data);
    let view = ImageView::parse(data);
    let _ = find_purgatory(data);
    if let Ok(v) = &view {
        let _ = v.plan_record();
        for (i, s) in v.segments().enumerate() {
            let d = v.data(i);
            if s.kind == pvhandoff::SegmentKind::ChunkDigests as u32 {
                if let Ok(d) = d {
                    let _ = pvhandoff::chunks::ChunkTable::parse(d);
                }
            }
            if s.flags & SEG_FLAG_PURGATORY_MAPPING != 0 {
                let off = v.header.params_offset as usize;
                if let Some(p) = d
                    .ok()
                    .and_then(|d| d.get(off..))
                    .and_then(ImageParams::read)
                {
                    let _ = check_header_digest(data, &p);
                }
            }
        }
    }
    if let Ok((_, true)) = inspected {
        let v = view.expect("inspect passed an image ImageView refuses");
        for (i, s) in v.segments().enumerate() {
            if s.flags & SEG_FLAG_PURGATORY_MAPPING == 0 {
                let pieces = v.pieces(i, 0, u64::MAX).expect("a segment inside the image");
                assert!(
                    verify_pieces(i, &s, pieces).is_ok(),
                    "inspect passed segment {i}, the purgatory's reader does not"
                );
            }
        }
    }
});
