"""SigV4 verification as API Gateway does it for IAM-authorized routes (``--auth iam``).

A request is signed either in its ``Authorization`` header or in its query string
(``X-Amz-Signature``, as presigned WebSocket handshakes are). The verifier rebuilds the
canonical request from what arrived — the signed headers, the raw path, the query string
re-encoded as SigV4 requires, the SHA-256 of the body actually received — with botocore's
own canonicalization (:class:`botocore.auth.SigV4Auth`), signs it with the secret of the
access key named in the credential scope, and compares with :func:`hmac.compare_digest`.
It also checks the scope (service ``execute-api``, the stack's region), the clock (5
minutes either way, and ``X-Amz-Expires`` of a presigned URL) and the session token of
temporary credentials.

Failures are :class:`AuthError`: API Gateway's 403 with its ``x-amzn-ErrorType`` and its
message text, so a client sees locally what it would see on AWS.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
#: How far a request's X-Amz-Date may be from the server's clock, as on AWS.
MAX_SKEW = timedelta(minutes=5)
#: A presigned URL's X-Amz-Expires: 1 s to 7 days.
MAX_EXPIRES_S = 604_800
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
DEFAULT_ACCESS_KEY = DEFAULT_SECRET_KEY = "testing"
DEFAULT_PRINCIPAL_ARN = "arn:aws:iam::123456789012:user/local"

_ARN = r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:\S+$"
_AUTH_FIELD = re.compile(r"(\w+)=([^,\s]*)")


class AuthError(Exception):
    """API Gateway's refusal: 403 with ``{"message": ...}`` and ``x-amzn-ErrorType``."""

    def __init__(self, error_type: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _missing_token() -> AuthError:
    return AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")


def _invalid_token() -> AuthError:
    return AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")


def _incomplete(message: str) -> AuthError:
    return AuthError("IncompleteSignatureException", message)


class KeyPair(BaseModel):
    """One entry of a ``--credentials`` file (the names of ``aws sts`` output, plus Arn)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    AccessKeyId: str = Field(min_length=1, pattern=r"^\S+$")
    SecretAccessKey: str = Field(min_length=1)
    Arn: str = Field(pattern=_ARN, description="the principal these keys belong to")
    SessionToken: str | None = Field(default=None, min_length=1, description="temporary credentials only")
    PrincipalOrgId: str | None = None


_KEY_PAIRS = TypeAdapter(list[KeyPair])


@dataclass(frozen=True, slots=True)
class Principal:
    """Who signed a request: what API Gateway puts in the request context."""

    access_key: str
    arn: str
    principal_org_id: str | None = None

    @property
    def account_id(self) -> str:
        return self.arn.split(":")[4]

    @property
    def user_id(self) -> str:
        """A stable unique id shaped like IAM's (``AIDA…`` for users, ``AROA…:session``
        for assumed roles): AWS assigns these, so locally one is derived from the ARN."""
        digest = hashlib.sha256(self.arn.encode()).hexdigest()[:17].upper()
        resource = self.arn.split(":", 5)[5]
        if resource.startswith("assumed-role/"):
            return f"AROA{digest}:{resource.rsplit('/', 1)[-1]}"
        return f"AIDA{digest}"

    def http_authorizer(self) -> dict[str, Any]:
        """``requestContext.authorizer`` of an HTTP API payload 2.0 event."""
        return {
            "iam": {
                "accessKey": self.access_key,
                "accountId": self.account_id,
                "callerId": self.user_id,
                "cognitoIdentity": None,
                "principalOrgId": self.principal_org_id,
                "userArn": self.arn,
                "userId": self.user_id,
            }
        }

    def ws_identity(self) -> dict[str, Any]:
        """The IAM fields of a WebSocket event's ``requestContext.identity``."""
        return {
            "accessKey": self.access_key,
            "accountId": self.account_id,
            "caller": self.user_id,
            "cognitoAuthenticationProvider": None,
            "cognitoAuthenticationType": None,
            "cognitoIdentityId": None,
            "cognitoIdentityPoolId": None,
            "principalOrgId": self.principal_org_id,
            "user": self.user_id,
            "userArn": self.arn,
        }


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What arrived: the method, the raw path and query (as sent), headers, body."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes = b""


