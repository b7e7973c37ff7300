//! Outlier-rejection entry points (`nvptx64-nvidia-cuda` only; docs/algorithm.md §4.11):
//! thin shims over [`crate::patch::reject`], the functions the CPU backend runs, with the
//! argument structs of [`super::reject_args`].

use super::reject_args::{RejectBinsArgs, RejectMaskArgs, RejectScanArgs};
use super::thread;
use crate::patch::reject::{hit_words, rejected_bin_count, row_outliers, CoreUnknowns};

/// The tested pixels of each window row beyond the threshold ([`row_outliers`] of the row's
/// χ²_pix terms, which `pixel_rows` left in `pixels`), as a hit mask, and the row's tested
/// pixels with weight. Patches with a non-zero status are skipped (their outputs keep the
/// zeros of their allocation); a row the function refuses marks its patch failed.
///
/// # Launch
/// [`RejectScanArgs::shape`]: one thread per `(patch, window row)`, `thread = patch ·
/// max_rows + r`; threads beyond the batch or the patch's window return.
///
/// # Safety
/// All pointers valid for the documented sizes (`hits` `npatch · max_rows · words` u32,
/// `weighted` `npatch · max_rows`); `pixels` written by `pixel_rows` for the same batch.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn reject_scan(args: RejectScanArgs) {
    let RejectScanArgs {
        batch,
        max_rows,
        pad,
        stamps,
        ccd,
        pixels,
        pixels_len,
        threshold,
        words,
        hits,
        weighted,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            stamps.stamps,
            stamps.corners,
            ccd.weight,
            pixels,
            hits,
            weighted
        )
    };
    let index = thread::global_index();
    let (p, r) = (index / max_rows.max(1), index % max_rows.max(1));
    // SAFETY: p < npatch is checked before any descriptor or status is read; the thread alone
    // writes row r of patch p's hit mask and count; the window, CCD and stamp reads stay in
    // the buffers (checked against their lengths or guaranteed by the descriptors).
    unsafe {
        if p >= batch.npatch || batch.status.add(p).read() != 0 {
            return;
        }
        let d = batch.descs.add(p).read();
        let height = (d.row_max - d.row_min).max(0) as usize;
        if r >= height {
            return;
        }
        let width = (d.col_max - d.col_min).max(0) as usize;
        let row_start = d.row_min as usize + r;
        if d.pixel_offset as usize + d.npix() > pixels_len
            || hit_words(width) > words
            || d.col_min < 0
            || d.col_max as usize > ccd.ncol
            || row_start >= ccd.nrow
        {
            batch.status.add(p).write(crate::Status::BadShape as u32);
            return;
        }
        let view = stamps.patch_view(&d);
        let shape = d.shape(batch.nwavetot);
        let chi2 =
            core::slice::from_raw_parts(pixels.add(d.pixel_offset as usize + r * width), width);
        let weight = core::slice::from_raw_parts(
            ccd.weight.add(row_start * ccd.ncol + d.col_min as usize),
            width,
        );
        let out = core::slice::from_raw_parts_mut(hits.add((p * max_rows + r) * words), words);
        let core = CoreUnknowns {
            s_core: d.s_core as usize,
            nspp: d.nspp as usize,
            pad,
            keep: d.keep as usize,
        };
        match row_outliers(
            &view,
            &shape,
            d.col_min as i32,
            d.col_max as i32,
            core,
            r,
            chi2,
            weight,
            threshold,
            out,
        ) {
            Ok(n) => weighted.add(p * max_rows + r).write(n),
            Err(code) => batch.status.add(p).write(code as u32),
        }
    }
}

/// Sets the weights of the listed pixels to 0 (indices beyond the CCD are ignored).
///
/// # Launch
/// [`RejectMaskArgs::shape`]: one thread per pixel; threads with `i >= n` return.
///
/// # Safety
/// `pixels` valid for `n` reads, `weight` for `npix` writes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn reject_mask(args: RejectMaskArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(args.pixels, args.weight) };
    let i = thread::global_index();
    if i >= args.n {
        return;
    }
    // SAFETY: i < n; the index is checked against npix before the write (several threads may
    // write the same 0 to one pixel).
    unsafe {
        let p = args.pixels.add(i).read() as usize;
        if p < args.npix {
            args.weight.add(p).write(0.0);
        }
    }
}

/// The rejected pixels that carry at least `min_fraction` of each core bin's PSF weight in
/// its patch's window ([`rejected_bin_count`]).
///
/// # Launch
/// [`RejectBinsArgs::shape`]: one thread per `(patch, core spectrum c, core bin j)`,
/// `thread = (patch · nspp_max + c) · nwavestep + j`; threads beyond the patch's core return.
///
/// # Safety
/// All pointers valid for the documented sizes; `offsets` ascending and at most the length
/// of `pixels`; the descriptors' stamps inside the frame's table.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn reject_bins(args: RejectBinsArgs) {
    let RejectBinsArgs {
        descs,
        npatch,
        nspp_max,
        nwavestep,
        pad,
        stamps,
        ncol,
        offsets,
        pixels,
        min_fraction,
        counts,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            descs,
            stamps.stamps,
            stamps.corners,
            offsets,
            pixels,
            counts
        )
    };
    let index = thread::global_index();
    let per_patch = (nspp_max * nwavestep).max(1);
    let (p, cj) = (index / per_patch, index % per_patch);
    let (c, j) = (cj / nwavestep.max(1), cj % nwavestep.max(1));
    if p >= npatch {
        return;
    }
    // SAFETY: p < npatch; the patch's pixel range and stamps are the caller's guarantee; the
    // thread alone writes its count.
    unsafe {
        let d = descs.add(p).read();
        if c >= d.nspp as usize || j >= d.keep as usize {
            return;
        }
        let (lo, hi) = (
            offsets.add(p).read() as usize,
            offsets.add(p + 1).read() as usize,
        );
        let list = core::slice::from_raw_parts(pixels.add(lo), hi.saturating_sub(lo));
        let view = stamps.patch_view(&d);
        let n = rejected_bin_count(
            &view,
            (d.row_min as i32, d.row_max as i32),
            d.col_min as i32,
            d.col_max as i32,
            ncol,
            d.s_core as usize + c,
            pad + j,
            list,
            min_fraction,
        );
        counts.add(index).write(n);
    }
}
