//! Who a file can be shared with, named the way people write it, and where
//! that grantee's grant policies live.
//!
//! A grantee is an IAM user (`alice`, `user/alice`), a role
//! (`role/analytics-reader`: everyone who assumes it, people signed in
//! through Identity Center or federation, and services) or a group
//! (`group/finance`: its members), or the ARN of any of them. Each has its
//! own policy path under [`POLICY_PATH`], so the grants of user `x`, role
//! `x` and group `x` never mix: `/sealfs/x/`, `/sealfs/role/x/`,
//! `/sealfs/group/x/`. (A user named `role` keeps `/sealfs/role/`, which a
//! path with one more component never equals; lookups compare whole paths.)
//! Pure: nothing here calls IAM.

use super::expiry::Until;
use super::POLICY_PATH;
use std::fmt;
use std::time::SystemTime;

/// The kind of IAM identity a grant policy is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GranteeKind {
    User,
    Role,
    Group,
}

impl GranteeKind {
    /// As in ARNs and in `role/NAME`.
    pub fn as_str(self) -> &'static str {
        match self {
            GranteeKind::User => "user",
            GranteeKind::Role => "role",
            GranteeKind::Group => "group",
        }
    }

    /// IAM's longest name of this kind.
    fn max_name(self) -> usize {
        match self {
            GranteeKind::Group => 128,
            GranteeKind::User | GranteeKind::Role => 64,
        }
    }
}

/// One grantee: its kind and its IAM name (without the IAM path).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grantee {
    pub kind: GranteeKind,
    pub name: String,
}

/// A grantee as written by someone: the grantee, and the ARN when it was
/// given as one (which IAM's answer must then match: an ARN of another
/// account or path names someone else).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub grantee: Grantee,
    pub arn: Option<String>,
}

/// IAM names: letters, digits and `+=,.@_-`.
fn valid_name(kind: GranteeKind, name: &str) -> bool {
    (1..=kind.max_name()).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

impl Grantee {
    pub fn user(name: &str) -> Grantee {
        Grantee {
            kind: GranteeKind::User,
            name: name.to_string(),
        }
    }

    /// Reads `alice`, `user/alice`, `role/NAME`, `group/NAME`, or an IAM ARN
    /// `arn:PARTITION:iam::ACCOUNT:{user,role,group}/[PATH/]NAME`. A role
    /// session's ARN (`arn:aws:sts::…:assumed-role/ROLE/SESSION`) is refused
    /// with the `role/ROLE` to write instead: sessions come and go, the role
    /// stays.
    pub fn parse(who: &str) -> Result<Named, String> {
        let who = who.trim();
        if let Some(rest) = who.strip_prefix("arn:") {
            let fields: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, service, region, account, resource] = fields[..] else {
                return Err(format!("{who:?} is not an IAM ARN"));
            };
            if service == "sts" {
                if let Some(role) = resource
                    .strip_prefix("assumed-role/")
                    .and_then(|r| r.split('/').next())
                {
                    return Err(format!(
                        "{who:?} is a role session; share with the role: role/{role}"
                    ));
                }
            }
            if service != "iam"
                || !region.is_empty()
                || account.len() != 12
                || !account.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "{who:?} is not the ARN of an IAM user, role or group"
                ));
            }
            let (kind, path_and_name) = split_kind(resource)
                .ok_or_else(|| format!("{who:?} is not the ARN of an IAM user, role or group"))?;
            let name = path_and_name.rsplit('/').next().unwrap_or(path_and_name);
            let grantee = Grantee::checked(kind, name).ok_or_else(|| {
                format!("{who:?} does not end in a valid IAM {} name", kind.as_str())
            })?;
            return Ok(Named {
                grantee,
                arn: Some(who.to_string()),
            });
        }
        let (kind, name) = split_kind(who).unwrap_or((GranteeKind::User, who));
        let grantee = Grantee::checked(kind, name).ok_or_else(|| {
            format!(
                "{who:?} is not an IAM user name, role/NAME or group/NAME (names are 1 to {} \
                 letters, digits and +=,.@_-)",
                kind.max_name()
            )
        })?;
        Ok(Named { grantee, arn: None })
    }

    fn checked(kind: GranteeKind, name: &str) -> Option<Grantee> {
        valid_name(kind, name).then(|| Grantee {
            kind,
            name: name.to_string(),
        })
    }

    /// The IAM path of this grantee's grant policies.
    pub fn policy_path(&self) -> String {
        match self.kind {
            GranteeKind::User => format!("{POLICY_PATH}{}/", self.name),
            kind => format!("{POLICY_PATH}{}/{}/", kind.as_str(), self.name),
        }
    }

    /// The grantee whose policies live at `path`; `None` for any other path
    /// (left alone: sealfs never rewrites a policy it cannot place).
    pub fn of_policy_path(path: &str) -> Option<Grantee> {
        let inner = path.strip_prefix(POLICY_PATH)?.strip_suffix('/')?;
        let g = match inner.split('/').collect::<Vec<_>>()[..] {
            [name] => Grantee::checked(GranteeKind::User, name)?,
            ["role", name] => Grantee::checked(GranteeKind::Role, name)?,
            ["group", name] => Grantee::checked(GranteeKind::Group, name)?,
            _ => return None,
        };
        (g.policy_path() == path).then_some(g)
    }

    /// The name of this grantee's `n`th grant policy (IAM policy names are
    /// unique in an account and at most 128 characters: a long group name is
    /// cut, and a taken name is skipped by the caller).
    pub fn policy_name(&self, n: usize) -> String {
        let prefix = match self.kind {
            GranteeKind::User => "sealfs-".to_string(),
            kind => format!("sealfs-{}-", kind.as_str()),
        };
        let suffix = format!("-{n}");
        let room = 128usize.saturating_sub(prefix.len() + suffix.len());
        let name: String = self.name.chars().take(room).collect();
        format!("{prefix}{name}{suffix}")
    }
}

