//! `wal`: a segmented, CRC-framed write-ahead log with torn-tail recovery and group commit.
//!
//! On disk: a directory of segment files named `{first_seq:020}.wal`. Each record is
//! `[len: u32 LE][crc32c(seq_le ++ payload): u32 LE][seq: u64 LE][payload: len bytes]`.
//! Sequence numbers are dense and increasing across segments.
//!
//! Recovery (`Wal::open`) reads every segment in order. In the **last** segment, the first
//! short or bad-CRC record marks a torn tail: the file is truncated there (a crash during an
//! append that was never acknowledged). A bad record in an earlier segment is corruption of
//! acknowledged data and fails the open instead of silently dropping history.
//!
//! Durability: `append` writes to the OS (survives process kill); `flush_upto(seq)` makes
//! everything up to `seq` durable with one `fdatasync`, shared by every concurrent waiter
//! (group commit). See docs/storage-format.md for the crash analysis.

use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Header bytes per record: len (4) + crc (4) + seq (8).
pub const HEADER_LEN: usize = 16;
/// Largest payload accepted (and believed during recovery): 512 MiB.
pub const MAX_RECORD_BYTES: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal corrupted in {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("wal record of {0} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge(usize),
}

pub type Result<T> = std::result::Result<T, WalError>;

/// A record read back from the log: (sequence number, payload).
pub type Entry = (u64, Vec<u8>);

#[derive(Debug, Clone)]
struct SegmentInfo {
    first_seq: u64,
    path: PathBuf,
}

struct SyncState {
    /// Handle of the segment currently appended to.
    file: File,
}

/// Shared flush coordinator: lets callers wait for durability without holding the append lock.
pub struct Flusher {
    state: Mutex<SyncState>,
    /// Highest seq written to the OS.
    written: AtomicU64,
    /// Highest seq known durable.
    synced: AtomicU64,
}

impl Flusher {
    /// Make every record up to `seq` durable. Concurrent callers share one fdatasync.
    pub fn flush_upto(&self, seq: u64) -> Result<()> {
        if self.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let st = self.state.lock();
        if self.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        st.file.sync_data()?;
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }
}

pub struct Wal {
    dir: PathBuf,
    segment_capacity: u64,
    segments: Vec<SegmentInfo>,
    file: File,
    file_len: u64,
    next_seq: u64,
    flusher: Arc<Flusher>,
}

fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Encode one record.
pub fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc(seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

enum Decoded {
    Record {
        seq: u64,
        payload: Vec<u8>,
        next: usize,
    },
    /// Not enough bytes or bad checksum: a torn or corrupt record starts here.
    Bad(String),
    End,
}

fn decode_at(buf: &[u8], pos: usize) -> Decoded {
    if pos == buf.len() {
        return Decoded::End;
    }
    if buf.len() - pos < HEADER_LEN {
        return Decoded::Bad("short header".into());
    }
    let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    let sum = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(buf[pos + 8..pos + 16].try_into().expect("8 bytes"));
    if len > MAX_RECORD_BYTES {
        return Decoded::Bad(format!("implausible length {len}"));
    }
    let start = pos + HEADER_LEN;
    if buf.len() - start < len {
        return Decoded::Bad("short payload".into());
    }
    let payload = &buf[start..start + len];
    if crc(seq, payload) != sum {
        return Decoded::Bad("checksum mismatch".into());
    }
    Decoded::Record {
        seq,
        payload: payload.to_vec(),
        next: start + len,
    }
}

impl Wal {
    /// Open (or create) the log in `dir`, recovering from a torn tail. Returns the log and
    /// every intact record in order.
    pub fn open(dir: &Path, segment_capacity: u64) -> Result<(Wal, Vec<Entry>)> {
        fs::create_dir_all(dir)?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut records = Vec::new();
        let mut segments = Vec::new();
        let mut expected: Option<u64> = None;
        let n = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = seg_path(dir, first);
            let mut buf = Vec::new();
            File::open(&path)?.read_to_end(&mut buf)?;
            let mut pos = 0;
            loop {
                match decode_at(&buf, pos) {
                    Decoded::End => break,
                    Decoded::Record { seq, payload, next } => {
                        if let Some(e) = expected {
                            if seq != e {
                                return Err(WalError::Corrupt {
                                    path,
                                    offset: pos as u64,
                                    reason: format!("expected seq {e}, found {seq}"),
                                });
                            }
                        }
                        expected = Some(seq + 1);
                        records.push((seq, payload));
                        pos = next;
                    }
                    Decoded::Bad(reason) => {
                        if i + 1 < n {
                            return Err(WalError::Corrupt {
                                path,
                                offset: pos as u64,
                                reason,
                            });
                        }
                        // torn tail of the last segment: cut it off durably
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(pos as u64)?;
                        f.sync_all()?;
                        break;
                    }
                }
            }
            if expected.is_none() {
                expected = Some(first);
            }
            segments.push(SegmentInfo {
                first_seq: first,
                path,
            });
        }
        let next_seq = expected.unwrap_or(1).max(1);
        let (file, file_len) = match segments.last() {
            Some(s) => {
                let mut f = OpenOptions::new().read(true).write(true).open(&s.path)?;
                let len = f.seek(SeekFrom::End(0))?;
                (f, len)
            }
            None => {
                let path = seg_path(dir, next_seq);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                sync_dir(dir)?;
                segments.push(SegmentInfo {
                    first_seq: next_seq,
                    path,
                });
                (f, 0)
            }
        };
        let last = next_seq - 1;
        let flusher = Arc::new(Flusher {
            state: Mutex::new(SyncState {
                file: file.try_clone()?,
            }),
            written: AtomicU64::new(last),
            synced: AtomicU64::new(last),
        });
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                segment_capacity,
                segments,
                file,
                file_len,
                next_seq,
                flusher,
            },
            records,
        ))
    }

    /// Sequence number the next append will get.
    /// Create an empty log in `dir` (which must not hold one) whose first record will be
    /// `first_seq` (a log restored beside a checkpoint of `first_seq - 1`).
    pub fn create_empty(dir: &Path, first_seq: u64) -> Result<()> {
        fs::create_dir_all(dir)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(seg_path(dir, first_seq.max(1)))?
            .sync_all()?;
        sync_dir(dir)
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn flusher(&self) -> Arc<Flusher> {
        self.flusher.clone()
    }

    /// Append one record; returns its sequence number. Written to the OS, not yet durable.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::TooLarge(payload.len()));
        }
        if self.file_len > 0
            && self.file_len + (HEADER_LEN + payload.len()) as u64 > self.segment_capacity
        {
            self.roll()?;
        }
        let seq = self.next_seq;
        let rec = encode_record(seq, payload);
        if let Err(e) = self.file.write_all(&rec) {
            // leave no partial record behind for this process's later appends
            let _ = self.file.set_len(self.file_len);
            let _ = self.file.seek(SeekFrom::Start(self.file_len));
            return Err(e.into());
        }
        self.file_len += rec.len() as u64;
        self.next_seq += 1;
        self.flusher.written.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Start a new segment. The old one is made durable first.
    fn roll(&mut self) -> Result<()> {
        let mut st = self.flusher.state.lock();
        self.file.sync_data()?;
        self.flusher
            .synced
            .fetch_max(self.next_seq - 1, Ordering::AcqRel);
        let path = seg_path(&self.dir, self.next_seq);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        st.file = f.try_clone()?;
        self.file = f;
        self.file_len = 0;
        self.segments.push(SegmentInfo {
            first_seq: self.next_seq,
            path,
        });
        Ok(())
    }

    /// Make everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        self.flusher.flush_upto(self.next_seq - 1)
    }

    /// Drop whole segments whose records are all below `seq` (they are covered by a
    /// checkpoint). The current segment is never dropped.
    pub fn truncate_before(&mut self, seq: u64) -> Result<()> {
        if self.drop_oldest(seq, 1)? {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Delete the oldest segment while more than `min_segments` remain and all its records
    /// are below `seq`. Returns whether any was deleted (the caller syncs the directory).
    fn drop_oldest(&mut self, seq: u64, min_segments: usize) -> Result<bool> {
        let mut removed = false;
        while self.segments.len() > min_segments.max(1) && self.segments[1].first_seq <= seq {
            let s = self.segments.remove(0);
            fs::remove_file(&s.path)?;
            removed = true;
        }
        Ok(removed)
    }

    /// Drop segments covered by a checkpoint at `covered`, but keep the newest `keep_ops`
    /// records (history for WAL-delta transfers) within at most `max_closed` closed
    /// segments. The current segment is never dropped.
    pub fn truncate_retaining(
        &mut self,
        covered: u64,
        keep_ops: u64,
        max_closed: usize,
    ) -> Result<()> {
        let keep_from = self.next_seq.saturating_sub(keep_ops).min(covered + 1);
        let history = self.drop_oldest(keep_from, 1)?;
        let bound = self.drop_oldest(covered + 1, max_closed + 1)?;
        if history || bound {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Records with seq >= `from` still held in the log (for WAL-delta transfer and tests).
    pub fn read_from(&self, from: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for s in &self.segments {
            let mut buf = Vec::new();
            File::open(&s.path)?.read_to_end(&mut buf)?;
            let mut pos = 0;
            while let Decoded::Record { seq, payload, next } = decode_at(&buf, pos) {
                if seq >= from {
                    out.push((seq, payload));
                }
                pos = next;
            }
        }
        Ok(out)
    }

    /// The log's directory was moved (with the directory holding it): later segments and
    /// reads use `dir`. Open files stay valid across a rename.
    pub fn relocate(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
        for s in &mut self.segments {
            s.path = seg_path(dir, s.first_seq);
        }
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn payloads(n: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..rng.random_range(0..300))
                    .map(|_| rng.random())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn append_reopen_roundtrip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let ps = payloads(200, 1);
        {
            let (mut w, recs) = Wal::open(dir.path(), 4096).unwrap();
            assert!(recs.is_empty());
            for (i, p) in ps.iter().enumerate() {
                assert_eq!(w.append(p).unwrap(), i as u64 + 1);
            }
            w.flush().unwrap();
            assert!(w.segment_count() > 3);
        }
        let (w, recs) = Wal::open(dir.path(), 4096).unwrap();
        assert_eq!(recs.len(), 200);
        for (i, (seq, p)) in recs.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(p, &ps[i]);
        }
        assert_eq!(w.next_seq(), 201);
    }

    /// Cut the last segment at every byte position (and flip bytes): recovery keeps exactly
    /// the intact prefix and the log stays appendable.
    #[test]
    fn torn_tail_is_truncated_at_every_offset() {
        let ps = payloads(6, 2);
        let src = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(src.path(), 1 << 20).unwrap();
            for p in &ps {
                w.append(p).unwrap();
            }
            w.flush().unwrap();
        }
        let seg = seg_path(src.path(), 1);
        let full = fs::read(&seg).unwrap();
        let mut bounds = vec![0usize];
        for p in &ps {
            bounds.push(bounds.last().unwrap() + HEADER_LEN + p.len());
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for cut in 0..=full.len() {
            for flip in [false, true] {
                let d = tempfile::tempdir().unwrap();
                let mut bytes = full[..cut].to_vec();
                if flip && cut > 0 {
                    let i = rng.random_range(0..cut);
                    bytes[i] ^= 0x5a;
                }
                fs::write(seg_path(d.path(), 1), &bytes).unwrap();
                let (mut w, recs) = Wal::open(d.path(), 1 << 20).unwrap();
                let intact = bounds.iter().filter(|&&b| b <= cut).count() - 1;
                if flip {
                    assert!(recs.len() <= intact, "cut {cut}");
                } else {
                    assert_eq!(recs.len(), intact, "cut {cut}");
                }
                for (i, (_, p)) in recs.iter().enumerate() {
                    assert_eq!(p, &ps[i]);
                }
                let seq = w.append(b"after").unwrap();
                assert_eq!(seq, recs.len() as u64 + 1);
                drop(w);
                let (_, again) = Wal::open(d.path(), 1 << 20).unwrap();
                assert_eq!(again.len(), recs.len() + 1);
            }
        }
    }

    #[test]
    fn corruption_in_an_earlier_segment_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(dir.path(), 256).unwrap();
            for p in payloads(50, 4) {
                w.append(&p).unwrap();
            }
        }
        let first = seg_path(dir.path(), 1);
        let mut b = fs::read(&first).unwrap();
        b[HEADER_LEN + 1] ^= 0xff;
        fs::write(&first, b).unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 256),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncate_before_drops_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(dir.path(), 512).unwrap();
        for p in payloads(100, 5) {
            w.append(&p).unwrap();
        }
        let before = w.segment_count();
        w.truncate_before(60).unwrap();
        assert!(w.segment_count() < before);
        let rest = w.read_from(0).unwrap();
        assert!(rest.first().unwrap().0 <= 60);
        assert_eq!(rest.last().unwrap().0, 100);
        drop(w);
        let (w, recs) = Wal::open(dir.path(), 512).unwrap();
        assert_eq!(recs.last().unwrap().0, 100);
        assert_eq!(w.next_seq(), 101);
    }

    /// After a checkpoint the newest `keep_ops` records stay (WAL-delta history), but never
    /// more than `max_closed` closed segments; records above the checkpoint always stay.
    #[test]
    fn truncate_retaining_keeps_recent_history_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(dir.path(), 512).unwrap();
        for p in payloads(100, 5) {
            w.append(&p).unwrap();
        }
        let all = w.segment_count();
        w.truncate_retaining(100, 30, 1000).unwrap();
        let first = w.read_from(0).unwrap().first().unwrap().0;
        assert!(first <= 71, "newest 30 records kept, first is {first}");
        assert!(w.segment_count() < all);
        w.truncate_retaining(100, 30, 1).unwrap();
        assert!(w.segment_count() <= 2);
        // never drops records the checkpoint does not cover
        let dir2 = tempfile::tempdir().unwrap();
        let (mut w2, _) = Wal::open(dir2.path(), 512).unwrap();
        for p in payloads(100, 5) {
            w2.append(&p).unwrap();
        }
        w2.truncate_retaining(40, 0, 0).unwrap();
        assert!(w2.read_from(0).unwrap().first().unwrap().0 <= 41);
    }

    #[test]
    fn group_commit_flushes_concurrent_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = Wal::open(dir.path(), 1 << 20).unwrap();
        let w = Arc::new(Mutex::new(w));
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let (seq, fl) = {
                            let mut g = w.lock();
                            (
                                g.append(format!("{t}-{i}").as_bytes()).unwrap(),
                                g.flusher(),
                            )
                        };
                        fl.flush_upto(seq).unwrap();
                        assert!(fl.synced() >= seq);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(w.lock().next_seq(), 401);
    }
}
