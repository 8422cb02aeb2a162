//! Tests of streamed uploads at the store level: parts are sealed from the
//! plaintext the writer handed over (not read back from staging) while the
//! writer writes at the end, and any mix of writes at the end and rewrites
//! of the unsent range uploads exactly what was written.

use super::stream::StreamingWrite;
use super::tests::{data, rig, small_parts, Rig};
use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Staged plaintext as a growable buffer that counts what is read back.
#[derive(Default)]
struct Staging {
    bytes: Mutex<Vec<u8>>,
    read_back: AtomicU64,
}

impl Staging {
    fn write(&self, offset: u64, data: &[u8]) -> u64 {
        let mut b = self.bytes.lock();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        b.len() as u64
    }
}

impl PlainSource for Staging {
    fn read_plain_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let b = self.bytes.lock();
        let at = offset as usize;
        let src = b
            .get(at..at + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        self.read_back
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A writer as the mount drives one: writes go to staging first; the
/// stream starts once the file is longer than a part, and hears of every
/// write after that.
struct Writer {
    staging: Arc<Staging>,
    stream: Option<StreamingWrite>,
    size: u64,
}

impl Writer {
    fn new() -> Self {
        Writer {
            staging: Arc::new(Staging::default()),
            stream: None,
            size: 0,
        }
    }

    async fn write(&mut self, r: &Rig, offset: u64, data: &[u8]) {
        self.size = self.staging.write(offset, data);
        match &mut self.stream {
            Some(st) => st.wrote(offset, data),
            None if self.size > r.sealed.part_plain() => {
                let wk = r.sealed.new_key().await.unwrap();
                let source: Arc<dyn PlainSource> = self.staging.clone();
                let st = r
                    .sealed
                    .start_stream("vol/s", source, &Metadata::new(), &wk)
                    .await
                    .unwrap();
                self.stream = Some(st);
            }
            None => return,
        }
        self.stream
            .as_mut()
            .unwrap()
            .advance(self.size)
            .await
            .unwrap();
    }

    fn sent(&self) -> u64 {
        self.stream.as_ref().map_or(0, |st| st.sent())
    }

    async fn finish(self) {
        let st = self.stream.expect("the file outgrew a part");
        st.finish(self.size, &PutCondition::IfNoneMatch)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_writer_at_the_end_has_its_parts_sealed_from_memory() {
    let r = rig(small_parts());
    let part = r.sealed.part_plain();
    let plain = data(10 * part as usize + 777, 3);
    let mut w = Writer::new();
    for (i, chunk) in plain.chunks(3000).enumerate() {
        w.write(&r, (i * 3000) as u64, chunk).await;
    }
    let staging = w.staging.clone();
    w.finish().await;
    assert_eq!(r.get("vol/s").await.unwrap(), plain);
    // Read back: the first part and what followed it when the stream
    // started, nothing of the nine parts after.
    let read = staging.read_back.load(Ordering::Relaxed);
    assert!(read > 0 && read <= part + 3000, "{read} bytes read back");
}

#[tokio::test]
async fn a_rewrite_of_the_unsent_range_is_read_back_once_and_uploaded() {
    let r = rig(small_parts());
    let part = r.sealed.part_plain();
    let mut model = data(6 * part as usize, 5);
    let mut w = Writer::new();
    let half = model.len() / 2;
    for (i, chunk) in model[..half].chunks(1000).enumerate() {
        w.write(&r, (i * 1000) as u64, chunk).await;
    }
    let before = w.staging.read_back.load(Ordering::Relaxed);
    // A rewrite above what was sent, below the end: the tail is dropped.
    let at = w.sent() + 10;
    w.write(&r, at, b"rewritten").await;
    model[at as usize..at as usize + 9].copy_from_slice(b"rewritten");
    for (i, chunk) in model[half..].chunks(1000).enumerate() {
        w.write(&r, (half + i * 1000) as u64, chunk).await;
    }
    let read = w.staging.read_back.load(Ordering::Relaxed) - before;
    let staging = w.staging.clone();
    w.finish().await;
    assert_eq!(r.get("vol/s").await.unwrap(), model);
    // One part from staging and the remainder once; memory again after.
    assert!(
        read > 0 && read <= 2 * part + 1000,
        "{read} bytes read back"
    );
    assert!(staging.read_back.load(Ordering::Relaxed) < 4 * part);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Writes at the end mixed with rewrites anywhere in the unsent range
    /// (the only writes a stream survives) upload exactly the model.
    #[test]
    fn any_writes_a_stream_survives_upload_what_was_written(
        ops in prop::collection::vec((0u8..4, 0u64..u64::MAX, 1usize..9000), 1..60),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = rig(small_parts());
            let part = r.sealed.part_plain() as usize;
            let mut model: Vec<u8> = Vec::new();
            let mut w = Writer::new();
            for (i, (kind, pick, len)) in ops.into_iter().enumerate() {
                let sent = w.sent();
                // One write in four rewrites the unsent range; the rest append.
                let offset = if kind == 0 && (model.len() as u64) > sent {
                    sent + pick % (model.len() as u64 - sent)
                } else {
                    model.len() as u64
                };
                let bytes = data(len, i as u8);
                let end = offset as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&bytes);
                w.write(&r, offset, &bytes).await;
            }
            // A stream needs a file longer than a part.
            if model.len() <= part {
                let bytes = data(part + 1 - model.len(), 99);
                let offset = model.len() as u64;
                model.extend_from_slice(&bytes);
                w.write(&r, offset, &bytes).await;
            }
            w.finish().await;
            prop_assert_eq!(r.get("vol/s").await.unwrap(), model);
            Ok(())
        })?;
    }
}