/// Whether the group with ARN `arn` sits at the IAM path [`POLICY_PATH`]
/// (or below): the only groups the owner policy lets grants be attached to
/// (`group/sealfs/*`), and so the only ones that can hold grants.
pub fn group_may_hold_grants(arn: &str) -> bool {
    arn.contains(&format!(":group{POLICY_PATH}"))
}

/// `user/…`, `role/…`, `group/…` split into kind and rest.
fn split_kind(s: &str) -> Option<(GranteeKind, &str)> {
    let (kind, rest) = s.split_once('/')?;
    let kind = match kind {
        "user" => GranteeKind::User,
        "role" => GranteeKind::Role,
        "group" => GranteeKind::Group,
        _ => return None,
    };
    Some((kind, rest))
}

/// Users as their bare name (as grants to users have always been shown),
/// roles and groups as `role/NAME` and `group/NAME`: what [`Grantee::parse`] reads.
impl fmt::Display for Grantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            GranteeKind::User => f.write_str(&self.name),
            kind => write!(f, "{}/{}", kind.as_str(), self.name),
        }
    }
}

/// A grantee equals the way [`fmt::Display`] writes it (`alice`, `role/x`).
impl PartialEq<&str> for Grantee {
    fn eq(&self, other: &&str) -> bool {
        match self.kind {
            GranteeKind::User => self.name == *other,
            kind => other.split_once('/') == Some((kind.as_str(), self.name.as_str())),
        }
    }
}

/// One grantee in a `user.share` value or on the command line, with the
/// share's end: `alice`, `alice;for=7d`, `role/x;until=2027-01-31`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub named: Named,
    pub until: Option<Until>,
}

