//! Core tests: the filesystem without FUSE, over the in-memory store and KMS.

use super::*;
use crate::keys::{CachingKeyService, FakeKms, KeyService};
use crate::sealed::IoSettings;
use crate::store::MemoryStore;

pub(crate) struct Rig {
    pub fs: SealFs,
    pub mem: MemoryStore,
    _cache: tempfile::TempDir,
}

pub(crate) fn rig_with(ttl: Duration) -> Rig {
    let mem = MemoryStore::new("bucket");
    let kms = FakeKms::new();
    let arn = kms.add_key();
    let keys: Arc<dyn KeyService> =
        Arc::new(CachingKeyService::new(kms, 1024, Duration::from_secs(600)));
    let io = IoSettings {
        segment_size: 4096,
        part_size: 16 * 4096,
        upload_concurrency: 2,
        read_run: 8 * 4096,
        read_concurrency: 2,
    };
    let sealed = SealedStore::new(Arc::new(mem.clone()), keys.clone(), io);
    let pool = KeyPool::new(keys, arn, 0);
    let cache = tempfile::tempdir().unwrap();
    let settings = FsSettings {
        metadata_ttl: ttl,
        cache_dir: cache.path().join("staging"),
        defaults: Defaults {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        },
        read_only: false,
    };
    Rig {
        fs: SealFs::new(sealed, pool, "vol", settings).unwrap(),
        mem,
        _cache: cache,
    }
}

pub(crate) fn rig() -> Rig {
    rig_with(Duration::from_secs(1))
}

impl Rig {
    pub async fn write_file(&self, parent: u64, name: &str, data: &[u8]) -> u64 {
        let (e, fh) = self.fs.create(parent, name, 0o644, 0, 0).await.unwrap();
        if !data.is_empty() {
            self.fs.write(fh, 0, data).await.unwrap();
        }
        self.fs.flush(fh).await.unwrap();
        self.fs.release(fh).await.unwrap();
        e.ino
    }

    pub async fn read_file(&self, ino: u64) -> Vec<u8> {
        let fh = self.fs.open(ino, libc::O_RDONLY).await.unwrap();
        let mut out = Vec::new();
        loop {
            let chunk = self.fs.read(fh, out.len() as u64, 50_000).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        self.fs.release(fh).await.unwrap();
        out
    }

    pub async fn names(&self, dir: u64) -> Vec<String> {
        let mut n: Vec<String> = self
            .fs
            .readdir(dir)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .skip(2)
            .collect();
        n.sort();
        n
    }
}

#[tokio::test]
async fn create_write_read_and_remount() {
    let r = rig();
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let ino = r.write_file(ROOT, "f.bin", &data).await;
    assert_eq!(r.read_file(ino).await, data);
    assert!(r.mem.keys().contains(&"vol/f.bin".to_string()));
    // A second filesystem over the same store sees the file (a remount).
    let r2 = Rig {
        fs: rig_same_store(&r),
        mem: r.mem.clone(),
        _cache: tempfile::tempdir().unwrap(),
    };
    let e = r2.fs.lookup(ROOT, "f.bin").await.unwrap();
    assert_eq!(e.attr.size, 100_000);
    assert_eq!(r2.read_file(e.ino).await, data);
}

fn rig_same_store(r: &Rig) -> SealFs {
    SealFs::new(
        SealedStore::new(
            r.fs.store.clone(),
            r.fs.sealed_keys(),
            r.fs.sealed.settings().clone(),
        ),
        r.fs.pool.clone(),
        "vol",
        FsSettings {
            cache_dir: r.fs.settings.cache_dir.join("second"),
            ..r.fs.settings.clone()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn directory_tree_rename_and_removal() {
    let r = rig();
    let a = r.fs.mkdir(ROOT, "a", 0o755, 0, 0).await.unwrap().ino;
    let src = r.fs.mkdir(a, "src", 0o700, 0, 0).await.unwrap().ino;
    for d in ["cli", "crypto", "fs", "keys"] {
        let dino = r.fs.mkdir(src, d, 0o700, 0, 0).await.unwrap().ino;
        for f in ["mod.rs", "x.rs"] {
            r.write_file(dino, f, format!("{d}/{f}").as_bytes()).await;
        }
    }
    r.write_file(src, "lib.rs", b"lib").await;
    r.fs.rename(ROOT, "a", ROOT, "b", false).await.unwrap();
    assert_eq!(r.names(ROOT).await, vec!["b"]);
    assert_eq!(
        r.names(src).await,
        vec!["cli", "crypto", "fs", "keys", "lib.rs"]
    );
    assert!(
        r.mem.keys().iter().all(|k| k.starts_with("vol/b/")),
        "{:?}",
        r.mem.keys()
    );
    // rm -r, in the order rm does it.
    for d in ["cli", "crypto", "fs", "keys"] {
        let dino =
            r.fs.lookup(src, d)
                .await
                .unwrap_or_else(|e| panic!("lookup {d}: {e}"))
                .ino;
        for f in r.names(dino).await {
            r.fs.unlink(dino, &f).await.unwrap();
        }
        r.fs.rmdir(src, d)
            .await
            .unwrap_or_else(|e| panic!("rmdir {d}: {e}"));
    }
    r.fs.unlink(src, "lib.rs").await.unwrap();
    let b = r.fs.lookup(ROOT, "b").await.unwrap().ino;
    r.fs.rmdir(b, "src").await.unwrap();
    r.fs.rmdir(ROOT, "b").await.unwrap();
    assert!(r.mem.keys().is_empty(), "{:?}", r.mem.keys());
}

/// Regression: a stale entry under a freshly listed parent must be found
/// (rm -r after mv used to get ENOENT for subdirectories).
#[tokio::test]
async fn stale_child_of_a_listed_directory_is_found() {
    let r = rig_with(Duration::from_millis(50));
    let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
    r.fs.mkdir(d, "sub", 0o755, 0, 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    r.fs.readdir(d).await.unwrap();
    r.fs.lookup(d, "sub").await.unwrap();
    assert_eq!(
        r.fs.lookup(d, "nope").await.unwrap_err().errno(),
        libc::ENOENT
    );
}
