//! Tests of [`super::reader::Reader`]: read-ahead and its memory bound,
//! random reads and the caches, and how the access pattern is told apart.
//! The object rig is the one of the format tests (`tests.rs`).

use super::tests::{data, rig, small_parts, Rig};
use super::*;
use reader::{ReadShared, Reader};

/// A tiny open run, so that reads past the first segment go to the store.
fn no_prefix() -> IoSettings {
    IoSettings {
        read_run: 4096,
        ..small_parts()
    }
}

/// A reader of `key`, opened afresh, sharing `shared`.
async fn reader(r: &Rig, key: &str, shared: &Arc<ReadShared>) -> Reader {
    let obj = r.sealed.open(key).await.unwrap();
    Reader::new(Arc::new(obj), r.sealed.store().clone(), shared.clone())
}

mod reading {
    use super::*;
    use crate::sealed::reader::ReadSettings;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn settings() -> ReadSettings {
        ReadSettings {
            chunk: 4 * 4096,
            max_window: 4,
            budget_chunks: 6,
            cache_bytes: 8 * 4096,
        }
    }

    #[tokio::test]
    async fn sequential_reads_run_ahead_in_chunks_with_bounded_memory() {
        let r = rig(no_prefix());
        let plain = data(400 * 4096 + 123, 3);
        r.put("vol/seq", &plain).await.unwrap();
        let shared = ReadShared::new(settings());
        let mut rd = reader(&r, "vol/seq", &shared).await;
        let gets_before = r.mem.counts().get.load(Relaxed);
        let mut out = Vec::new();
        let mut most = 0;
        loop {
            let got = rd.read(out.len() as u64, 5000).await.unwrap();
            if got.is_empty() {
                break;
            }
            out.extend_from_slice(&got);
            most = most.max(rd.chunks_held());
        }
        assert_eq!(out, plain);
        // 401 segments in chunks of 4: about 101 ranged GETs, not one per
        // read (328 reads of 5000 bytes), and never more than the window
        // plus the chunks being read (two when a read spans a boundary) and
        // the one just behind them held at once.
        let gets = r.mem.counts().get.load(Relaxed) - gets_before;
        assert!((100..=102).contains(&gets), "{gets} GETs");
        assert!((3..=7).contains(&most), "held {most} chunks");
        // The read-ahead budget is whole again once the reader is gone.
        drop(rd);
        tokio::task::yield_now().await;
        let mut rd2 = reader(&r, "vol/seq", &shared).await;
        rd2.read(0, 4096).await.unwrap();
        rd2.read(4096, 4096).await.unwrap();
        assert!(rd2.chunks_held() > 1, "budget was not returned");
    }

    #[tokio::test]
    async fn random_reads_fetch_only_their_segments_and_hit_the_cache() {
        let r = rig(no_prefix());
        let plain = data(200 * 4096, 5);
        r.put("vol/rand", &plain).await.unwrap();
        let shared = ReadShared::new(settings());
        let mut rd = reader(&r, "vol/rand", &shared).await;
        let gets = || r.mem.counts().get.load(Relaxed);
        let before = gets();
        let got = rd.read(150 * 4096 + 100, 10).await.unwrap();
        assert_eq!(got, plain[150 * 4096 + 100..150 * 4096 + 110]);
        assert_eq!(gets() - before, 1);
        assert_eq!(rd.chunks_held(), 0, "a random read starts no read-ahead");
        // The same segment again, from earlier offsets: the cache.
        rd.read(150 * 4096 + 30, 10).await.unwrap();
        let got = rd.read(150 * 4096 + 4, 10).await.unwrap();
        assert_eq!(got, plain[150 * 4096 + 4..150 * 4096 + 14]);
        assert_eq!(gets() - before, 1);
        assert!(shared.cache.bytes() <= 8 * 4096);
        // Filling past the cache's capacity evicts; it never grows beyond it.
        for s in (0..100).step_by(7) {
            rd.read(s * 4096 + 1, 1).await.unwrap();
        }
        assert!(shared.cache.bytes() <= 8 * 4096);
    }

