//! The redo log under group commit: every commit's writes, appended in commit order to a file of
//! their own, so that making a group of commits durable is one `fdatasync` of the bytes appended
//! since the last one, instead of a redb durable commit that writes every B-tree page those commits
//! touched (random CID keys put each record on a leaf of its own) and holds redb's writer lock
//! while it does.
//!
//! Entry: `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload[len]`, the CRC over `len`, `seq`
//! and the payload. Sequence numbers rise by one per entry and never restart, so after a
//! checkpoint the file is overwritten from its start, and whatever older entries lie beyond the new
//! ones are recognised by their lower numbers. The file is grown in zero-filled steps and then
//! overwritten in place, so an `fdatasync` flushes data, not the file's size.
//!
//! Reading back ([`scan`]) stops at the first entry that is torn (bad length or CRC) or out of
//! sequence: a crash keeps a prefix of the commit sequence. Entries written after a torn one may
//! still be whole on disk (writes not yet synced reach it in any order), so whoever replays the
//! log then empties it ([`RedoLog::clear`]) before appending: no such entry can ever line up
//! behind a new one.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

const HEADER: usize = 16;
/// No single commit's writes come near this; a larger length is a torn or foreign entry.
pub const MAX_ENTRY_BYTES: usize = 256 << 20;
/// The file grows in steps of this many zero bytes, ahead of the appends.
const GROW_STEP: u64 = 1 << 20;

/// The log file, its write position and the sequence number of its last entry.
#[derive(Debug)]
pub struct RedoLog {
    file: File,
    /// Where the next entry goes.
    end: u64,
    /// The file's length (zero-filled beyond `end`).
    len: u64,
    /// The sequence number of the last entry appended, or of the last checkpoint if none since.
    last: u64,
}

/// One entry read back.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl RedoLog {
    /// Opens (or creates) the log at `path` and reads back the entries after `applied` (the
    /// sequence number the database's last checkpoint holds). The log is positioned to append after
    /// them; the caller applies them, checkpoints, and calls [`RedoLog::restart`].
    pub fn open(path: &Path, applied: u64) -> std::io::Result<(Self, Vec<Entry>)> {
        let mut file = File::options().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        let (entries, end) = scan(&mut file, applied)?;
        let last = entries.last().map_or(applied, |e| e.seq);
        Ok((Self { file, end, len, last }, entries))
    }

    /// The sequence number of the last entry appended (or checkpointed).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Bytes appended since the last restart.
    pub fn appended_bytes(&self) -> u64 {
        self.end
    }

    /// Appends one entry with the next sequence number (written, not yet synced); returns it.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<u64> {
        if payload.len() > MAX_ENTRY_BYTES {
            return Err(std::io::Error::new(ErrorKind::InvalidInput, "a commit too large for the redo log"));
        }
        let seq = self.last + 1;
        let mut entry = Vec::with_capacity(HEADER + payload.len());
        entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        entry.extend_from_slice(&crc(payload.len() as u32, seq, payload).to_le_bytes());
        entry.extend_from_slice(&seq.to_le_bytes());
        entry.extend_from_slice(payload);
        let new_end = self.end + entry.len() as u64;
        if new_end > self.len {
            // Zeros written ahead (not a hole, whose blocks would be allocated at each append), so
            // the appends that follow change data blocks only and a sync writes no metadata.
            let grown = new_end.div_ceil(GROW_STEP) * GROW_STEP;
            let zeros = vec![0u8; (grown - self.len) as usize];
            write_at(&mut self.file, &zeros, self.len)?;
            self.len = grown;
        }
        write_at(&mut self.file, &entry, self.end)?;
        self.end = new_end;
        self.last = seq;
        Ok(seq)
    }

    /// A handle to sync the file with while appends go on.
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// After a checkpoint that holds every entry so far: the next entry is written at the start.
    /// Older entries beyond it are left in place; their lower sequence numbers mark them stale.
    pub fn restart(&mut self) {
        self.end = 0;
    }

    /// Empties the file, durably: after a replay, so nothing read or left unread comes back.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        self.file.set_len(0)?;
        self.file.sync_all()?;
        (self.end, self.len) = (0, 0);
        Ok(())
    }
}

