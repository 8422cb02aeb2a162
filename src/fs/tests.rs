//! Core tests: the filesystem without FUSE, over the in-memory store and KMS.

use super::*;
use crate::keys::{CachingKeyService, FakeKms, KeyService};
use crate::sealed::IoSettings;
use crate::store::{MemoryStore, PutCondition};

pub(crate) struct Rig {
    pub fs: SealFs,
    pub mem: MemoryStore,
    _cache: tempfile::TempDir,
}

pub(crate) fn rig_with(ttl: Duration) -> Rig {
    rig_over(ttl, |mem| Arc::new(mem.clone()))
}

/// A rig whose store is `wrap(memory store)` (e.g. a fault injector).
pub(crate) fn rig_over(
    ttl: Duration,
    wrap: impl FnOnce(&MemoryStore) -> Arc<dyn crate::store::ObjectStore>,
) -> Rig {
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
    // Attributes authenticated as in a format-2 volume.
    let attested: Arc<dyn crate::store::ObjectStore> = Arc::new(crate::store::AttestedStore::new(
        wrap(&mem),
        crate::crypto::attributes::AttributeKeys::derive(&[0x5e; 32]),
        "vol",
        crate::store::AttributeRule::Strict,
    ));
    let branches = crate::sealed::Branches::new(
        attested.clone(),
        keys.clone(),
        &arn,
        "v0",
        "vol",
        Some(crate::sealed::BranchSettings::default()),
    );
    let sealed = SealedStore::new(attested, keys.clone(), io, arn.clone()).with_branches(branches);
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
        read: crate::sealed::reader::ReadSettings {
            chunk: 16 * 4096,
            max_window: 4,
            budget_chunks: 8,
            cache_bytes: 64 * 4096,
        },
        disk_cache_bytes: 0,
        write_back: false,
        write_back_uploads: 8,
        cached_entries: super::DEFAULT_CACHED_ENTRIES,
    };
    Rig {
        fs: SealFs::new(
            sealed,
            "vol",
            settings,
            Arc::new(crate::local::LocalKey::ephemeral()),
        )
        .unwrap(),
        mem,
        _cache: cache,
    }
}

/// `chmod MODE` of `ino` through `fs`.
pub(crate) async fn chmod(fs: &SealFs, ino: u64, mode: u32) {
    let set = super::attr::SetAttr {
        mode: Some(mode),
        uid: None,
        gid: None,
        size: None,
        mtime: None,
        atime: None,
    };
    fs.setattr(ino, set).await.unwrap();
}

pub(crate) fn rig() -> Rig {
    rig_with(Duration::from_secs(1))
}

impl Rig {
    /// The volume's objects but its internal area (the branch keys).
    pub fn user_keys(&self) -> Vec<String> {
        let mut keys = self.mem.keys();
        keys.retain(|k| !k.starts_with("vol/.sealfs/"));
        keys
    }