    /// Reads a whole object as a reader slower than the network would:
    /// read-ahead gets a moment before each read, which is answered at hand
    /// when it can be. Returns the bytes (up to the first error), the
    /// error, and how many reads were answered at hand out of how many.
    async fn read_preferring_at_hand(rd: &mut Reader) -> (Vec<u8>, Option<Error>, usize, usize) {
        let (mut out, mut at_hand, mut reads) = (Vec::new(), 0, 0);
        loop {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let off = out.len() as u64;
            reads += 1;
            let got = match rd.read_at_hand(off, 5000) {
                Some(got) => {
                    at_hand += 1;
                    got
                }
                None => rd.read(off, 5000).await,
            };
            match got {
                Ok(b) if b.is_empty() => return (out, None, at_hand, reads),
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e), at_hand, reads),
            }
        }
    }

    /// Once read-ahead runs ahead of the reader, sequential reads are
    /// answered on the caller's thread from the chunks that arrived (no
    /// hand-off to a task), with the same bytes and the same GETs; a chunk
    /// that failed verification is an error there too, never its bytes.
    #[tokio::test]
    async fn sequential_reads_whose_chunks_arrived_are_answered_at_hand() {
        let r = rig(no_prefix());
        let plain = data(200 * 4096 + 7, 11);
        r.put("vol/ah", &plain).await.unwrap();
        let shared = ReadShared::new(settings());
        let mut rd = reader(&r, "vol/ah", &shared).await;
        let before = r.mem.counts().get.load(Relaxed);
        let (out, err, at_hand, reads) = read_preferring_at_hand(&mut rd).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, plain);
        assert!(
            at_hand * 10 >= reads * 9,
            "{at_hand} of {reads} reads at hand"
        );
        let gets = r.mem.counts().get.load(Relaxed) - before;
        assert!((50..=52).contains(&gets), "{gets} GETs for 51 chunks");

        let (mut raw, _) = r.mem.raw("vol/ah").unwrap();
        let at = Layout::new(4096)
            .sealed_range(90..91, plain.len() as u64)
            .start as usize
            + 5;
        let mut v = raw.to_vec();
        v[at] ^= 1;
        raw = Bytes::from(v);
        r.mem.tamper("vol/ah", Some(raw), None);
        let mut rd = reader(&r, "vol/ah", &shared).await;
        let (out, err, at_hand, _) = read_preferring_at_hand(&mut rd).await;
        assert!(matches!(err, Some(Error::Integrity { .. })), "{err:?}");
        assert!(at_hand > 0);
        // Chunk 22 (segments 88..92) holds the bad segment: every read
        // before it succeeds, the one reaching into it fails.
        assert_eq!(out.len(), 88 * 4096 / 5000 * 5000);
        assert_eq!(out, plain[..out.len()]);
    }

    #[tokio::test]
    async fn a_tampered_chunk_ahead_fails_the_read_that_reaches_it() {
        let r = rig(no_prefix());
        let plain = data(100 * 4096, 8);
        r.put("vol/t", &plain).await.unwrap();
        let (mut raw, _) = r.mem.raw("vol/t").unwrap();
        let at = Layout::new(4096).sealed_range(60..61, 100 * 4096).start as usize + 9;
        let mut v = raw.to_vec();
        v[at] ^= 1;
        raw = Bytes::from(v);
        r.mem.tamper("vol/t", Some(raw), None);
        // Same length, so the pinned ETag changes: open after tampering.
        let shared = ReadShared::new(settings());
        let mut rd = reader(&r, "vol/t", &shared).await;
        let mut off = 0u64;
        let err = loop {
            match rd.read(off, 8192).await {
                Ok(b) => {
                    assert_eq!(b, plain[off as usize..off as usize + b.len()]);
                    off += b.len() as u64;
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
        assert_eq!(
            off,
            60 * 4096,
            "every byte before the bad segment, none after"
        );
        // The same reader again (a retrying application): the same error,
        // never a panic of a finished task polled twice.
        for _ in 0..2 {
            let again = rd.read(off, 8192).await.unwrap_err();
            assert!(matches!(again, Error::Integrity { .. }), "{again}");
        }
        let before = rd.read(0, 100).await.unwrap();
        assert_eq!(before, plain[..100], "reads elsewhere still work");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any mix of sequential runs and jumps returns exactly the slices
        /// of the plaintext.
        #[test]
        fn reads_match_the_plaintext(
            len in 0usize..60_000,
            ops in prop::collection::vec((0u64..70_000, 1u64..20_000, 1usize..6), 1..12),
        ) {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let r = rig(no_prefix());
                let plain = data(len, 1);
                r.put("vol/p", &plain).await.unwrap();
                let shared = ReadShared::new(settings());
                let mut rd = reader(&r, "vol/p", &shared).await;
                for (off, n, repeat) in ops {
                    let mut at = off;
                    for _ in 0..repeat {
                        let got = rd.read(at, n).await.unwrap();
                        let a = (at as usize).min(len);
                        let b = ((at + n) as usize).min(len);
                        prop_assert_eq!(&got[..], &plain[a..b]);
                        at += n;
                    }
                }
                Ok(())
            })?;
        }
    }
}

