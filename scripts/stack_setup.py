"""Creates the users, bucket and KMS key of the local stack (run by scripts/stack up).

Runs while moto still accepts any credentials; scripts/stack switches IAM
enforcement on right after. Writes one env file per user and stack.env.
"""
import json
import os
import sys

import boto3

endpoint, out = sys.argv[1], sys.argv[2]
region = "us-east-1"
bucket = "sealfs-test"


def client(name):
    return boto3.client(name, endpoint_url=endpoint, region_name=region)


iam, s3, kms = client("iam"), client("s3"), client("kms")

ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


# What `sealfs policy grantee` prints, with the resources moto can match:
# it sees every non-S3 resource as "*", so a statement naming an IAM ARN
# would never apply here.
GRANTEE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "SealfsFindMyGrants", "Effect": "Allow", "Action": ["iam:ListAttachedUserPolicies", "iam:ListGroupsForUser", "iam:ListAttachedRolePolicies", "iam:ListAttachedGroupPolicies"], "Resource": "*"},
        {"Sid": "SealfsReadMyGrants", "Effect": "Allow", "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"], "Resource": "*"},
    ],
}


def user(name, admin=False):
    iam.create_user(UserName=name)
    if admin:
        iam.put_user_policy(UserName=name, PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
    else:
        iam.put_user_policy(UserName=name, PolicyName="sealfs-grantee", PolicyDocument=json.dumps(GRANTEE_POLICY))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def write_env(name, key_id, secret):
    path = os.path.join(out, f"{name}.env")
    with open(path, "w") as f:
        f.write(f"export AWS_ACCESS_KEY_ID={key_id}\n")
        f.write(f"export AWS_SECRET_ACCESS_KEY={secret}\n")
        f.write(f"export AWS_REGION={region}\n")
        f.write(f"export AWS_DEFAULT_REGION={region}\n")
        f.write("export AWS_EC2_METADATA_DISABLED=true\n")
        f.write(f"export AWS_ENDPOINT_URL={endpoint}\n")
        # moto cannot keep a user's permissions boundary (PutUserPermissionsBoundary
        # fails), so sharing here skips the client-side boundary check; see docs/SHARING.md.
        f.write("export SEALFS_GRANTEE_BOUNDARY=none\n")
    os.chmod(path, 0o600)


creds = {name: user(name, admin=(name == "admin")) for name in ("admin", "alice", "bob")}
for name, (key_id, secret) in creds.items():
    write_env(name, key_id, secret)

s3.create_bucket(Bucket=bucket)
s3.put_public_access_block(
    Bucket=bucket,
    PublicAccessBlockConfiguration={
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    },
)
key_arn = kms.create_key(Description="sealfs local stack")["KeyMetadata"]["Arn"]
kms.create_alias(AliasName="alias/sealfs-test", TargetKeyId=key_arn)

with open(os.path.join(out, "stack.env"), "w") as f:
    f.write(f"export SEALFS_STACK_ENDPOINT={endpoint}\n")
    f.write(f"export SEALFS_TEST_BUCKET={bucket}\n")
    f.write(f"export SEALFS_TEST_KMS_KEY={key_arn}\n")
    f.write("export SEALFS_TEST_KMS_ALIAS=alias/sealfs-test\n")
    f.write(f"export SEALFS_TEST_ACCOUNT={iam.get_user(UserName='admin')['User']['Arn'].split(':')[4]}\n")
