"""An independent implementation of docs/FORMAT.md, written from the document
alone, that recomputes the golden vectors of tests/format.rs and
src/audit/entry.rs and checks every segment opens. scripts/test runs it; any disagreement with the Rust code fails.
"""
import base64
import hashlib
import hmac
import re
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha512).digest()


def expand(prk, label, file_id):
    return HKDFExpand(algorithm=hashes.SHA512(), length=32, info=label + file_id).derive(prk)


def seal(dk, salt, file_id, seg_log2, plaintext):
    prk = hkdf_extract(salt, dk)
    commitment = expand(prk, b"sealfs/v1/commitment", file_id)
    seg_key = expand(prk, b"sealfs/v1/segment", file_id)
    mac_key = expand(prk, b"sealfs/v1/header-mac", file_id)
    bind_key = expand(prk, b"sealfs/v1/path-binding", file_id)
    head = b"SEALFS" + bytes([1, seg_log2]) + file_id + salt + commitment
    header = head + hmac.new(mac_key, head, hashlib.sha256).digest()
    assert len(header) == 120
    aad = hashlib.sha256(header).digest()
    p = 1 << seg_log2
    count = max(1, -(-len(plaintext) // p))
    body = b""
    for i in range(count):
        nonce = b"\0\0\0" + struct.pack(">Q", i) + bytes([1 if i == count - 1 else 0])
        body += AESGCM(seg_key).encrypt(nonce, plaintext[i * p:(i + 1) * p], aad)
    return header + body, bind_key, aad


def binding(bind_key, bucket, key, aad):
    msg = struct.pack(">Q", len(bucket)) + bucket + struct.pack(">Q", len(key)) + key + aad
    return hmac.new(bind_key, msg, hashlib.sha256).hexdigest()


dk = bytes(range(32))
salt = bytes(0x20 + i for i in range(32))
file_id = bytes(0x40 + i for i in range(16))
text = (b"sealfs golden vector. " * 1000)[:10000]
obj, bind_key, aad = seal(dk, salt, file_id, 12, text)
# Sealing fields version 2: a file's data key derives from a branch key.
branch_key = bytes(0x60 + i for i in range(32))
branch_id = bytes(0x80 + i for i in range(16))
file_key = expand(hkdf_extract(branch_id, branch_key), b"sealfs/v2/file-key", file_id)
# Attribute index (volume format 2): the MAC over one index body.
volume_key = bytes(0xA0 + i for i in range(32))
index_prk = hmac.new(bytes(32), volume_key, hashlib.sha256).digest()
index_key = HKDFExpand(algorithm=hashes.SHA256(), length=32,
                       info=b"sealfs/v2/attribute-index").derive(index_prk)


def lp(x):
    return struct.pack(">I", len(x)) + x


index_body = b'{"format":1,"dir":"vol/d/","entries":{}}'
index_mac = hmac.new(index_key, b"sealfs/v2/attribute-index" + lp(b"bucket") + lp(b"vol/d/")
                     + index_body, hashlib.sha256).hexdigest()
# The audit entry (FORMAT.md, "Audit trail").
audit_prk = hmac.new(bytes(32), bytes(range(32)), hashlib.sha256).digest()
audit_key = HKDFExpand(algorithm=hashes.SHA256(), length=32,
                       info=b"sealfs/v1/audit").derive(audit_prk)
audit_name = b"2026-12/20261203T060410.123Z-0000000100000002"
audit_plain = (b'{"v":1,"time":"2026-12-03T06:04:10.123Z","actor":"arn:aws:iam::111122223333:user/carol",'
               b'"action":"share","file":"s3://bucket/vol/report.pdf",'
               b'"file_id":"404142434445464748494a4b4c4d4e4f","grantee":"role/analytics-reader",'
               b'"until":"2026-12-10T06:04:10Z","to":null,"new_file_id":null}')
audit_nonce = bytes(range(0xa0, 0xac))
audit_aad = b"sealfs/v1/audit-entry" + struct.pack(">Q", len(audit_name)) + audit_name
audit_sealed = audit_nonce + AESGCM(audit_key).encrypt(audit_nonce, audit_plain, audit_aad)
audit_body = b'{"v":1,"sealed":"' + base64.b64encode(audit_sealed) + b'"}\n'

got = {
    "GOLDEN_HEADER": obj[:120].hex(),
    "GOLDEN_SHA256": hashlib.sha256(obj).hexdigest(),
    "GOLDEN_BINDING": binding(bind_key, b"bucket", b"prefix/file.txt", aad),
    "GOLDEN_FILE_KEY": file_key.hex(),
    "GOLDEN_INDEX_MAC": index_mac,
    "GOLDEN_AUDIT_BODY": hashlib.sha256(audit_body).hexdigest(),
}
assert len(obj) == 120 + 10000 + 3 * 16

root = Path(__file__).parent.parent
src = "".join((root / f).read_text() for f in ["tests/format.rs", "src/audit/entry.rs"])
failed = 0
for name, value in got.items():
    m = re.search(r'const %s: &str =\s*"([0-9a-f]+)";' % name, src)
    if not m or m.group(1) != value:
        print(f"format reference: {name} differs: the Rust tests have {m and m.group(1)}, reference computes {value}")
        failed += 1
    if "--print" in sys.argv:
        print(f'const {name}: &str = "{value}";')
print(f"format reference: {len(got) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