/// Readers when the mount-wide read-ahead budget is exhausted: a read never
/// comes back shorter than what is there (for FUSE, a short read is end of
/// file), whatever the other readers hold.
mod reading_under_pressure {
    use super::*;
    use crate::sealed::reader::ReadSettings;
    use proptest::prelude::*;

    fn tiny(budget_chunks: usize) -> Arc<ReadShared> {
        ReadShared::new(ReadSettings {
            chunk: 4 * 4096,
            max_window: 4,
            budget_chunks,
            cache_bytes: 4 * 4096,
        })
    }

    /// The case proptest found: a sequential read spanning two chunks while
    /// the budget is held elsewhere used to return only the first chunk's part.
    #[tokio::test]
    async fn a_read_across_chunks_with_the_budget_exhausted_is_whole() {
        let r = rig(no_prefix());
        let plain = data(49_153, 1);
        r.put("vol/a", &plain).await.unwrap();
        r.put("vol/b", &plain).await.unwrap();
        let shared = tiny(1);
        // Another reader takes the only permit with its read-ahead.
        let mut hog = reader(&r, "vol/b", &shared).await;
        hog.read(0, 100).await.unwrap();
        hog.read(100, 100).await.unwrap();
        assert!(hog.chunks_held() >= 2, "the other reader holds read-ahead");
        let mut rd = reader(&r, "vol/a", &shared).await;
        for (off, n, repeat) in [(26_892u64, 5_876u64, 1), (11_027, 19_063, 2)] {
            let mut at = off;
            for _ in 0..repeat {
                let got = rd.read(at, n).await.unwrap();
                let (a, b) = (
                    (at as usize).min(plain.len()),
                    ((at + n) as usize).min(plain.len()),
                );
                assert_eq!(got.len(), b - a, "short read at {at}");
                assert_eq!(&got[..], &plain[a..b]);
                at += n;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Several readers of two files (some of the same file) read with
        /// unaligned sizes at odd offsets, concurrently, through one budget
        /// of 1 or 2 chunks: every read is exactly the plaintext slice.
        #[test]
        fn interleaved_readers_with_a_tiny_budget_read_exact_bytes(
            lens in (1usize..90_000, 1usize..90_000),
            budget in 1usize..=2,
            readers in prop::collection::vec(
                (0usize..2, prop::collection::vec((0u64..95_000, 1u64..40_000, 1usize..5), 1..6)),
                2..6,
            ),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let r = rig(no_prefix());
                let files = [data(lens.0, 2), data(lens.1, 3)];
                r.put("vol/0", &files[0]).await.unwrap();
                r.put("vol/1", &files[1]).await.unwrap();
                let shared = tiny(budget);
                let mut tasks = Vec::new();
                for (file, ops) in readers {
                    let mut rd = reader(&r, &format!("vol/{file}"), &shared).await;
                    let plain = files[file].clone();
                    tasks.push(tokio::spawn(async move {
                        for (off, n, repeat) in ops {
                            let mut at = off;
                            for _ in 0..repeat {
                                let got = rd.read(at, n).await.map_err(|e| e.to_string())?;
                                let a = (at as usize).min(plain.len());
                                let b = ((at + n) as usize).min(plain.len());
                                if got[..] != plain[a..b] {
                                    return Err(format!(
                                        "read({at}, {n}) of {} bytes gave {} bytes, want {}",
                                        plain.len(), got.len(), b - a
                                    ));
                                }
                                at += n;
                            }
                        }
                        Ok::<(), String>(())
                    }));
                }
                for t in tasks {
                    let res = t.await.unwrap();
                    prop_assert!(res.is_ok(), "{}", res.unwrap_err());
                }
                Ok(())
            })?;
        }
    }
}

mod reading_order {
    use super::*;
    use crate::sealed::reader::ReadSettings;
    use std::sync::atomic::Ordering::Relaxed;

