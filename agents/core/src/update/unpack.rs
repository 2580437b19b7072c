//! Unpacking an update artifact while it downloads: the zstd stream is decompressed
//! into a sparse file in the staging directory, so that systemd-sysupdate copies plain
//! files into the other slot (trixie's systemd-import copies zstd sources as they are,
//! and decompressing xz there took ~18 s of a ~19 s install; docs/images.md).
//!
//! The stream is not trusted yet while it is unpacked: its sha256 is checked by the
//! caller once the last byte has arrived, and the file is removed when it does not
//! match. Until then it is bounded: the unpacked size is capped, and a stream that
//! ends inside a frame is refused. A root slot is mostly zeros (640 MiB for ~50 MiB
//! of erofs): all-zero blocks are left as holes, written as zeros by sysupdate only.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tokio::sync::mpsc;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// Holes are made at this granularity (the page size, and ext4's block).
const BLOCK: usize = 4096;
/// Decompressed bytes handed to the file per write (a multiple of [`BLOCK`]).
const OUT_BUFFER: usize = 64 * BLOCK;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("not a complete zstd stream: {0}")]
    Corrupt(String),
    #[error("the unpacking thread failed: {0}")]
    Thread(String),
    #[error("writing {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// A file written front to back, whose all-zero blocks are skipped (left as holes in a
/// new file) rather than written.
struct SparseFile<'a> {
    file: File,
    path: &'a Path,
    /// Bytes accepted so far (the file's length once finished).
    len: u64,
    limit: u64,
    /// Bytes not yet written: less than one block between calls to [`Self::write`].
    tail: Vec<u8>,
}

