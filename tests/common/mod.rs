//! Shared helpers of the tests that run against the local AWS stack
//! (`scripts/stack up`, started by `scripts/test`).

#![allow(dead_code)]

pub mod mounted;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Stack {
    dir: PathBuf,
    vars: HashMap<String, String>,
}

fn parse_env(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. These tests need the local AWS stack: run scripts/test, or scripts/stack up first",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Stack {
    pub fn get() -> Stack {
        let dir = std::env::var_os("SEALFS_STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack"));
        let vars = parse_env(&dir.join("stack.env"));
        Stack { dir, vars }
    }

    pub fn var(&self, k: &str) -> &str {
        &self.vars[k]
    }

    pub fn bucket(&self) -> &str {
        self.var("SEALFS_TEST_BUCKET")
    }

    pub fn kms_key(&self) -> &str {
        self.var("SEALFS_TEST_KMS_KEY")
    }

    pub fn endpoint(&self) -> &str {
        self.var("SEALFS_STACK_ENDPOINT")
    }

    pub fn user_env(&self, user: &str) -> HashMap<String, String> {
        let made = self.dir.join("test-users").join(format!("{user}.env"));
        if made.exists() {
            return parse_env(&made);
        }
        parse_env(&self.dir.join(format!("{user}.env")))
    }

    pub fn iam(&self, user: &str) -> aws_sdk_iam::Client {
        let conf = aws_sdk_iam::Config::builder()
            .behavior_version_latest()
            .credentials_provider(self.creds(user))
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_iam::Client::from_conf(conf)
    }

    /// A new IAM user named `<prefix>-<random>` with its own access key (and
    /// env file, so [`Stack::sealfs`] can run as it) and, if given, an
    /// inline policy. Tests make their own users so they never share state.
    pub async fn new_user(&self, prefix: &str, policy: Option<&serde_json::Value>) -> String {
        use rand::Rng;
        let name = format!("{prefix}-{:08x}", rand::thread_rng().gen::<u32>());
        let iam = self.iam("admin");
        iam.create_user().user_name(&name).send().await.unwrap();
        if let Some(p) = policy {
            iam.put_user_policy()
                .user_name(&name)
                .policy_name("test-policy")
                .policy_document(p.to_string())
                .send()
                .await
                .unwrap();
        }
        let key = iam
            .create_access_key()
            .user_name(&name)
            .send()
            .await
            .unwrap();
        let key = key.access_key().unwrap();
        let mut env = self.user_env("admin");
        env.insert("AWS_ACCESS_KEY_ID".into(), key.access_key_id().into());
        env.insert(
            "AWS_SECRET_ACCESS_KEY".into(),
            key.secret_access_key().into(),
        );
        self.write_user_env(&name, &env);
        name
    }

    /// A new role named `<prefix>-<random>` carrying `policy` inline, and a
    /// session of it: a new user allowed to assume the role assumes it, and
    /// the session's temporary credentials get an env file, so
    /// [`Stack::sealfs`] can run as the session. Returns (role, session).
    pub async fn new_role_session(
        &self,
        prefix: &str,
        policy: &serde_json::Value,
    ) -> (String, String) {
        let assume = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}
        ]});
        let assumer = self.new_user(&format!("{prefix}-as"), Some(&assume)).await;
        let iam = self.iam("admin");
        let role = format!("{prefix}-{:08x}", rand::random::<u32>());
        let account = self.var("SEALFS_TEST_ACCOUNT");
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:user/{assumer}")},
            "Action": "sts:AssumeRole"
        }]});
        let made = iam
            .create_role()
            .role_name(&role)
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .unwrap();
        iam.put_role_policy()
            .role_name(&role)
            .policy_name("test-policy")
            .policy_document(policy.to_string())
            .send()
            .await
            .unwrap();
        let conf = aws_sdk_sts::Config::builder()
            .behavior_version_latest()
            .credentials_provider(self.creds(&assumer))
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .build();
        let out = aws_sdk_sts::Client::from_conf(conf)
            .assume_role()
            .role_arn(made.role().unwrap().arn())
            .role_session_name("test")
            .send()
            .await
            .unwrap();
        let c = out.credentials().unwrap();
        let mut env = self.user_env("admin");
        env.insert("AWS_ACCESS_KEY_ID".into(), c.access_key_id().into());
        env.insert("AWS_SECRET_ACCESS_KEY".into(), c.secret_access_key().into());
        env.insert("AWS_SESSION_TOKEN".into(), c.session_token().into());
        let session = format!("{role}-session");
        self.write_user_env(&session, &env);
        (role, session)
    }

    fn write_user_env(&self, name: &str, env: &HashMap<String, String>) {
        let text: String = env
            .iter()
            .map(|(k, v)| format!("export {k}={v}\n"))
            .collect();
        let dir = self.dir.join("test-users");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.env")), text).unwrap();
    }

    /// The sealfs binary as `user`, with no AWS setting inherited from the
    /// caller except AWS_CA_BUNDLE (which this machine exports, and which
    /// sealfs must cope with against an http endpoint).
    pub fn sealfs(&self, user: &str, config_dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealfs"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("AWS_") && k != "AWS_CA_BUNDLE" {
                cmd.env_remove(&k);
            }
        }
        cmd.env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("SEALFS_CONFIG_DIR", config_dir)
            // moto cannot keep user permissions boundaries (docs/SHARING.md);
            // the boundary check itself is tested against the fake IAM and,
            // for its refusal, through a mount in tests/attacker.rs.
            .env("SEALFS_GRANTEE_BOUNDARY", "none")
            .env_remove("SEALFS_LOG")
            .envs(self.user_env(user));
        cmd
    }

    fn creds(&self, user: &str) -> aws_sdk_s3::config::Credentials {
        let env = self.user_env(user);
        aws_sdk_s3::config::Credentials::new(
            env["AWS_ACCESS_KEY_ID"].clone(),
            env["AWS_SECRET_ACCESS_KEY"].clone(),
            None,
            None,
            "stack",
        )
    }

    /// A raw S3 client as `user`, for looking at (and tampering with) objects.
    pub fn s3(&self, user: &str) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .credentials_provider(self.creds(user))
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn kms(&self, user: &str) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version_latest()
            .credentials_provider(self.creds(user))
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }
}

