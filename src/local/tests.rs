//! The local key: wrapped by KMS under the volume's key, and nothing else.

use super::*;
use crate::keys::FakeKms;

#[tokio::test]
async fn the_local_key_is_created_once_and_unwrapped_by_the_next_mount() {
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::new();
    let arn = kms.add_key();
    let a = LocalKey::load_or_create(dir.path(), &kms, &arn)
        .await
        .unwrap();
    let b = LocalKey::load_or_create(dir.path(), &kms, &arn)
        .await
        .unwrap();
    let r = dir.path().join("r");
    a.write_record(&r, "journal", &"hello", false).unwrap();
    assert_eq!(
        b.read_record::<String>(&r, "journal").as_deref(),
        Some("hello")
    );
    assert_eq!(
        b.read_record::<String>(&r, "spool"),
        None,
        "bound to its purpose"
    );
    let file = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
    assert!(!file.contains(&hex::encode(a.secret().record_cipher_probe())));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_key_file_under_another_kms_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::new();
    let (mine, other) = (kms.add_key(), kms.add_key());
    LocalKey::load_or_create(dir.path(), &kms, &other)
        .await
        .unwrap();
    let e = LocalKey::load_or_create(dir.path(), &kms, &mine)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("another volume"), "{e}");
    // A key file edited to name this volume's key does not unwrap under it.
    let path = dir.path().join(KEY_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&other, &mine);
    std::fs::write(&path, text).unwrap();
    assert!(LocalKey::load_or_create(dir.path(), &kms, &mine)
        .await
        .is_err());
}