impl<'a> SparseFile<'a> {
    fn create(path: &'a Path, limit: u64) -> Result<Self, UnpackError> {
        let file = File::create(path).map_err(|source| UnpackError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            file,
            path,
            len: 0,
            limit,
            tail: Vec::with_capacity(BLOCK),
        })
    }

    fn io(&self, source: io::Error) -> UnpackError {
        UnpackError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), UnpackError> {
        self.len += data.len() as u64;
        if self.len > self.limit {
            return Err(UnpackError::TooLarge(self.limit));
        }
        // The file offset of `data`'s first byte, and of the blocks written from it.
        let mut at = self.len - data.len() as u64 - self.tail.len() as u64;
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < BLOCK {
                return Ok(());
            }
            self.write_blocks(&self.tail, at)?;
            self.tail.clear();
            at += BLOCK as u64;
        }
        let whole = data.len() - data.len() % BLOCK;
        self.write_blocks(&data[..whole], at)?;
        self.tail.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Writes the runs of non-zero blocks of `data` (whole blocks) at `at`.
    fn write_blocks(&self, data: &[u8], at: u64) -> Result<(), UnpackError> {
        let mut run_start = None;
        for (i, block) in data.chunks(BLOCK).enumerate() {
            match (is_zero(block), run_start) {
                (false, None) => run_start = Some(i),
                (true, Some(start)) => {
                    self.write_at(&data[start * BLOCK..i * BLOCK], at + (start * BLOCK) as u64)?;
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            self.write_at(&data[start * BLOCK..], at + (start * BLOCK) as u64)?;
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], at: u64) -> Result<(), UnpackError> {
        self.file.write_all_at(data, at).map_err(|e| self.io(e))
    }

    /// Writes the last partial block and sets the length (a trailing hole included).
    fn finish(mut self) -> Result<u64, UnpackError> {
        let tail = std::mem::take(&mut self.tail);
        if !is_zero(&tail) {
            self.write_at(&tail, self.len - tail.len() as u64)?;
        }
        self.file.set_len(self.len).map_err(|e| self.io(e))?;
        Ok(self.len)
    }
}

/// No early exit: the OR of every byte vectorizes, and most blocks are all zero or
/// not zero from their first bytes alike.
fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// Decompresses the zstd stream arriving on `chunks` into a new sparse file at `path`,
/// at most `limit` bytes. Returns the unpacked length once the sender is dropped and
/// the stream ended on a frame boundary. Blocking: run it with `spawn_blocking`.
pub fn unpack_zstd<T: AsRef<[u8]>>(
    mut chunks: mpsc::Receiver<T>,
    path: &Path,
    limit: u64,
) -> Result<u64, UnpackError> {
    let corrupt = |e: io::Error| UnpackError::Corrupt(e.to_string());
    let mut decoder = Decoder::new().map_err(corrupt)?;
    let mut file = SparseFile::create(path, limit)?;
    let mut out = vec![0u8; OUT_BUFFER];
    // zstd's hint: 0 when the last frame is complete and flushed.
    let mut frame_open = true;
    let mut received = false;
    while let Some(chunk) = chunks.blocking_recv() {
        let chunk = chunk.as_ref();
        received |= !chunk.is_empty();
        let mut input = InBuffer::around(chunk);
        loop {
            let consumed = input.pos();
            let mut output = OutBuffer::around(&mut out[..]);
            let hint = decoder.run(&mut input, &mut output).map_err(corrupt)?;
            let written = output.pos();
            // A call that neither read nor wrote says nothing of the frame: after a
            // frame's end its hint is the next frame's header size.
            if written > 0 || input.pos() > consumed {
                frame_open = hint != 0;
            }
            file.write(&out[..written])?;
            // Done with this chunk once it is consumed and the output was not full
            // (a full buffer may leave decompressed bytes inside zstd).
            if input.pos() == chunk.len() && written < out.len() {
                break;
            }
        }
    }
    if !received {
        return Err(UnpackError::Corrupt("empty".into()));
    }
    if frame_open {
        return Err(UnpackError::Corrupt("it ends inside a frame".into()));
    }
    file.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    struct Unpacked {
        result: Result<u64, UnpackError>,
        body: Vec<u8>,
        /// Bytes the file system allocated for it.
        allocated: u64,
    }

    /// Unpacks `compressed`, sent in pieces of `chunk` bytes.
    fn unpack(compressed: &[u8], chunk: usize, limit: u64) -> Unpacked {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.raw");
        let (tx, rx) = mpsc::channel(compressed.len() / chunk + 2);
        for piece in compressed.chunks(chunk) {
            tx.try_send(piece.to_vec()).unwrap();
        }
        drop(tx);
        let result = unpack_zstd(rx, &path, limit);
        Unpacked {
            result,
            body: std::fs::read(&path).unwrap_or_default(),
            allocated: std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512),
        }
    }

    /// Data, zeros (whole blocks and a partial run), data, and a trailing hole.
    fn sample() -> Vec<u8> {
        let mut raw: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
        raw.resize(raw.len() + 3 * 1024 * 1024 + 100, 0);
        raw.extend((0..5_000u32).map(|i| (i % 13) as u8 + 1));
        raw.resize(raw.len() + 2 * 1024 * 1024, 0);
        raw
    }

    #[test]
    fn a_stream_unpacks_byte_for_byte_with_its_zeros_as_holes() {
        let raw = sample();
        let compressed = zstd::bulk::compress(&raw, 3).unwrap();
        for chunk in [1, 7, 4096, 65_536, compressed.len()] {
            let out = unpack(&compressed, chunk, 1 << 30);
            assert_eq!(out.result.unwrap(), raw.len() as u64);
            assert!(out.body == raw, "chunks of {chunk}: the bytes differ");
            // ~15 KB of data in ~5 MiB: the zeros are holes (where the file system
            // has them; tmpfs and ext4 do).
            assert!(
                out.allocated < 1024 * 1024,
                "{} bytes allocated",
                out.allocated
            );
        }
    }

    /// A slot image is a whole number of MiB: its frame ends exactly where the output
    /// buffer fills, and the call after that (no input left, nothing to flush) returns
    /// the next frame's header size as its hint, not 0.
    #[test]
    fn a_frame_that_ends_with_a_full_output_buffer_is_complete() {
        let raw: Vec<u8> = (0..2 * OUT_BUFFER as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let compressed = zstd::bulk::compress(&raw, 3).unwrap();
        for chunk in [4096, compressed.len()] {
            let out = unpack(&compressed, chunk, 1 << 30);
            assert_eq!(out.result.unwrap(), raw.len() as u64, "chunks of {chunk}");
            assert!(out.body == raw);
        }
    }

    #[test]
    fn concatenated_frames_unpack_as_one_file() {
        let mut compressed = zstd::bulk::compress(b"first frame, ", 3).unwrap();
        compressed.extend(zstd::bulk::compress(b"second frame", 19).unwrap());
        let out = unpack(&compressed, 5, 1 << 20);
        assert_eq!(out.result.unwrap(), 25);
        assert_eq!(out.body, b"first frame, second frame");
    }

    #[test]
    fn more_than_the_limit_is_refused_however_well_it_compresses() {
        let compressed = zstd::bulk::compress(&vec![0u8; 8 * 1024 * 1024], 19).unwrap();
        assert!(compressed.len() < 2048);
        let result = unpack(&compressed, 512, 1024 * 1024).result;
        assert!(
            matches!(result, Err(UnpackError::TooLarge(1_048_576))),
            "{result:?}"
        );
    }

    #[test]
    fn a_truncated_stream_an_empty_one_and_garbage_are_refused() {
        let compressed = zstd::bulk::compress(&sample(), 3).unwrap();
        let result = unpack(&compressed[..compressed.len() - 10], 4096, 1 << 30).result;
        assert!(
            matches!(&result, Err(UnpackError::Corrupt(e)) if e.contains("inside a frame")),
            "{result:?}"
        );
        let result = unpack(b"", 1, 1 << 30).result;
        assert!(
            matches!(&result, Err(UnpackError::Corrupt(e)) if e == "empty"),
            "{result:?}"
        );
        let result = unpack(b"MZ\x90\0 a PE file, not zstd", 8, 1 << 30).result;
        assert!(matches!(result, Err(UnpackError::Corrupt(_))), "{result:?}");
    }
}