/// A prefix no other test uses.
pub fn unique(name: &str) -> String {
    use rand::Rng;
    format!("t/{name}-{:08x}", rand::thread_rng().gen::<u32>())
}

/// Runs a command, returning its output; panics if it could not be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Deterministic pseudo-random bytes with a recognisable marker every 4 KiB,
/// so that a scan of the raw objects can prove no plaintext reached S3.
pub fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for chunk in v.chunks_mut(4096) {
        let m = &MARKER[..MARKER.len().min(chunk.len())];
        chunk[..m.len()].copy_from_slice(m);
    }
    v
}

pub const MARKER: &[u8] = b"SEALFS-TEST-PLAINTEXT-MARKER";

/// The grantee's sealfs grant policies, as IAM holds them now.
pub async fn grant_docs(
    stack: &Stack,
    grantee: &str,
) -> Vec<(String, sealfs::grants::GrantDoc, usize)> {
    let iam = stack.iam("admin");
    let listed = iam
        .list_policies()
        .path_prefix(format!("/sealfs/{grantee}/"))
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for p in listed.policies() {
        let v = iam
            .get_policy_version()
            .policy_arn(p.arn().unwrap())
            .version_id(p.default_version_id().unwrap())
            .send()
            .await
            .unwrap();
        let raw = v.policy_version().unwrap().document().unwrap().to_string();
        let doc = sealfs::grants::GrantDoc::parse(&raw).unwrap();
        let size = doc.size();
        out.push((p.policy_name().unwrap().to_string(), doc, size));
    }
    out
}

/// A policy as moto can evaluate it: moto sees every non-S3 resource as
/// "*", so statements naming KMS keys or IAM ARNs would never match there;
/// and a Deny scoped to such a resource would deny the action everywhere,
/// so those are left out (their text is asserted by the unit tests of
/// `sealfs policy`).
pub fn for_moto(mut policy: serde_json::Value) -> serde_json::Value {
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|st| st["Effect"] != "Deny");
    for st in policy["Statement"].as_array_mut().unwrap() {
        let s3 = st["Resource"]
            .as_str()
            .is_some_and(|r| r.starts_with("arn:aws:s3"));
        if !s3 {
            st["Resource"] = serde_json::json!("*");
        }
    }
    policy
}