    /// The kernel's read-ahead requests arrive out of order around chunk
    /// boundaries: the pipeline keeps going instead of restarting.
    #[tokio::test]
    async fn slightly_out_of_order_reads_keep_the_pipeline() {
        let r = rig(no_prefix());
        let plain = data(256 * 4096, 4);
        r.put("vol/o", &plain).await.unwrap();
        let shared = ReadShared::new(ReadSettings {
            chunk: 8 * 4096,
            max_window: 4,
            budget_chunks: 8,
            cache_bytes: 16 * 4096,
        });
        let mut rd = reader(&r, "vol/o", &shared).await;
        let before = r.mem.counts().get.load(Relaxed);
        // Pairs of 8 KiB reads, each pair swapped.
        let n = 256 * 4096 / 8192;
        for i in (0..n).step_by(2) {
            for j in [i + 1, i] {
                let at = j * 8192;
                let got = rd.read(at as u64, 8192).await.unwrap();
                assert_eq!(got, plain[at..at + 8192]);
            }
        }
        let gets = r.mem.counts().get.load(Relaxed) - before;
        assert!(gets <= 34, "{gets} GETs: the pipeline restarted");
    }

    /// Random reads that land a little ahead of the previous one (within a
    /// chunk) fetch only their own segments: a lone short forward skip is
    /// not a stream.
    #[tokio::test]
    async fn a_random_read_just_ahead_of_the_last_starts_no_read_ahead() {
        let r = rig(no_prefix());
        let plain = data(256 * 4096, 6);
        r.put("vol/j", &plain).await.unwrap();
        let shared = ReadShared::new(ReadSettings {
            chunk: 16 * 4096,
            max_window: 4,
            budget_chunks: 8,
            cache_bytes: 64 * 4096,
        });
        let mut rd = reader(&r, "vol/j", &shared).await;
        let before = r.mem.counts().get.load(Relaxed);
        // Far apart, then each a few segments ahead of a far one.
        for seg in [200u64, 100, 105, 30, 33, 180, 190] {
            let at = seg * 4096 + 7;
            let got = rd.read(at, 4096).await.unwrap();
            assert_eq!(got, plain[at as usize..at as usize + 4096]);
            assert_eq!(
                rd.chunks_held(),
                0,
                "read at segment {seg} started read-ahead"
            );
        }
        // One GET per read, each of its two segments.
        let gets = r.mem.counts().get.load(Relaxed) - before;
        assert_eq!(gets, 7);
        // Two reads in a row that continue each other do stream.
        rd.read(40 * 4096, 4096).await.unwrap();
        rd.read(41 * 4096, 4096).await.unwrap();
        assert!(rd.chunks_held() > 0, "a sequential pair did not stream");
    }