impl Request {
    /// Reads one item; `now` turns `for=` into an end. An end already
    /// passed is refused (it would grant nothing).
    pub fn parse(item: &str, now: SystemTime) -> Result<Request, String> {
        let mut parts = item.split(';');
        let named = Grantee::parse(parts.next().unwrap_or_default())?;
        let mut until = None;
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("{option:?}: write for=7d or until=2027-01-31"))?;
            if until.is_some() {
                return Err(format!("{item:?}: give one end (for= or until=), not two"));
            }
            until = Some(match key.trim() {
                "for" => {
                    let d = Until::parse_duration(value)?;
                    Until::after(now, d).ok_or_else(|| format!("{value:?} ends too late"))?
                }
                "until" => Until::parse_date(value)?,
                other => {
                    return Err(format!(
                        "{other:?} is not a share option (for=7d, until=2027-01-31)"
                    ))
                }
            });
        }
        if let Some(u) = until {
            if u.has_passed(now) {
                return Err(format!("{item:?}: the end {u} has already passed"));
            }
        }
        Ok(Request { named, until })
    }

    /// How a grant is shown (`getfattr -n user.share`, `sealfs shares`), in
    /// the form [`Request::parse`] reads back.
    pub fn show(grantee: &impl fmt::Display, until: Option<Until>) -> String {
        match until {
            None => grantee.to_string(),
            Some(u) => format!("{grantee};until={}", u.iso8601()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(who: &str) -> Grantee {
        Grantee::parse(who).unwrap().grantee
    }

    #[test]
    fn the_ways_people_name_grantees() {
        assert_eq!(parsed("alice"), Grantee::user("alice"));
        assert_eq!(parsed(" user/alice "), Grantee::user("alice"));
        let role = parsed("role/analytics-reader");
        assert_eq!(
            (role.kind, role.name.as_str()),
            (GranteeKind::Role, "analytics-reader")
        );
        let group = parsed("group/finance");
        assert_eq!(
            (group.kind, group.name.as_str()),
            (GranteeKind::Group, "finance")
        );
        let n = Grantee::parse("arn:aws:iam::123456789012:role/service/ci-runner").unwrap();
        assert_eq!(n.grantee.kind, GranteeKind::Role);
        assert_eq!(n.grantee.name, "ci-runner");
        assert_eq!(
            n.arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/service/ci-runner")
        );
        let n = Grantee::parse("arn:aws-cn:iam::123456789012:group/finance").unwrap();
        assert_eq!(n.grantee.kind, GranteeKind::Group);
        assert_eq!(
            parsed("arn:aws:iam::123456789012:user/a/b/carol"),
            Grantee::user("carol")
        );
    }

    #[test]
    fn what_is_not_a_grantee_is_refused_with_the_reason() {
        let long = "x".repeat(65);
        for bad in [
            "",
            "a b",
            "role/",
            "group/x/y",
            "bucket/alice",
            "alice;rm",
            long.as_str(),
            "arn:aws:iam::123456789012:policy/p",
            "arn:aws:s3:::bucket/alice",
            "arn:aws:iam::12345:user/alice",
            "arn:aws:iam:us-east-1:123456789012:user/alice",
            "arn:aws:iam::123456789012:user/",
            "arn:aws:iam",
        ] {
            assert!(Grantee::parse(bad).is_err(), "{bad:?}");
        }
        let e = Grantee::parse("arn:aws:sts::123456789012:assumed-role/reader/alice@example.com")
            .unwrap_err();
        assert!(e.contains("role/reader"), "{e}");
        // Group names may be longer than user and role names.
        assert!(Grantee::parse(&format!("group/{}", "g".repeat(128))).is_ok());
        assert!(Grantee::parse(&format!("role/{}", "r".repeat(65))).is_err());
    }

    #[test]
    fn each_grantee_has_its_own_policy_path() {
        let paths: Vec<String> = ["x", "role/x", "group/x", "role", "group"]
            .iter()
            .map(|w| parsed(w).policy_path())
            .collect();
        assert_eq!(
            paths,
            [
                "/sealfs/x/",
                "/sealfs/role/x/",
                "/sealfs/group/x/",
                "/sealfs/role/",
                "/sealfs/group/"
            ]
        );
        for w in ["x", "role/x", "group/x", "role", "group"] {
            let g = parsed(w);
            assert_eq!(Grantee::of_policy_path(&g.policy_path()), Some(g));
        }
        for other in [
            "/sealfs/",
            "/sealfs/a/b/",
            "/sealfs/role/x",
            "/other/x/",
            "/sealfs/user/x/",
        ] {
            assert_eq!(Grantee::of_policy_path(other), None, "{other}");
        }
    }

    #[test]
    fn policy_names_fit_iam() {
        assert_eq!(Grantee::user("alice").policy_name(1), "sealfs-alice-1");
        assert_eq!(parsed("role/r").policy_name(2), "sealfs-role-r-2");
        let long = parsed(&format!("group/{}", "g".repeat(128)));
        assert_eq!(long.policy_name(10).len(), 128);
        assert!(long.policy_name(10).ends_with("-10"));
    }

    #[test]
    fn share_requests_carry_an_end() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let r = Request::parse("alice", now).unwrap();
        assert_eq!((r.named.grantee, r.until), (Grantee::user("alice"), None));
        let r = Request::parse("role/x;for=7d", now).unwrap();
        assert_eq!(r.until.unwrap().unix(), 1_800_000_000 + 7 * 86_400);
        let r = Request::parse("group/f;until=2099-01-31", now).unwrap();
        let shown = Request::show(&r.named.grantee, r.until);
        assert_eq!(shown, "group/f;until=2099-02-01T00:00:00Z");
        assert_eq!(Request::parse(&shown, now).unwrap(), r);
        for bad in [
            "alice;for=7",
            "alice;until=2020-01-01",
            "alice;for=7d;until=2099-01-01",
            "alice;forever",
            "alice;ttl=7d",
            ";for=7d",
        ] {
            assert!(Request::parse(bad, now).is_err(), "{bad}");
        }
    }

    proptest! {
        /// What is shown reads back as the same grantee, and its policy path
        /// names it and no other.
        #[test]
        fn shown_grantees_read_back(kind in 0..3u8, name in "[A-Za-z0-9+=,.@_-]{1,64}") {
            let kind = [GranteeKind::User, GranteeKind::Role, GranteeKind::Group][kind as usize];
            let g = Grantee { kind, name };
            prop_assert_eq!(&parsed(&g.to_string()), &g);
            prop_assert_eq!(Grantee::of_policy_path(&g.policy_path()), Some(g.clone()));
            prop_assert!(g.policy_name(99).len() <= 128);
        }

        #[test]
        fn any_text_is_a_grantee_or_refused(s in "\\PC{0,80}|arn:[a-z:/0-9-]{0,60}") {
            if let Ok(n) = Grantee::parse(&s) {
                prop_assert!(valid_name(n.grantee.kind, &n.grantee.name));
            }
        }
    }
}