class KeyRing:
    """The key pairs the stack accepts, and the verifier of signatures made with them."""

    def __init__(self, pairs: Iterable[KeyPair], region: str) -> None:
        self.pairs = {pair.AccessKeyId: pair for pair in pairs}
        self.region = region

    @classmethod
    def default(cls, region: str) -> KeyRing:
        """One pair, ``testing``/``testing``, as ``arn:aws:iam::123456789012:user/local``."""
        pair = KeyPair(
            AccessKeyId=DEFAULT_ACCESS_KEY, SecretAccessKey=DEFAULT_SECRET_KEY, Arn=DEFAULT_PRINCIPAL_ARN
        )
        return cls([pair], region)

    @classmethod
    def from_file(cls, path: Path, region: str) -> KeyRing:
        """A JSON list of ``{"AccessKeyId", "SecretAccessKey", "Arn", "SessionToken"?}``;
        ValueError naming the file and the problem."""
        try:
            pairs = _KEY_PAIRS.validate_json(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"credentials file {path}: {exc.strerror or exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"credentials file {path}: {problems}") from None
        if not pairs:
            raise ValueError(f"credentials file {path}: lists no key pairs")
        return cls(pairs, region)

    def principal_of(self, access_key: str) -> str:
        """The ARN an access key belongs to."""
        return self.pairs[access_key].Arn

    def verify(self, request: SignedRequest, now: datetime | None = None) -> Principal:
        """The principal that signed ``request``, or AuthError as API Gateway answers."""
        now = now or datetime.now(UTC)
        headers = _header_map(request.headers)
        query = _query_pairs(request.query)
        if "authorization" in headers:
            signature = _from_header(headers["authorization"][-1], headers)
        elif any(name == "X-Amz-Signature" for name, _ in query) or any(
            name == "X-Amz-Algorithm" for name, _ in query
        ):
            signature = _from_query(query, now)
        else:
            raise _missing_token()
        scope = signature.credential.split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise _incomplete(
                f"Credential should be scoped to a valid region, service and terminator: {signature.credential!r}"
            )
        access_key, day, region, service, _ = scope
        if service != SERVICE:
            raise _incomplete(f"Credential should be scoped to correct service: '{SERVICE}'. ")
        if region != self.region:
            raise _incomplete(f"Credential should be scoped to a valid region, not '{region}'. ")
        pair = self.pairs.get(access_key)
        if pair is None:
            raise _invalid_token()
        when = _parse_amz_date(signature.amz_date)
        if day != signature.amz_date[:8]:
            raise AuthError(
                "InvalidSignatureException",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{day}' != '{signature.amz_date[:8]}', from '{signature.amz_date}'.",
            )
        _check_clock(when, now, signature.expires_s)
        token = signature.session_token
        if (pair.SessionToken is None) != (token is None) or (
            token is not None and not hmac.compare_digest(token.encode(), (pair.SessionToken or "").encode())
        ):
            raise _invalid_token()
        body_hash = hashlib.sha256(request.body).hexdigest()
        claimed = headers.get("x-amz-content-sha256")
        if claimed is not None and claimed[-1] != body_hash:
            raise AuthError(
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        canonical, string_to_sign, expected = _recompute(
            request, signature, pair, self.region, headers, query
        )
        if not hmac.compare_digest(expected.encode(), signature.signature.encode()):
            raise AuthError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check "
                "your AWS Secret Access Key and signing method. Consult the service documentation for "
                f"details.\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
                f"The String-to-Sign should have been\n'{string_to_sign}'\n",
            )
        return Principal(pair.AccessKeyId, pair.Arn, pair.PrincipalOrgId)


# -- parsing -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Signature:
    credential: str
    signed_headers: list[str]
    signature: str
    amz_date: str
    session_token: str | None
    in_query: bool
    expires_s: int | None = None


def _header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in pairs:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def _query_pairs(raw: str) -> list[tuple[str, str]]:
    """The query's (name, value) pairs, percent-decoded (``+`` stays a plus, as in SigV4)."""
    pairs = []
    for part in raw.split("&") if raw else []:
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def _from_header(authorization: str, headers: Mapping[str, list[str]]) -> _Signature:
    algorithm, _, rest = authorization.strip().partition(" ")
    fields = dict(_AUTH_FIELD.findall(rest))
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not fields.get(name)
    ]
    if "x-amz-date" not in headers:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if algorithm != ALGORITHM or problems:
        problems.append(f"Authorization={authorization}")
        raise _incomplete(" ".join(problems))
    token = headers.get("x-amz-security-token")
    return _Signature(
        credential=fields["Credential"],
        signed_headers=fields["SignedHeaders"].split(";"),
        signature=fields["Signature"],
        amz_date=headers["x-amz-date"][-1],
        session_token=token[-1] if token else None,
        in_query=False,
    )