    /// PUTs of whole objects other than the branch keys' (each one PUT).
    pub fn object_puts(&self) -> u64 {
        let branches = self.mem.keys().len() - self.user_keys().len();
        self.mem
            .counts()
            .put
            .load(std::sync::atomic::Ordering::Relaxed)
            - branches as u64
    }

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

/// A second mount of the same volume, with its own staging area.
pub(crate) fn rig_same_store(r: &Rig) -> SealFs {
    rig_with_cache(r, r.fs.settings.cache_dir.join("second"))
}

/// Another mount of the same volume using `cache_dir` (the same one: a remount).
pub(crate) fn rig_with_cache(r: &Rig, cache_dir: std::path::PathBuf) -> SealFs {
    rig_with_settings(r, |s| s.cache_dir = cache_dir)
}

/// Another mount of the same volume with settings edited by `edit`.
pub(crate) fn rig_with_settings(r: &Rig, edit: impl FnOnce(&mut FsSettings)) -> SealFs {
    let mut settings = r.fs.settings.clone();
    edit(&mut settings);
    // The next mount of the same cache directory unwraps the same local key.
    SealFs::new(r.fs.sealed.sibling(), "vol", settings, r.fs.local.clone()).unwrap()
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
        r.user_keys().iter().all(|k| k.starts_with("vol/b/")),
        "{:?}",
        r.user_keys()
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
    assert!(r.user_keys().is_empty(), "{:?}", r.user_keys());
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

mod model {
    //! The core against a reference model (a map of paths to bytes), with
    //! another client writing and deleting objects behind its back.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const FILES: [&str; 4] = ["a", "b", "d/c", "d/e"];

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            f: usize,
            off: u32,
            len: u32,
            byte: u8,
        },
        Truncate {
            f: usize,
            size: u32,
        },
        Unlink {
            f: usize,
        },
        Rename {
            from: usize,
            to: usize,
        },
        OtherPut {
            f: usize,
            len: u32,
            byte: u8,
        },
        OtherDelete {
            f: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let f = 0..FILES.len();
        prop_oneof![
            4 => (f.clone(), 0u32..20_000, 0u32..10_000, any::<u8>()).prop_map(|(f, off, len, byte)| Op::Write { f, off, len, byte }),
            2 => (f.clone(), 0u32..20_000).prop_map(|(f, size)| Op::Truncate { f, size }),
            1 => f.clone().prop_map(|f| Op::Unlink { f }),
            1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
            1 => (f.clone(), 0u32..9000, any::<u8>()).prop_map(|(f, len, byte)| Op::OtherPut { f, len, byte }),
            1 => f.prop_map(|f| Op::OtherDelete { f }),
        ]
    }

    async fn parent_of(r: &Rig, path: &str) -> (u64, String) {
        match path.split_once('/') {
            Some((d, n)) => (r.fs.lookup(ROOT, d).await.unwrap().ino, n.to_string()),
            None => (ROOT, path.to_string()),
        }
    }

    async fn apply(r: &Rig, other: &SealedStore, model: &mut BTreeMap<String, Vec<u8>>, op: &Op) {
        match op {
            Op::Write { f, off, len, byte } => {
                let path = FILES[*f];
                let (dir, name) = parent_of(r, path).await;
                let fh = match r.fs.lookup(dir, &name).await {
                    Ok(e) => r.fs.open(e.ino, libc::O_WRONLY).await.unwrap(),
                    Err(_) => r.fs.create(dir, &name, 0o644, 0, 0).await.unwrap().1,
                };
                let data = vec![*byte; *len as usize];
                r.fs.write(fh, *off as u64, &data).await.unwrap();
                r.fs.release(fh).await.unwrap();
                let m = model.entry(path.to_string()).or_default();
                let end = *off as usize + data.len();
                if m.len() < end {
                    m.resize(end.max(m.len()), 0);
                }
                m[*off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { f, size } => {
                let path = FILES[*f];
                let (dir, name) = parent_of(r, path).await;
                if let Some(m) = model.get_mut(path) {
                    let ino = r.fs.lookup(dir, &name).await.unwrap().ino;
                    r.fs.setattr(
                        ino,
                        SetAttr {
                            size: Some(*size as u64),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    m.resize(*size as usize, 0);
                }
            }
            Op::Unlink { f } => {
                let path = FILES[*f];
                let (dir, name) = parent_of(r, path).await;
                let res = r.fs.unlink(dir, &name).await;
                assert_eq!(
                    res.is_ok(),
                    model.remove(path).is_some(),
                    "unlink {path}: {res:?}"
                );
            }
            Op::Rename { from, to } => {
                let (a, b) = (FILES[*from], FILES[*to]);
                let (da, na) = parent_of(r, a).await;
                let (db, nb) = parent_of(r, b).await;
                let res = r.fs.rename(da, &na, db, &nb, false).await;
                match model.remove(a) {
                    Some(v) => {
                        res.unwrap();
                        model.insert(b.to_string(), v);
                    }
                    None => assert_eq!(res.unwrap_err().errno(), libc::ENOENT),
                }
            }
            Op::OtherPut { f, len, byte } => {
                let key = format!("vol/{}", FILES[*f]);
                let data = vec![*byte; *len as usize];
                let wk = other.key_for_write(&key).await.unwrap();
                other
                    .write(
                        &key,
                        &mut &data[..],
                        data.len() as u64,
                        &Default::default(),
                        &wk,
                        &|_| {},
                    )
                    .await
                    .unwrap();
                model.insert(FILES[*f].to_string(), data);
            }
            Op::OtherDelete { f } => {
                r.mem.delete(&format!("vol/{}", FILES[*f])).await.unwrap();
                model.remove(FILES[*f]);
            }
        }
    }

    async fn check(r: &Rig, model: &BTreeMap<String, Vec<u8>>) {
        for path in FILES {
            let (dir, name) = parent_of(r, path).await;
            match (r.fs.lookup(dir, &name).await, model.get(path)) {
                (Ok(e), Some(want)) => {
                    assert_eq!(e.attr.size, want.len() as u64, "size of {path}");
                    assert!(r.read_file(e.ino).await == *want, "content of {path}");
                }
                (Err(e), None) => assert_eq!(e.errno(), libc::ENOENT),
                (got, want) => panic!(
                    "{path}: fs says {:?}, model says {:?}",
                    got.map(|e| e.attr.size),
                    want.map(Vec::len)
                ),
            }
        }
        let mut want: Vec<String> = model.keys().filter(|k| !k.contains('/')).cloned().collect();
        want.push("d".into());
        want.sort();
        assert_eq!(r.names(ROOT).await, want);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn core_matches_the_model(ops in proptest::collection::vec(op(), 1..16)) {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                // TTL 0: every lookup asks the store, so other clients' changes are seen at once.
                let r = rig_with(Duration::ZERO);
                r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap();
                let other = r.fs.sealed.sibling();
                let mut model = BTreeMap::new();
                for op in &ops {
                    apply(&r, &other, &mut model, op).await;
                    check(&r, &model).await;
                }
                let leftovers = std::fs::read_dir(&r.fs.settings.cache_dir).unwrap()
                    .filter(|e| e.as_ref().unwrap().file_name() != "spool")
                    .count();
                assert_eq!(leftovers, 0, "staging files left behind");
                let spooled = std::fs::read_dir(r.fs.settings.cache_dir.join("spool")).unwrap().count();
                assert_eq!(spooled, 0, "spool files left behind");
            });
        }
    }
}

/// Another client overwrites a file between our open and our close: the
/// close fails with EIO, their version stays, ours is kept as a conflict copy.
#[tokio::test]
async fn concurrent_overwrite_keeps_a_conflict_copy() {
    let r = rig();
    let ino = r.write_file(ROOT, "doc.txt", b"original").await;
    let fh =
        r.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap();
    r.fs.write(fh, 0, b"ours").await.unwrap();
    let other = r.fs.sealed.sibling();
    let wk = other.key_for_write("vol/doc.txt").await.unwrap();
    other
        .write(
            "vol/doc.txt",
            &mut &b"theirs"[..],
            6,
            &Default::default(),
            &wk,
            &|_| {},
        )
        .await
        .unwrap();
    let err = r.fs.flush(fh).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains("conflict"), "{err}");
    r.fs.release(fh).await.unwrap();
    let names = r.names(ROOT).await;
    let copy = names
        .iter()
        .find(|n| n.starts_with("doc.txt.sealfs-conflict-"))
        .expect("conflict copy listed");
    let copy_ino = r.fs.lookup(ROOT, copy).await.unwrap().ino;
    assert_eq!(r.read_file(copy_ino).await, b"ours");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = r.fs.lookup(ROOT, "doc.txt").await.unwrap();
    assert_eq!(r.read_file(e.ino).await, b"theirs");
}

/// Creates racing on one name: exactly one wins.
#[tokio::test]
async fn racing_create_has_one_winner() {
    let r = rig();
    let (_, fh) = r.fs.create(ROOT, "race", 0o644, 0, 0).await.unwrap();
    r.fs.write(fh, 0, b"mine").await.unwrap();
    r.mem
        .put(
            "vol/race",
            bytes::Bytes::from_static(b"x"),
            &Default::default(),
            &PutCondition::None,
        )
        .await
        .unwrap();
    assert_eq!(r.fs.flush(fh).await.unwrap_err().errno(), libc::EIO);
    r.fs.release(fh).await.unwrap();
    assert_eq!(&r.mem.raw("vol/race").unwrap().0[..], b"x");
}

/// Objects that are not sealfs objects are listed, and reading them is EIO.
#[tokio::test]
async fn foreign_objects_are_refused_and_cost_only_themselves() {
    let r = rig();
    r.write_file(ROOT, "mine", b"ok").await;
    r.mem
        .put(
            "vol/plain.txt",
            bytes::Bytes::from_static(b"hello"),
            &Default::default(),
            &PutCondition::None,
        )
        .await
        .unwrap();
    // In a format-2 volume an object without authenticated attributes is
    // not listed, and looking it up is EIO; the rest of the volume works.
    assert_eq!(r.names(ROOT).await, vec!["mine"]);
    let err = r.fs.lookup(ROOT, "plain.txt").await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains("no attribute MAC"), "{err}");
    let e = r.fs.lookup(ROOT, "mine").await.unwrap();
    assert_eq!(r.read_file(e.ino).await, b"ok");
}

/// A read pinned to one version fails rather than mix in another version.
#[tokio::test]
async fn reads_never_mix_versions() {
    let r = rig();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    let ino = r.write_file(ROOT, "v", &data).await;
    let fh = r.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(r.fs.read(fh, 0, 4096).await.unwrap() == data[..4096]);
    let other = r.fs.sealed.sibling();
    let wk = other.key_for_write("vol/v").await.unwrap();
    let v2 = vec![7u8; 1_000_000];
    other
        .write(
            "vol/v",
            &mut &v2[..],
            v2.len() as u64,
            &Default::default(),
            &wk,
            &|_| {},
        )
        .await
        .unwrap();
    // Beyond the first read-ahead window: a new ranged GET, pinned to the old ETag.
    match r.fs.read(fh, 900_000, 4096).await {
        Ok(_) => panic!("a read after the object changed returned data"),
        Err(e) => assert_eq!(e.errno(), libc::EIO),
    }
}

/// rsync's pattern: write a temp file, close, utimens it while the release is
/// still pending, rename it into place, then the release arrives. The result
/// must verify at its new key and carry the mtime (regression: the release
/// used to upload a new version between the rename's header read and its copy).
#[tokio::test]
async fn utimens_and_rename_between_flush_and_release() {
    let r = rig();
    let (e, fh) = r.fs.create(ROOT, ".f.tmp", 0o600, 0, 0).await.unwrap();
    r.fs.write(fh, 0, b"payload").await.unwrap();
    r.fs.flush(fh).await.unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    r.fs.setattr(
        e.ino,
        SetAttr {
            mtime: Some(when),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    r.fs.rename(ROOT, ".f.tmp", ROOT, "f", false).await.unwrap();
    r.fs.release(fh).await.unwrap();
    let r2 = Rig {
        fs: rig_same_store(&r),
        mem: r.mem.clone(),
        _cache: tempfile::tempdir().unwrap(),
    };
    let e = r2.fs.lookup(ROOT, "f").await.unwrap();
    assert_eq!(e.attr.mtime, when);
    assert_eq!(r2.read_file(e.ino).await, b"payload");
    assert_eq!(r.user_keys(), vec!["vol/f".to_string()]);
}

/// A reader of a file that a rename replaces keeps its version (it once got
/// the new object cut to the old size: a mix of two versions).
#[tokio::test]
async fn rename_over_a_file_being_read_keeps_the_readers_version() {
    let r = rig();
    let old = r.write_file(ROOT, "target", b"old version").await;
    r.write_file(ROOT, "tmp", b"the new version, longer").await;
    let fh = r.fs.open(old, libc::O_RDONLY).await.unwrap();
    r.fs.rename(ROOT, "tmp", ROOT, "target", false)
        .await
        .unwrap();
    assert_eq!(&r.fs.read(fh, 0, 100).await.unwrap()[..], b"old version");
    r.fs.release(fh).await.unwrap();
    let new = r.fs.lookup(ROOT, "target").await.unwrap();
    assert_eq!(r.read_file(new.ino).await, b"the new version, longer");
}