fn crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads entries from the start of `file`, numbered `applied + 1`, `applied + 2`, … in order; the
/// scan stops at a torn entry, zeros, or any other number (a stale entry left by a restart, or the
/// log of a crash right after a checkpoint, whose entries the checkpoint holds). Returns the entries
/// and the offset just after the last one.
pub fn scan(file: &mut File, applied: u64) -> std::io::Result<(Vec<Entry>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    let mut next = applied + 1;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (len, sum) = (word(0), word(4));
        let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len as usize) else { break };
        if seq == 0 || len as usize > MAX_ENTRY_BYTES || crc(len, seq, payload) != sum {
            break;
        }
        if seq != next {
            break;
        }
        at += HEADER + len as usize;
        entries.push(Entry { seq, payload: payload.to_vec() });
        next += 1;
    }
    Ok((entries, at as u64))
}

/// Writes `bytes` at `offset`: one positioned write where the platform has it (an append is a
/// system call per commit), a seek and a write elsewhere.
fn write_at(file: &mut File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn entries_come_back_in_order_and_after_the_checkpoint_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, entries) = RedoLog::open(&path, 0).expect("open");
        assert!(entries.is_empty());
        for n in 0..5u8 {
            log.append(&[n; 100]).expect("append");
        }
        drop(log);
        let (log, entries) = RedoLog::open(&path, 0).expect("reopen");
        assert_eq!(seqs(&entries), [1, 2, 3, 4, 5]);
        assert_eq!(entries[2].payload, [2; 100]);
        assert_eq!(log.last(), 5);
        // A crash after a checkpoint of all five, before the restart: nothing to replay.
        let (log, entries) = RedoLog::open(&path, 5).expect("reopen after a checkpoint");
        assert!(entries.is_empty());
        assert_eq!((log.last(), log.appended_bytes()), (5, 0));
    }

    #[test]
    fn stale_entries_after_a_restart_are_not_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, _) = RedoLog::open(&path, 0).expect("open");
        for _ in 0..6 {
            log.append(&[1; 200]).expect("append");
        }
        // A checkpoint holds 1..=6; two new entries overwrite the start of the file.
        log.restart();
        log.append(&[2; 50]).expect("append");
        log.append(&[3; 50]).expect("append");
        drop(log);
        let (mut log, entries) = RedoLog::open(&path, 6).expect("reopen");
        assert_eq!(seqs(&entries), [7, 8]);
        // Appends continue after the new entries, not after the stale ones.
        log.append(&[4; 10]).expect("append");
        drop(log);
        let (_, entries) = RedoLog::open(&path, 6).expect("reopen");
        assert_eq!(seqs(&entries), [7, 8, 9]);
        // Cleared after a replay, the file holds nothing, stale or new.
        let (mut log, _) = RedoLog::open(&path, 6).expect("reopen");
        log.clear().expect("clear");
        drop(log);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
    }

    #[test]
    fn a_torn_entry_ends_the_log_and_the_next_append_overwrites_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, _) = RedoLog::open(&path, 0).expect("open");
        for _ in 0..3 {
            log.append(&[7; 64]).expect("append");
        }
        drop(log);
        // Flip a byte in the second entry's payload.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER + 64 + HEADER + 10] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let (mut log, entries) = RedoLog::open(&path, 0).expect("reopen");
        assert_eq!(seqs(&entries), [1]);
        assert_eq!(log.append(&[8; 8]).expect("append"), 2);
        drop(log);
        let (_, entries) = RedoLog::open(&path, 0).expect("reopen");
        assert_eq!(seqs(&entries), [1, 2]);
        assert_eq!(entries[1].payload, [8; 8]);
    }

    #[test]
    fn a_gap_in_the_numbers_ends_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, _) = RedoLog::open(&path, 0).expect("open");
        log.append(b"one").expect("append");
        // As if entry 2 had been lost and 3 written after it.
        log.last += 1;
        log.append(b"three").expect("append");
        drop(log);
        let (_, entries) = RedoLog::open(&path, 0).expect("reopen");
        assert_eq!(seqs(&entries), [1]);
    }

    #[test]
    fn garbage_lengths_do_not_allocate_or_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut bytes = vec![0xff; 64];
        bytes[8..16].copy_from_slice(&1u64.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let (mut log, entries) = RedoLog::open(&path, 0).expect("open");
        assert!(entries.is_empty());
        assert_eq!(log.append(b"x").expect("append"), 1);
    }
}