def _from_query(query: list[tuple[str, str]], now: datetime) -> _Signature:
    params = dict(query)
    missing = [
        name
        for name in (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        if not params.get(name)
    ]
    if missing or params["X-Amz-Algorithm"] != ALGORITHM:
        raise _incomplete(
            " ".join(f"AWS query-string parameters must include '{name}'." for name in missing)
            or f"X-Amz-Algorithm must be {ALGORITHM}."
        )
    expires: int | None = None
    if "X-Amz-Expires" in params:
        raw = params["X-Amz-Expires"]
        if not raw.isdigit() or not 0 < int(raw) <= MAX_EXPIRES_S:
            raise _incomplete(f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES_S}.")
        expires = int(raw)
    return _Signature(
        credential=params["X-Amz-Credential"],
        signed_headers=params["X-Amz-SignedHeaders"].split(";"),
        signature=params["X-Amz-Signature"],
        amz_date=params["X-Amz-Date"],
        session_token=params.get("X-Amz-Security-Token"),
        in_query=True,
        expires_s=expires,
    )


def _parse_amz_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
        ) from None


def _stamp(when: datetime) -> str:
    return when.strftime(AMZ_DATE_FORMAT)


def _check_clock(signed_at: datetime, now: datetime, expires_s: int | None) -> None:
    """API Gateway's window: ±5 minutes around its clock (and a presigned URL's expiry)."""
    if signed_at < now - MAX_SKEW:
        raise AuthError(
            "InvalidSignatureException",
            f"Signature expired: {_stamp(signed_at)} is now earlier than {_stamp(now - MAX_SKEW)} "
            f"({_stamp(now)} - 5 min.)",
        )
    if signed_at > now + MAX_SKEW:
        raise AuthError(
            "InvalidSignatureException",
            f"Signature not yet current: {_stamp(signed_at)} is still later than {_stamp(now + MAX_SKEW)} "
            f"({_stamp(now)} + 5 min.)",
        )
    if expires_s is not None and now > signed_at + timedelta(seconds=expires_s):
        raise AuthError(
            "InvalidSignatureException",
            f"Signature expired: {_stamp(signed_at)} is now earlier than "
            f"{_stamp(now - timedelta(seconds=expires_s))} ({_stamp(now)} - {expires_s} s.)",
        )


# -- recomputing ---------------------------------------------------------------------------
class _Recompute(SigV4Auth):
    """botocore's canonicalization, over exactly the headers the client signed."""

    def __init__(self, pair: KeyPair, region: str, signed: HTTPHeaders) -> None:
        super().__init__(Credentials(pair.AccessKeyId, pair.SecretAccessKey), SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed


def _canonical_query(query: list[tuple[str, str]], in_query: bool) -> str:
    """Every parameter (but the signature itself) re-encoded as SigV4 wants it."""
    return "&".join(
        sorted(
            f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
            for name, value in query
            if not (in_query and name == "X-Amz-Signature")
        )
    )


def _recompute(
    request: SignedRequest,
    signature: _Signature,
    pair: KeyPair,
    region: str,
    headers: Mapping[str, list[str]],
    query: list[tuple[str, str]],
) -> tuple[str, str, str]:
    """(canonical request, string to sign, signature) as the client should have made them."""
    names = [name.strip().lower() for name in signature.signed_headers if name.strip()]
    if "host" not in names:
        raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    missing = [name for name in names if name not in headers]
    if missing:
        raise AuthError(
            "InvalidSignatureException",
            f"The request signature we calculated does not match the signature you provided: "
            f"the signed header {missing[0]!r} is not in the request.",
        )
    signed = HTTPHeaders()
    for name in names:
        for value in headers.get(name, []):
            signed[name] = value
    canonical_query = _canonical_query(query, signature.in_query)
    # http: botocore then always hashes the body (it may skip that over https).
    url = f"http://{headers.get('host', [''])[-1]}{request.path}" + (
        f"?{canonical_query}" if canonical_query else ""
    )
    aws_request = AWSRequest(method=request.method, url=url, data=request.body, headers={})
    aws_request.context["timestamp"] = signature.amz_date
    auth = _Recompute(pair, region, signed)
    canonical = auth.canonical_request(aws_request)
    string_to_sign = auth.string_to_sign(aws_request, canonical)
    return canonical, string_to_sign, auth.signature(string_to_sign, aws_request)


def load_key_ring(path: Path | None, region: str) -> KeyRing:
    """The key pairs of ``--credentials FILE``, or the default ``testing`` pair."""
    return KeyRing.from_file(path, region) if path is not None else KeyRing.default(region)
