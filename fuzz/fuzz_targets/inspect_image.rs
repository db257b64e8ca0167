//! Any bytes as a kexec image: `pvkexec inspect`'s reader and the purgatory's parsers (the
//! header digest check, `ImageView`, the chunk table) return a value or an error, never panic;
//! what inspect accepts as all-ok the purgatory's own parsers accept too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvhandoff::image::{check_header_digest, ImageParams, ImageView};

fuzz_target!(|data: &[u8]| {
    let inspected = loader::image::inspect("fuzz", data);
    let view = ImageView::parse(data);
    if let Ok(v) = &view {
        for (i, s) in v.segments().enumerate() {
            let d = v.data(i);
            if s.kind == pvhandoff::SegmentKind::ChunkDigests as u32 {
                if let Ok(d) = d {
                    let _ = pvhandoff::chunks::ChunkTable::parse(d);
                }
            }
            if s.flags & pvhandoff::image::SEG_FLAG_PURGATORY_MAPPING != 0 {
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
        assert!(view.is_ok(), "inspect passed an image ImageView refuses");
    }
});
