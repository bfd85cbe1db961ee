//! `on_disk` vector storage: f32 rows in an anonymous (already unlinked) file, written with
//! `pwrite` and read through a read-only shared mapping.
//!
//! Writes go through the page cache without touching the mapping, so rows that are only
//! written never count towards the process's resident set; rows that are read (rescoring a
//! few candidates) are faulted in on demand and may be reclaimed by the kernel at any time.
//! After a bulk read (index build, quantizer training) [`VectorFile::release`] drops the
//! mapping and maps again, returning the faulted pages to the page cache.
//!
//! The file is a cache, not a source of truth: it is unlinked at creation (nothing to clean
//! up after a crash) and rebuilt from the checkpoint and WAL when the collection opens.
//!
//! Safety: the mapping is only read through `&self` while no write can happen (writers hold
//! `&mut self`, i.e. the store's write lock); rows are appended, the file only grows, and a
//! remap happens only under `&mut self`.

use memmap2::{Advice, Mmap, MmapOptions};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Smallest file growth step, in rows.
const MIN_GROW_ROWS: usize = 1024;

#[derive(Debug)]
pub struct VectorFile {
    file: File,
    map: Option<Mmap>,
    dim: usize,
    /// File length in rows (the mapping covers all of them).
    cap_rows: usize,
}

impl VectorFile {
    /// A new empty file in `dir` (the system temp dir if `None`).
    pub fn create(dim: usize, dir: Option<&Path>) -> io::Result<VectorFile> {
        assert!(dim > 0, "vector dimension must be positive");
        let file = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                tempfile::tempfile_in(d)?
            }
            None => tempfile::tempfile()?,
        };
        Ok(VectorFile {
            file,
            map: None,
            dim,
            cap_rows: 0,
        })
    }

    /// All rows of the file (zeros where never written).
    pub fn data(&self) -> &[f32] {
        match &self.map {
            // SAFETY: the mapping is page aligned (so f32 aligned), `cap_rows * dim` floats
            // long, read-only, and no write to the file can happen while `&self` is held.
            Some(m) => unsafe {
                std::slice::from_raw_parts(m.as_ptr() as *const f32, self.cap_rows * self.dim)
            },
            None => &[],
        }
    }

    /// Write row `off` (growing the file and the mapping as needed).
    pub fn write(&mut self, off: u32, v: &[f32]) -> io::Result<()> {
        assert_eq!(v.len(), self.dim, "row length");
        let o = off as usize;
        if o >= self.cap_rows {
            let rows = (o + 1).max(self.cap_rows * 2).max(MIN_GROW_ROWS);
            self.file.set_len((rows * self.dim * 4) as u64)?;
            self.cap_rows = rows;
            self.remap()?;
        }
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        self.file.write_all_at(&bytes, (o * self.dim * 4) as u64)
    }

    /// Read row `off` with `pread` (no page is mapped into the process: a few random rows
    /// per query, e.g. rescoring, would otherwise bring whole fault-around windows in).
    pub fn read_row(&self, off: u32, out: &mut Vec<f32>) -> io::Result<()> {
        let mut bytes = vec![0u8; self.dim * 4];
        self.file
            .read_exact_at(&mut bytes, (off as usize * self.dim * 4) as u64)?;
        out.clear();
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
        );
        Ok(())
    }

    /// Drop the pages a bulk read faulted into this mapping (they stay in the page cache).
    pub fn release(&mut self) {
        let _ = self.remap();
    }

    fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        if self.cap_rows == 0 {
            return Ok(());
        }
        // SAFETY: the file is private to this process (unlinked) and only grows; see the
        // module comment for why reads never race writes.
        let map = unsafe { MmapOptions::new().map(&self.file)? };
        let _ = map.advise(Advice::Random);
        self.map = Some(map);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_across_growth_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = VectorFile::create(3, Some(dir.path())).unwrap();
        assert!(f.data().is_empty());
        for i in 0..5000u32 {
            f.write(i, &[i as f32, -(i as f32), 0.5]).unwrap();
        }
        f.release();
        let d = f.data();
        assert!(d.len() >= 5000 * 3);
        for i in [0usize, 1, 1023, 1024, 4999] {
            assert_eq!(&d[i * 3..i * 3 + 3], &[i as f32, -(i as f32), 0.5]);
        }
        // the file is unlinked: nothing is left in the directory
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
