//! `sealfs audit s3://BUCKET/VOLUME`: the volume's audit trail, every entry
//! verified; an entry that does not verify is named on stderr and makes the
//! command fail, so a script can rely on a zero exit.

use super::owned::OwnedVolume;
use crate::app::Wiring;
use crate::audit::entry::{Entry, Stamp};
use crate::audit::Read;
use crate::grants::expiry::Until;
use crate::url::S3Url;
use anyhow::bail;
use std::time::{Duration, UNIX_EPOCH};

/// `--since`: a day (from its start, UTC) or an instant.
fn since(text: &str) -> anyhow::Result<Stamp> {
    let end = Until::parse_date(text).map_err(anyhow::Error::msg)?;
    // A day alone reads as its end (as a share's end would); here it
    // means its start.
    let whole_day = !text.trim().contains(['T', 't', ' ']);
    let unix = end.unix() - if whole_day { 86_400 } else { 0 };
    Ok(Stamp::of(
        UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    ))
}

/// The short form of an actor's ARN: a user's name, a role session's
/// `role/session`.
fn actor_column(arn: &str) -> String {
    crate::grants::Caller {
        arn: arn.to_string(),
        account: String::new(),
    }
    .display_name()
}

/// What the change did beyond its action: a share's end, a move's new
/// name, a re-key's new file id.
fn detail_column(e: &Entry) -> String {
    match (&e.until, &e.to, &e.new_file_id) {
        (Some(u), _, _) => format!("until {u}"),
        (_, Some(to), _) => format!("to {to}"),
        (_, _, Some(id)) => format!("new id {id}"),
        _ => "-".into(),
    }
}

pub async fn run(
    w: &Wiring,
    url: &S3Url,
    since_text: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let from = since_text.map(since).transpose()?;
    let v = OwnedVolume::at(w, &url.bucket, &url.key).await?;
    let read = v.trail(w).await?.read(from).await?;
    let mut refused = 0;
    let mut shown = 0;
    if !json && read.iter().any(|r| matches!(r, Read::Verified { .. })) {
        println!(
            "{:<24}  {:<16}  {:<10}  {:<20}  {:<28}  FILE",
            "TIME", "ACTOR", "ACTION", "GRANTEE", "DETAIL"
        );
    }
    for r in &read {
        match r {
            Read::Verified { entry, .. } => {
                shown += 1;
                if json {
                    println!("{}", serde_json::to_string(entry)?);
                } else {
                    println!(
                        "{:<24}  {:<16}  {:<10}  {:<20}  {:<28}  {}",
                        entry.time,
                        actor_column(&entry.actor),
                        entry.action.as_str(),
                        entry.grantee,
                        detail_column(entry),
                        entry.file
                    );
                }
            }
            Read::Refused { name, reason } => {
                refused += 1;
                eprintln!("sealfs: audit entry {name} refused: {reason}");
            }
        }
    }
    if refused > 0 {
        bail!(
            "{refused} of {} entries in {url}'s audit trail do not verify (named above); \
             they were not written by an owner of the volume, or were changed since",
            read.len()
        );
    }
    if shown == 0 {
        eprintln!(
            "no audit entries in {url}{}",
            if from.is_some() { " since then" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_a_day_means_from_its_start() {
        assert_eq!(
            since("2026-12-03").unwrap().iso8601(),
            "2026-12-03T00:00:00.000Z"
        );
        assert_eq!(
            since("2026-12-03T06:30:00Z").unwrap().iso8601(),
            "2026-12-03T06:30:00.000Z"
        );
        assert!(since("yesterday").is_err());
    }

    #[test]
    fn the_actor_column_is_the_short_name() {
        assert_eq!(actor_column("arn:aws:iam::1:user/ops/alice"), "alice");
        assert_eq!(
            actor_column("arn:aws:sts::1:assumed-role/admin/jo"),
            "admin/jo"
        );
    }
}
