//! An encrypted, random-access local file: how staged content is kept on
//! disk. Reads and writes at any offset work as on a plain file; on disk
//! there is a header (magic, the file's salt) and then fixed-size sealed
//! blocks ([`crate::crypto::local`]). A hole, or a block past the end of the
//! disk file, reads as zeros; a block that does not authenticate is an error,
//! never data. The file's length is in its last block, so it survives a crash.

use super::LocalKey;
use crate::crypto::local::{BlockCipher, BLOCK, SALT_LEN, SEALED_BLOCK};
use crate::sealed::PlainSource;
use std::io::{Error, ErrorKind, Result};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"SFLF1\0\0\0";
const HEADER: u64 = 32;
const B: u64 = BLOCK as u64;

pub struct EncryptedFile {
    file: std::fs::File,
    cipher: BlockCipher,
}

fn block_at(index: u64) -> u64 {
    HEADER + index * SEALED_BLOCK as u64
}

fn corrupt(index: u64) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("local staged block {index} does not authenticate (the file was changed on disk)"),
    )
}

impl EncryptedFile {
    /// A new, empty file at `path` (mode 0600, which must not exist).
    pub fn create(path: &Path, key: &LocalKey) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let mut salt = [0u8; SALT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..8 + SALT_LEN].copy_from_slice(&salt);
        file.write_all_at(&header, 0)?;
        Ok(EncryptedFile {
            file,
            cipher: key.secret().file_cipher(&salt),
        })
    }

    /// An existing file (recovery), read-only.
    pub fn open(path: &Path, key: &LocalKey) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "not a sealfs staging file",
            ));
        }
        let salt: [u8; SALT_LEN] = header[8..8 + SALT_LEN].try_into().expect("16 bytes");
        Ok(EncryptedFile {
            file,
            cipher: key.secret().file_cipher(&salt),
        })
    }

    pub fn try_clone(&self) -> Result<Self> {
        Ok(EncryptedFile {
            file: self.file.try_clone()?,
            cipher: self.cipher.clone(),
        })
    }

    /// The plaintext length, from the last block on disk.
    pub fn len(&self) -> Result<u64> {
        let physical = self.file.metadata()?.len();
        let blocks = physical.saturating_sub(HEADER) / SEALED_BLOCK as u64;
        if blocks == 0 {
            return Ok(0);
        }
        let last = blocks - 1;
        match self.read_block(last)? {
            Some((_, used)) => Ok(last * B + used as u64),
            None => Err(corrupt(last)),
        }
    }

    /// Block `index`: its data and `used`, or `None` for a hole.
    #[allow(clippy::type_complexity)]
    fn read_block(&self, index: u64) -> Result<Option<(Zeroizing<Vec<u8>>, u32)>> {
        let sealed = self.read_sealed(index, 1)?;
        self.open_block(index, &sealed)
    }

    /// The sealed bytes of `count` blocks from `first`, in one read (fewer
    /// at the end of the disk file).
    fn read_sealed(&self, first: u64, count: u64) -> Result<Vec<u8>> {
        let mut sealed = vec![0u8; count as usize * SEALED_BLOCK];
        let mut got = 0;
        while got < sealed.len() {
            match self
                .file
                .read_at(&mut sealed[got..], block_at(first) + got as u64)?
            {
                0 => break,
                n => got += n,
            }
        }
        sealed.truncate(got);
        Ok(sealed)
    }

    /// Block `index` from its sealed bytes: `None` for a hole or a block
    /// past the end (no bytes, or only zeros).
    fn open_block(&self, index: u64, sealed: &[u8]) -> Result<Option<(Zeroizing<Vec<u8>>, u32)>> {
        if sealed.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        match self.cipher.open(index, sealed) {
            Some(b) => Ok(Some(b)),
            None => Err(corrupt(index)),
        }
    }

    fn block_data(&self, index: u64) -> Result<Zeroizing<Vec<u8>>> {
        Ok(match self.read_block(index)? {
            Some((data, _)) => data,
            None => Zeroizing::new(vec![0u8; BLOCK]),
        })
    }

    fn write_block(&self, index: u64, data: &[u8], used: u64) -> Result<()> {
        let sealed = self.cipher.seal(index, data, used as u32);
        self.file.write_all_at(&sealed, block_at(index))
    }

    /// Reads exactly `buf.len()` bytes at `offset` (the caller keeps within
    /// the length).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        // One read for all the blocks (an upload reads parts of megabytes).
        let first = offset / B;
        let count = (offset + buf.len() as u64 - 1) / B + 1 - first;
        let sealed = self.read_sealed(first, count)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let (index, within) = (at / B, (at % B) as usize);
            let n = (BLOCK - within).min(buf.len() - done);
            let from = ((index - first) as usize * SEALED_BLOCK).min(sealed.len());
            let to = (from + SEALED_BLOCK).min(sealed.len());
            match self.open_block(index, &sealed[from..to])? {
                Some((data, _)) => buf[done..done + n].copy_from_slice(&data[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset` into a file of `size` bytes (its length
    /// before the write). Whole blocks are sealed as they are; partly
    /// written ones are read, changed and sealed again.
    pub fn write_at(&self, data: &[u8], offset: u64, size: u64) -> Result<()> {
        let end = offset + data.len() as u64;
        let new_size = size.max(end);
        // Whole blocks in a row are sealed into one buffer and written
        // with one call (a 1 MiB write is 64 blocks).
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / B, (at % B) as usize);
            let n = (BLOCK - within).min(data.len() - done);
            let used = (new_size - index * B).min(B);
            if n == BLOCK {
                if run.is_empty() {
                    run_start = index;
                }
                self.cipher
                    .seal_into(index, &data[done..done + n], used as u32, &mut run);
            } else {
                self.flush_run(&mut run, run_start)?;
                let mut block = self.block_data(index)?;
                block[within..within + n].copy_from_slice(&data[done..done + n]);
                self.write_block(index, &block, used)?;
            }
            done += n;
        }
        self.flush_run(&mut run, run_start)
    }

    /// Writes sealed blocks from `first` and empties `run`.
    fn flush_run(&self, run: &mut Vec<u8>, first: u64) -> Result<()> {
        if !run.is_empty() {
            self.file.write_all_at(run, block_at(first))?;
            run.clear();
        }
        Ok(())
    }

    /// Makes a file of `old` bytes `new` bytes long: cut bytes are zeroed
    /// (an extension later reads zeros), and the last block says the length.
    pub fn set_len(&self, new: u64, old: u64) -> Result<()> {
        if new == old {
            return Ok(());
        }
        if new == 0 {
            return self.file.set_len(HEADER);
        }
        let last = (new - 1) / B;
        let used = new - last * B;
        let mut block = if last * B < old {
            self.block_data(last)?
        } else {
            Zeroizing::new(vec![0u8; BLOCK])
        };
        block[used as usize..].fill(0);
        if new < old {
            self.file.set_len(block_at(last + 1))?;
        }
        self.write_block(last, &block, used)
    }

    /// Drops every block (the content is abandoned): the disk space is free
    /// at once, whoever still holds the file.
    pub fn discard(&self) -> Result<()> {
        self.file.set_len(HEADER)
    }

    /// A reader of the plaintext from offset 0 to `len`.
    pub fn reader(&self, len: u64) -> Result<PlainReader> {
        Ok(PlainReader {
            file: self.try_clone()?,
            at: 0,
            len,
        })
    }

    /// A writer of plaintext from offset 0 into this (empty) file.
    pub fn writer(&self) -> Result<PlainWriter> {
        Ok(PlainWriter {
            file: self.try_clone()?,
            at: 0,
        })
    }
}

impl PlainSource for EncryptedFile {
    fn read_plain_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        EncryptedFile::read_exact_at(self, buf, offset)
    }
}

/// The plaintext of an [`EncryptedFile`] as an `AsyncRead` (for sealing it
/// into an object). Decryption runs inline: blocks are local and small.
pub struct PlainReader {
    file: EncryptedFile,
    at: u64,
    len: u64,
}

impl tokio::io::AsyncRead for PlainReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<Result<()>> {
        let n = (self.len - self.at)
            .min(buf.remaining() as u64)
            .min(1 << 20) as usize;
        if n == 0 {
            return Poll::Ready(Ok(()));
        }
        let dst = buf.initialize_unfilled_to(n);
        self.file.read_exact_at(&mut dst[..n], self.at)?;
        buf.advance(n);
        self.at += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// Plaintext written in order into an [`EncryptedFile`], as an `AsyncWrite`
/// (for staging a downloaded object). Encryption runs inline.
pub struct PlainWriter {
    file: EncryptedFile,
    at: u64,
}

impl tokio::io::AsyncWrite for PlainWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize>> {
        let at = self.at;
        self.file.write_at(data, at, at)?;
        self.at += data.len() as u64;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
