"""After the suite: every object in the test bucket is read raw and must not
contain the plaintext marker that the tests write into their files
(tests/common/mod.rs, MARKER). Run by scripts/test with the admin credentials."""
import sys

import boto3

MARKER = b"SEALFS-TEST-PLAINTEXT-MARKER"
bucket = sys.argv[1]
s3 = boto3.client("s3")
count = 0
leaks = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for o in page.get("Contents", []):
        count += 1
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        if MARKER in body:
            leaks.append(o["Key"])
if leaks:
    print(f"plaintext scan: marker found in {len(leaks)} of {count} objects: {leaks[:10]}")
    sys.exit(1)
print(f"plaintext scan: {count} objects in s3://{bucket}, no plaintext marker")
