"""moto_server for the local stack, with one emulator gap closed.

moto knows the resource of S3 requests only; for every other service (KMS,
IAM) it evaluates identity policies against the resource "*". A statement
that names a resource, as least-privilege policies do (sealfs grants allow
kms:Decrypt on the volume's key ARN), then never matches, and what AWS would
allow is denied. Here, when the request's resource is unknown ("*"), a
statement's Resource element is taken to match: statements apply by action,
as moto already does for statements written with Resource "*". moto still
ignores conditions. docs/SHARING.md ("Testing") says what this stack
enforces and what the tests assert as policy text instead.
"""

import sys

from moto.iam import access_control

_check_element_matches = access_control.IAMPolicyStatement._check_element_matches


def _matches(self, statement_element, value):
    if statement_element == "Resource" and value == "*":
        return True
    return _check_element_matches(self, statement_element, value)


access_control.IAMPolicyStatement._check_element_matches = _matches

from moto.server import main  # noqa: E402  (after the patch)

if __name__ == "__main__":
    sys.exit(main())