    /// Readers sharing an (inline-written) disk cache in a new directory,
    /// and no memory cache.
    fn with_disk_cache() -> (
        tempfile::TempDir,
        Arc<crate::local::cache::ReadCache>,
        Arc<ReadShared>,
    ) {
        use crate::local::{cache::ReadCache, LocalKey};
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKey::ephemeral());
        let disk = ReadCache::open_with(dir.path(), key, 1 << 30, false).unwrap();
        let settings = ReadSettings {
            chunk: 8 * 4096,
            max_window: 4,
            budget_chunks: 8,
            cache_bytes: 0,
        };
        let shared = ReadShared::with_disk(settings, Some(disk.clone()));
        (dir, disk, shared)
    }

    /// Reads the caches can answer are answered without waiting (and
    /// without S3); the rest are left to the async path, the reader as it
    /// was.
    #[tokio::test]
    async fn reads_at_hand_come_from_the_caches_and_nothing_else() {
        let r = rig(no_prefix());
        let plain = data(64 * 4096 + 100, 9);
        r.put("vol/h", &plain).await.unwrap();
        let (dir, _disk, shared) = with_disk_cache();
        let open = || reader(&r, "vol/h", &shared);
        let gets = || r.mem.counts().get.load(Relaxed);
        // Nothing cached: nothing at hand.
        let mut rd = open().await;
        assert!(rd.read_at_hand(40 * 4096 + 5, 4096).is_none());
        // Segments 0..16 read once (backwards: random reads, no read-ahead)
        // go to the disk cache.
        for i in (0..16u64).rev() {
            rd.read(i * 4096, 4096).await.unwrap();
        }
        assert_eq!(rd.chunks_held(), 0);
        drop(rd);
        let entries = std::fs::read_dir(dir.path().join("read-cache"))
            .unwrap()
            .count();
        assert_eq!(entries, 16);
        let mut rd = open().await;
        let before = gets();
        for off in [9 * 4096 + 17, 3 * 4096, 14 * 4096 + 4000] {
            let got = rd.read_at_hand(off, 4096).expect("cached").unwrap();
            assert_eq!(got, plain[off as usize..off as usize + 4096]);
        }
        // A run through cached segments is served at hand too, and starts
        // no read-ahead; where the cache ends, the async path takes over.
        let mut at = 0u64;
        while let Some(got) = rd.read_at_hand(at, 16384) {
            let got = got.unwrap();
            assert_eq!(got, plain[at as usize..at as usize + got.len()]);
            at += got.len() as u64;
        }
        assert_eq!(at, 16 * 4096, "at hand exactly as far as the cache goes");
        assert_eq!(rd.chunks_held(), 0);
        assert_eq!(gets(), before, "no S3 request for cached bytes");
        let got = rd.read(at, 16384).await.unwrap();
        assert_eq!(got, plain[at as usize..at as usize + 16384]);
        assert!(gets() > before);
        assert!(
            rd.chunks_held() > 0,
            "the run continues as read-ahead from S3"
        );
        // A read inside the pipeline is the pipeline's: answered at hand
        // once its chunk has arrived, from the chunk.
        tokio::task::yield_now().await;
        let got = rd.read_at_hand(at + 16384, 4096).expect("arrived").unwrap();
        assert_eq!(got, plain[at as usize + 16384..at as usize + 20480]);
        // A cache entry altered on disk is not served (and is gone).
        let names: Vec<_> = std::fs::read_dir(dir.path().join("read-cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        for p in &names {
            let mut b = std::fs::read(p).unwrap();
            let n = b.len();
            b[n / 2] ^= 1;
            std::fs::write(p, b).unwrap();
        }
        let mut rd = open().await;
        assert!(rd.read_at_hand(2 * 4096, 4096).is_none());
        let got = rd.read(2 * 4096, 4096).await.unwrap();
        assert_eq!(got, plain[2 * 4096..3 * 4096], "fetched again from S3");
    }

    /// A random read that misses inside a group the disk cache lacks, next
    /// to one it holds (a file streamed before, a group of which the cache
    /// writer dropped), brings the whole group in one GET; a random read in
    /// a file with nothing cached brings only what it needs.
    #[tokio::test]
    async fn a_miss_beside_a_cached_group_fetches_the_group() {
        let r = rig(no_prefix());
        // 4 KiB segments: a group is 256 of them (1 MiB); three groups.
        let plain = data(3 << 20, 5);
        r.put("vol/g", &plain).await.unwrap();
        let (_dir, disk, shared) = with_disk_cache();
        let gets = || r.mem.counts().get.load(Relaxed);
        let mut rd = reader(&r, "vol/g", &shared).await;
        // Nothing cached: a random read fetches its segment only.
        let before = gets();
        let at = (2 << 20) + 5 * 4096 + 7;
        assert_eq!(
            rd.read(at, 100).await.unwrap(),
            plain[at as usize..at as usize + 100]
        );
        assert_eq!(gets() - before, 1);
        let etag = rd.object().info.etag.clone();
        let slot = |i: u64| crate::sealed::Slot {
            key: "vol/g",
            etag: &etag,
            segment_size: 4096,
            index: i,
            len: 4096,
        };
        assert!(!disk.has(&slot(512 + 6)), "only the segment read");
        // Group 0 in the cache, as a sequential read leaves it.
        disk.put_run(&slot(0), bytes::Bytes::copy_from_slice(&plain[..1 << 20]));
        // A miss in group 1 brings all of group 1, with one GET.
        let before = gets();
        let at = (1 << 20) + 100 * 4096 + 1;
        assert_eq!(
            rd.read(at, 5000).await.unwrap(),
            plain[at as usize..at as usize + 5000]
        );
        assert_eq!(gets() - before, 1);
        assert!(disk.has(&slot(256)) && disk.has(&slot(511)));
        for off in [(1 << 20) + 3, (2 << 20) - 4096] {
            let got = rd.read_at_hand(off, 4096).expect("cached").unwrap();
            assert_eq!(got, plain[off as usize..off as usize + 4096]);
        }
        assert_eq!(gets() - before, 1, "the group's other segments are local");
    }
}
