//! Attribute changes: chmod, chown, utimens and truncate (`setattr`).
//! Attributes reach S3 through [`super::metadata`], or with the next
//! upload of a file's dirty content.

use super::attr::{Kind, SetAttr};
use super::{Entry, SealFs};
use crate::error::{Error, Result};
use libc::{EINVAL, EISDIR};

impl SealFs {
    pub async fn setattr(&self, ino: u64, set: SetAttr) -> Result<Entry> {
        self.check_writable()?;
        self.settle(ino).await?;
        let kind = self.entry(ino)?.attr.kind;
        let mut staged = self.staged(ino);
        let mut upload_now = false;
        if let Some(size) = set.size {
            if kind != Kind::File {
                return Err(Error::posix(
                    if kind == Kind::Dir { EISDIR } else { EINVAL },
                    "truncate of a non-file",
                ));
            }
            let s = match &staged {
                Some(s) => s.clone(),
                None => {
                    upload_now = true;
                    self.stage(ino, size == 0).await?
                }
            };
            s.lock().await.set_len(size)?;
            staged = Some(s);
        }
        self.ns.set_attributes(ino, &set)?;
        match staged {
            Some(s) if set.size.is_some() => {
                s.lock().await.make_dirty();
                if upload_now {
                    // Staged for this truncate only: committed now, and
                    // dropped unless a writer opened it meanwhile.
                    let r = self.commit(ino, &s).await;
                    self.ns.staging_ended(ino, false);
                    r?;
                }
            }
            _ => self.persist_meta(ino).await?,
        }
        self.entry(ino)
    }
}
