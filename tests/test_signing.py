"""Known-answer tests: our signer and the emulator's checker agree with the official SDK."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from multidict import CIMultiDict

from uploader.api.signing import authorization, canonical_query
from uploader.emulator._auth import AuthFailure, verify_api_request

AK, SK, PROJECT = "HPUAEXAMPLEAK0001", "sk-example-1234567890", "p0123456789abcdef"
DATE = datetime(2026, 11, 21, 8, 30, 5, tzinfo=UTC)
JOBS = f"/v1/{PROJECT}/digital-human-training-manage/user/jobs"

CASES = [
    pytest.param("GET", JOBS, [("limit", "10"), ("state", "WAIT_FILE_UPLOAD,TRAINING"),
                               ("offset", "0")], b"", id="get-with-query"),
    pytest.param("GET", JOBS, [("name", "demo video ~x/y"),
                               ("create_since", "2026-01-01T00:00:00Z")],
                 b"", id="query-needing-encoding"),
    pytest.param("PUT", f"{JOBS}/0a1b2c", [], b'{"video_multipart_count": 3}', id="put-json"),
    pytest.param("POST", f"{JOBS}/0a1b2c/command", [], b'{"command": "GET_MULTIPART_UPLOADED"}',
                 id="post-json"),
    pytest.param("GET", f"{JOBS}/job%20with%20spaces%2B%26", [], b"",
                 id="percent-encoded-segment"),
    pytest.param("POST", JOBS, [],
                 '{"name": "数字人 训练视频", "video_multipart_count": 8}'.encode(),
                 id="non-ascii-body"),
]


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Host": "metastudio.cn-north-4.myhuaweicloud.com",
            "X-Project-Id": PROJECT, "X-Sdk-Date": DATE.strftime("%Y%m%dT%H%M%SZ")}


def _sdk_authorization(method: str, path: str, query: list[tuple[str, str]], body: bytes) -> str:
    request = SdkRequest(method=method, schema="https", host=_headers()["Host"],
                         resource_path=path, query_params=list(query), header_params=_headers(),
                         body=body)
    signed = Signer(SimpleNamespace(ak=AK, sk=SK)).sign(request)
    return str(signed.header_params["Authorization"])


@pytest.mark.parametrize(("method", "path", "query", "body"), CASES)
def test_our_authorization_equals_the_official_sdk(method, path, query, body):
    ours = authorization(method=method, path=path, query=query, headers=_headers(), body=body,
                         ak=AK, sk=SK, date=DATE)
    assert ours == _sdk_authorization(method, path, query, body)


@pytest.mark.parametrize(("method", "path", "query", "body"), CASES)
def test_emulator_accepts_what_the_official_sdk_signs(method, path, query, body):
    headers = CIMultiDict(_headers(), Authorization=_sdk_authorization(method, path, query, body))
    signer = verify_api_request(method=method, raw_path=path, query_string=urlencode(query),
                                headers=headers, body=body, secret_of=_secret_of(AK, SK),
                                project_id=PROJECT, now=DATE)
    assert signer == AK


def _secret_of(ak: str, sk: str) -> Callable[[str], str]:
    def secret_of(given: str) -> str:
        if given != ak:
            raise AuthFailure("unknown access key")
        return sk
    return secret_of


def test_a_payload_hash_counts_only_when_it_is_signed():
    """A captured signature replayed with another body and the first body's hash in an
    unsigned X-Sdk-Content-Sha256 header is refused."""
    import hashlib

    method, path, first = "POST", JOBS, b'{"name": "x"}'
    headers = CIMultiDict(_headers(), Authorization=_sdk_authorization(method, path, [], first))
    headers["X-Sdk-Content-Sha256"] = hashlib.sha256(first).hexdigest()
    with pytest.raises(AuthFailure, match="signature"):
        verify_api_request(method=method, raw_path=path, query_string="", headers=headers,
                           body=b'{"name": "other"}', secret_of=_secret_of(AK, SK),
                           project_id=PROJECT, now=DATE)


@pytest.mark.parametrize(("change", "reason"), [
    ({"body": b'{"tampered": true}'}, "signature"),
    ({"sk": "another-secret"}, "signature"),
    ({"ak": "ANOTHERAK"}, "access key"),
    ({"project_id": "another-project"}, "X-Project-Id"),
    ({"now": datetime(2026, 11, 21, 8, 46, 0, tzinfo=UTC)}, "15 minutes"),
])
def test_emulator_refuses_altered_requests(change, reason):
    method, path, query, body = "POST", JOBS, [], b'{"name": "x"}'
    headers = CIMultiDict(_headers(), Authorization=_sdk_authorization(method, path, query, body))
    args = dict(method=method, raw_path=path, query_string="", headers=headers, body=body,
                ak=AK, sk=SK, project_id=PROJECT, now=DATE) | change
    keys = _secret_of(AK, str(args.pop("sk")))
    known = keys if args.pop("ak") == AK else _secret_of("NOT" + AK, SK)
    with pytest.raises(AuthFailure, match=reason):
        verify_api_request(**args, secret_of=known)


def test_canonical_query_sorts_and_encodes():
    assert canonical_query([("b", "x y"), ("a", "1/2"), ("a", "0")]) == "a=0&a=1%2F2&b=x%20y"
