//! The performance paths through real mounts: streamed multipart writes,
//! read-ahead, the `--write-back` spool, and the stats attribute the
//! benchmark reads. Speed itself is measured by scripts/bench, not here;
//! these tests pin down that the fast paths are taken and lose nothing.

mod common;

use common::mounted::Mounted;
use common::*;

fn stats(m: &Mounted) -> serde_json::Value {
    let out = m.sh("getfattr --only-values -n user.sealfs.stats $M");
    serde_json::from_str(&out).expect("stats are JSON")
}

fn count(v: &serde_json::Value, part: &str, name: &str) -> u64 {
    v[part][name].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_large_sequential_write_streams_and_reads_back_exactly() {
    let mut m = Mounted::new("stream").mount();
    std::fs::write(m.local("big.bin"), content(40 << 20, 9)).unwrap();
    // The mount makes its branch key (one PUT of its wrapped form) with
    // its first new file: made here, so the counts below are dd's alone.
    m.sh("echo first > $M/first");
    let before = stats(&m);
    m.sh("dd if=big.bin of=$M/big.bin bs=1M conv=fsync status=none");
    let after = stats(&m);
    // One multipart upload fed while dd wrote (8 MiB parts), no whole-file PUT.
    assert_eq!(
        count(&after, "s3", "CreateMultipartUpload")
            - count(&before, "s3", "CreateMultipartUpload"),
        1
    );
    assert_eq!(
        count(&after, "s3", "UploadPart") - count(&before, "s3", "UploadPart"),
        5
    );
    // dd dup2()s its output and closes the original descriptor first: that
    // close is a flush, so the empty file goes up once (close means durable).
    // No PUT carries data.
    assert!(
        count(&after, "s3", "PUT") - count(&before, "s3", "PUT") <= 1,
        "before {before} after {after}"
    );
    m.remount();
    // The kernel reads ahead by up to 1 MiB on this mount (requests of up
    // to 1 MiB, not its default 128 KiB); only root may raise it.
    if m.sh("id -u").trim() == "0" {
        let kib = m.sh(
            "d=$(awk -v m=\"$(realpath $M)\" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo); \
             cat /sys/class/bdi/$d/read_ahead_kb",
        );
        assert_eq!(kib.trim(), "1024");
    }
    // A sequential read (read-ahead) and scattered reads (only their segments).
    m.sh("cmp big.bin $M/big.bin && \
          for off in 7 4099 33000 39999; do \
            cmp <(dd if=big.bin bs=1K skip=$off count=3 status=none) \
                <(dd if=$M/big.bin bs=1K skip=$off count=3 status=none); done");
    let reads = stats(&m);
    // 40 MiB in read-ahead chunks of 4 MiB: a few more GETs than 10, never
    // one per kernel request (hundreds).
    let gets = count(&reads, "s3", "GET");
    assert!((10..=40).contains(&gets), "{gets} GETs");
    m.finish().await;
}

#[tokio::test]
async fn write_back_copies_trees_and_unmount_drains_the_spool() {
    let mut m = Mounted::new("writeback");
    m.mount_args = vec!["--write-back".into()];
    let mut m = m.mount();
    let src = m.local("src");
    for i in 0..300 {
        let d = src.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), content(100 + i * 37, i as u64)).unwrap();
    }
    std::fs::write(src.join("large.bin"), content(20 << 20, 77)).unwrap();
    let before = stats(&m);
    m.sh("cp -a src $M/cp && rsync -a src/ $M/rs/ && \
          cd $M && git init -q repo && cd repo && git config user.email t@example.com && \
          git config user.name T && cp -r ../cp/d1 . && git add -A && git commit -qm one && git fsck --strict");
    // Read back at once: waits for the background uploads, then reads.
    m.sh("diff -r src $M/cp && diff -r src $M/rs");
    let after = stats(&m);
    // 600+ new files, one branch key: one KMS call in all.
    let created =
        count(&after, "kms", "GenerateDataKey") - count(&before, "kms", "GenerateDataKey");
    assert_eq!(
        created, 1,
        "{created} GenerateDataKey calls for 600+ new files"
    );
    m.unmount();
    // Without --write-back now: what the first mount wrote is all in S3.
    m.mount_args.clear();
    m.remount();
    m.sh("diff -r src $M/cp && diff -r src $M/rs && \
          rsync -a --dry-run --itemize-changes src/ $M/rs/ | wc -l | grep -qx 0 && \
          cd $M/repo && git fsck --strict && git log --oneline | wc -l | grep -qx 1");
    m.finish().await;
}

#[tokio::test]
async fn write_back_fsync_waits_for_s3() {
    let mut m = Mounted::new("wbsync");
    m.mount_args = vec!["--write-back".into()];
    let m = m.mount();
    // sqlite fsyncs every transaction: with write-back each still reaches S3.
    m.sh("sqlite3 $M/db 'create table t(v); insert into t values(1),(2),(3);' && \
          python3 -c \"import os; fd=os.open('$M/synced', os.O_CREAT|os.O_WRONLY); os.write(fd, b'durable'); os.fsync(fd); os.close(fd)\"");
    let (body, _) = m.object("synced").await;
    assert!(
        !body.is_empty(),
        "fsync returned before the object was in S3"
    );
    let out = m.sh("sqlite3 $M/db 'select count(*) from t; pragma integrity_check;'");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["3", "ok"]);
    m.finish().await;
}

