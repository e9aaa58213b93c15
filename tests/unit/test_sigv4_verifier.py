"""The local gateway's SigV4 verifier against signatures made by botocore's own signers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from flowforge.local.sigv4 import AuthError, KeyPair, KeyRing, SignedRequest

REGION = "us-east-1"
HOST = "127.0.0.1:3000"
NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
ALICE = KeyPair(
    AccessKeyId="alice", SecretAccessKey="alice-secret", Arn="arn:aws:iam::123456789012:user/alice"
)
TEMPORARY = KeyPair(
    AccessKeyId="ASIATEMP",
    SecretAccessKey="temp-secret",
    Arn="arn:aws:sts::123456789012:assumed-role/Deployer/ci",
    SessionToken="the-session-token",
)
RING = KeyRing([ALICE, TEMPORARY], REGION)


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    pair: KeyPair = ALICE,
    secret: str | None = None,
    token: str | None = None,
    at: datetime = NOW,
    query_auth: bool = False,
    region: str = REGION,
    service: str = "execute-api",
    headers: dict[str, str] | None = None,
) -> SignedRequest:
    """A request signed by botocore at ``at``, as the gateway receives it."""
    credentials = Credentials(pair.AccessKeyId, secret or pair.SecretAccessKey, token or pair.SessionToken)
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = (SigV4QueryAuth if query_auth else SigV4Auth)(credentials, service, region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        signer.add_auth(request)
    parts = urlsplit(request.url)
    sent = [("Host", parts.netloc), *request.headers.items()]
    return SignedRequest(method, parts.path, parts.query, sent, request.body or b"")


def refused(request: SignedRequest, now: datetime = NOW) -> AuthError:
    with pytest.raises(AuthError) as caught:
        RING.verify(request, now)
    assert caught.value.status == 403
    return caught.value


def with_headers(request: SignedRequest, **changes: str) -> SignedRequest:
    names = {name.lower().replace("_", "-"): value for name, value in changes.items()}
    headers = [(n, names.pop(n.lower(), v)) for n, v in request.headers]
    return SignedRequest(
        request.method, request.path, request.query, headers + list(names.items()), request.body
    )


# -- what verifies -----------------------------------------------------------------------------
def test_a_header_signed_post_verifies_as_its_principal():
    # GIVEN a POST with a JSON body, signed in its Authorization header
    request = sign(
        "POST", f"http://{HOST}/graph/create", b'{"start": "a"}', headers={"Content-Type": "application/json"}
    )
    # WHEN it is verified THEN the principal is the key pair's
    principal = RING.verify(request, NOW)
    assert (principal.access_key, principal.arn, principal.account_id) == ("alice", ALICE.Arn, "123456789012")
    assert principal.http_authorizer()["iam"]["userArn"] == ALICE.Arn
    assert principal.user_id.startswith("AIDA")


def test_a_presigned_websocket_handshake_verifies():
    request = sign("GET", f"http://{HOST}/ws?run_id=abc&after=-1", query_auth=True)
    assert "X-Amz-Signature=" in request.query
    assert RING.verify(request, NOW).arn == ALICE.Arn


def test_query_parameters_are_canonicalized_whatever_their_order_and_encoding():
    request = sign("GET", f"http://{HOST}/graphs?limit=20&next_token=a%2Fb%3D")
    reordered = SignedRequest(request.method, request.path, "next_token=a%2fb%3d&limit=20", request.headers)
    assert RING.verify(reordered, NOW).arn == ALICE.Arn


def test_temporary_credentials_verify_with_their_session_token():
    request = sign("GET", f"http://{HOST}/graphs", pair=TEMPORARY)
    principal = RING.verify(request, NOW)
    assert principal.user_id.startswith("AROA") and principal.user_id.endswith(":ci")
    presigned = sign("GET", f"http://{HOST}/ws", pair=TEMPORARY, query_auth=True)
    assert RING.verify(presigned, NOW).arn == TEMPORARY.Arn


def test_a_signature_within_five_minutes_of_the_clock_verifies():
    request = sign("GET", f"http://{HOST}/graphs", at=NOW - timedelta(minutes=4, seconds=59))
    assert RING.verify(request, NOW).arn == ALICE.Arn


# -- what is refused ---------------------------------------------------------------------------
def test_an_unsigned_request_is_missing_its_authentication_token():
    error = refused(SignedRequest("GET", "/graphs", "", [("Host", HOST)]))
    assert (error.error_type, error.message) == (
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )


def test_a_tampered_body_does_not_match_the_signature():
    request = sign("POST", f"http://{HOST}/graph/run", b'{"graph_id": "mine"}')
    tampered = SignedRequest(
        request.method, request.path, request.query, request.headers, b'{"graph_id": "yours"}'
    )
    error = refused(tampered)
    assert error.error_type == "InvalidSignatureException"
    assert error.message.startswith(
        "The request signature we calculated does not match the signature you provided."
    )
    assert "The Canonical String for this request should have been" in error.message


def test_a_tampered_signed_header_does_not_match():
    request = sign("POST", f"http://{HOST}/graph/run", b"{}", headers={"Content-Type": "application/json"})
    error = refused(with_headers(request, content_type="text/plain"))
    assert error.error_type == "InvalidSignatureException"


def test_a_tampered_query_does_not_match_in_either_signing_style():
    for query_auth in (False, True):
        request = sign("GET", f"http://{HOST}/graph/state/r1?after=3", query_auth=query_auth)
        tampered = SignedRequest(
            request.method, request.path, request.query.replace("after=3", "after=-1"), request.headers
        )
        assert refused(tampered).error_type == "InvalidSignatureException"


def test_a_tampered_path_does_not_match():
    request = sign("GET", f"http://{HOST}/graph/state/mine")
    tampered = SignedRequest(request.method, "/graph/state/yours", request.query, request.headers)
    assert refused(tampered).error_type == "InvalidSignatureException"


def test_a_wrong_secret_does_not_match():
    error = refused(sign("GET", f"http://{HOST}/graphs", secret="not-the-secret"))
    assert error.message.startswith("The request signature we calculated does not match")


def test_an_unknown_access_key_is_an_invalid_token():
    stranger = KeyPair(AccessKeyId="mallory", SecretAccessKey="x", Arn=ALICE.Arn)
    error = refused(sign("GET", f"http://{HOST}/graphs", pair=stranger))
    assert (error.error_type, error.message) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_a_clock_skewed_past_five_minutes_is_refused_either_way():
    late = refused(sign("GET", f"http://{HOST}/graphs", at=NOW - timedelta(minutes=6)))
    assert late.message == (
        "Signature expired: 20260615T115400Z is now earlier than 20260615T115500Z (20260615T120000Z - 5 min.)"
    )
    early = refused(sign("GET", f"http://{HOST}/graphs", at=NOW + timedelta(minutes=6)))
    assert early.message.startswith("Signature not yet current: 20260615T120600Z is still later than")


def test_an_expired_presigned_url_is_refused():
    request = sign("GET", f"http://{HOST}/ws", query_auth=True, at=NOW - timedelta(minutes=2))
    expiring = SignedRequest(
        request.method,
        request.path,
        request.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=60"),
        request.headers,
    )
    assert refused(expiring).message.startswith("Signature expired")


def test_a_session_token_must_be_the_one_issued_with_the_keys():
    wrong = sign("GET", f"http://{HOST}/graphs", pair=TEMPORARY, token="another-token")
    assert refused(wrong).error_type == "UnrecognizedClientException"
    signed = sign("GET", f"http://{HOST}/graphs", pair=TEMPORARY)
    stripped = SignedRequest(
        signed.method,
        signed.path,
        signed.query,
        [(n, v) for n, v in signed.headers if n != "X-Amz-Security-Token"],
    )
    assert refused(stripped).error_type == "UnrecognizedClientException"
    # A token sent with long-term keys is not theirs either.
    assert (
        refused(sign("GET", f"http://{HOST}/graphs", token="made-up")).error_type
        == "UnrecognizedClientException"
    )


def test_the_scope_must_name_execute_api_and_the_stacks_region():
    assert "region" in refused(sign("GET", f"http://{HOST}/graphs", region="eu-west-1")).message
    assert "'execute-api'" in refused(sign("GET", f"http://{HOST}/graphs", service="s3")).message


def test_a_payload_hash_header_must_be_the_bodys():
    request = sign("POST", f"http://{HOST}/graph/create", b"{}", headers={"X-Amz-Content-SHA256": "0" * 64})
    assert "x-amz-content-sha256" in refused(request).message


def test_a_malformed_authorization_header_is_incomplete():
    request = SignedRequest(
        "GET",
        "/graphs",
        "",
        [("Host", HOST), ("Authorization", "AWS4-HMAC-SHA256 Credential=alice/20260615")],
    )
    error = refused(request)
    assert error.error_type == "IncompleteSignatureException"
    assert "requires 'Signature' parameter" in error.message


def test_host_must_be_signed():
    request = sign("GET", f"http://{HOST}/graphs")
    authorization = dict(request.headers)["Authorization"].replace("SignedHeaders=host;", "SignedHeaders=")
    assert "'Host'" in refused(with_headers(request, authorization=authorization)).message


def test_a_credentials_file_is_validated(tmp_path):
    good = tmp_path / "keys.json"
    good.write_text(f"[{ALICE.model_dump_json()}]")
    assert KeyRing.from_file(good, REGION).pairs["alice"] == ALICE
    bad = tmp_path / "bad.json"
    bad.write_text('[{"AccessKeyId": "bob", "SecretAccessKey": "s", "Arn": "bob"}]')
    with pytest.raises(ValueError, match=r"bad.json: 0.Arn: String should match pattern"):
        KeyRing.from_file(bad, REGION)
    with pytest.raises(ValueError, match="lists no key pairs"):
        (tmp_path / "empty.json").write_text("[]")
        KeyRing.from_file(tmp_path / "empty.json", REGION)