/// `ls -l` of a directory after a remount: its listing hands the kernel
/// every entry with its attributes, so no entry is looked up one by one
/// (there were 61 lookups before listings did), and what `ls -l` shows is
/// what was written.
#[tokio::test]
async fn ls_l_after_a_remount_looks_up_no_entry_one_by_one() {
    let mut m = Mounted::new("plus");
    // Long enough that no entry's attributes expire while `ls` runs.
    m.mount_args = ["--metadata-ttl", "60s"].map(String::from).to_vec();
    let mut m = m.mount();
    m.sh("mkdir $M/d $M/d/sub && for i in $(seq 1 60); do echo $i > $M/d/f$i; done && chmod 600 $M/d/f7");
    m.remount();
    m.sh("stat $M/d >/dev/null");
    let lookups = |m: &Mounted| stats(m)["lookups"].as_u64().expect("lookups counted");
    let before = lookups(&m);
    let out = m.sh("ls -l $M/d");
    let looked_up = lookups(&m) - before;
    assert!(
        looked_up < 5,
        "{looked_up} lookups for `ls -l` of 61 entries"
    );
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 61, "{out}");
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not listed: {out}"))
    };
    assert!(line("f7").starts_with("-rw------- 1 "), "{out}");
    assert!(line("f12").starts_with("-rw-r--r-- 1 "), "{out}");
    assert!(line("sub").starts_with("drwxr-xr-x 2 "), "{out}");
    m.sh("test $(stat -c %s $M/d/f12) = 3 && test \"$(cat $M/d/f60)\" = 60");
    m.finish().await;
}

#[tokio::test]
async fn the_stats_attribute_is_read_only_json_on_the_root() {
    let m = Mounted::new("stats").mount();
    m.sh("echo hi > $M/f && cat $M/f >/dev/null");
    let s = stats(&m);
    assert!(count(&s, "s3", "PUT") >= 1, "{s}");
    assert!(count(&s, "kms", "GenerateDataKey") >= 1, "{s}");
    m.sh("! setfattr -n user.sealfs.stats -v x $M 2>err && grep -q 'Permission denied' err");
    // Only the root answers; elsewhere it is an ordinary (absent) attribute.
    m.sh("! getfattr -n user.sealfs.stats $M/f 2>/dev/null");
    m.finish().await;
}

#[tokio::test]
async fn new_files_cost_one_kms_call_per_branch_key() {
    let mut m = Mounted::new("branches");
    m.mount_args = ["--branch-files", "4"].map(String::from).to_vec();
    let mut m = m.mount();
    let kms = |m: &Mounted, call: &str| count(&stats(m), "kms", call);
    let start = kms(&m, "GenerateDataKey");
    m.sh("for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > $M/f$i; done");
    // Ten files, four per branch: three branch keys, no per-file call.
    assert_eq!(kms(&m, "GenerateDataKey") - start, 3);
    // After a remount, reading them unwraps each branch key once.
    m.mount_args = vec![];
    m.remount();
    let (generated, decrypted) = (kms(&m, "GenerateDataKey"), kms(&m, "Decrypt"));
    let out = m.sh("cat $M/f*");
    assert_eq!(out.lines().count(), 10, "{out}");
    assert_eq!(kms(&m, "Decrypt") - decrypted, 3);
    // With the default (10,000 files per branch), 20 new files take one.
    m.sh("for i in $(seq 1 20); do echo $i > $M/g$i; done");
    assert_eq!(kms(&m, "GenerateDataKey") - generated, 1);
    assert_eq!(m.sh("cat $M/f7 $M/g20"), "7\n20\n");
    m.finish().await;
}

/// `ls -l` of a directory of more than one LIST page: a cold listing that
/// has to HEAD entries writes the directory's attribute index; later cold
/// listings read it (one GET) and HEAD nothing; past the TTL, a
/// `stat` of every entry is revalidated by LISTs of the directory, not a
/// HEAD each.
#[tokio::test]
async fn a_cold_ls_l_reads_the_attribute_index_and_stale_entries_cost_a_list() {
    let mut m = Mounted::new("big-ls").mount();
    m.sh("mkdir $M/d && cd $M/d && seq -f 'f%04g' 1 1500 | xargs touch && chmod 600 f00*");
    // Past the second of the last change, LIST can vouch for what is read.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    m.remount();
    let first = m.sh("ls -l $M/d");
    assert_eq!(first.lines().count(), 1501);

    m.remount();
    let before = stats(&m);
    assert_eq!(m.sh("ls -l $M/d"), first);
    let after = stats(&m);
    let d = |op| count(&after, "s3", op) - count(&before, "s3", op);
    assert!(d("HEAD") <= 3, "{} HEADs", d("HEAD"));
    assert_eq!(d("GET"), 1, "the index");

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = stats(&m);
    let modes = m.sh("stat -c '%a' $M/d/* | sort | uniq -c");
    let after = stats(&m);
    let d = |op| count(&after, "s3", op) - count(&before, "s3", op);
    assert!(
        modes.contains(" 99 600") && modes.contains(" 1401 644"),
        "{modes}"
    );
    assert!(d("HEAD") <= 3, "{} HEADs", d("HEAD"));
    assert!(d("LIST") <= 6, "{} LISTs", d("LIST"));
    m.finish().await;
}
