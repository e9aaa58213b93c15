"""The @connections adapter: a lazily built client, and AWS error codes as FlowForge errors."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from engine.logstream import ConnectionGoneError, PushError, PushUnavailableError
from functions.aws.push import ApiGatewayPusher, management_client_factory
from tests.functional.connections_standin import ConnectionsStandIn, client_error


class Failing:
    """A client whose every call raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def post_to_connection(self, **_):
        raise self.error

    def delete_connection(self, **_):
        raise self.error


def test_the_client_is_built_on_first_use_only():
    built = []
    api = ConnectionsStandIn()
    pusher = ApiGatewayPusher(lambda: built.append(1) or api)
    assert built == []
    api.connect("c1")
    pusher.post("c1", b'{"a":1}')
    pusher.post("c1", b'{"a":2}')
    assert built == [1] and api.messages("c1") == [{"a": 1}, {"a": 2}]


def test_management_client_points_at_the_websocket_stage(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = management_client_factory("https://abc123.execute-api.eu-west-1.amazonaws.com/prod")()
    assert client.meta.endpoint_url == "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    assert client.meta.service_model.service_name == "apigatewaymanagementapi"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("GoneException", ConnectionGoneError),
        ("LimitExceededException", PushUnavailableError),
        ("ThrottlingException", PushUnavailableError),
        ("InternalServerErrorException", PushUnavailableError),
        ("PayloadTooLargeException", PushError),
        ("ForbiddenException", PushError),
    ],
)
def test_aws_error_codes_become_push_errors(code, error):
    pusher = ApiGatewayPusher(lambda: Failing(client_error(code, "PostToConnection")))
    with pytest.raises(error) as caught:
        pusher.post("c1", b"{}")
    assert type(caught.value) is error
    assert isinstance(caught.value.__cause__, ClientError)


def test_network_failures_are_retryable():
    pusher = ApiGatewayPusher(lambda: Failing(EndpointConnectionError(endpoint_url="https://x")))
    with pytest.raises(PushUnavailableError):
        pusher.post("c1", b"{}")


def test_closing_a_closed_connection_is_fine():
    api = ConnectionsStandIn()
    api.connect("c1")
    pusher = ApiGatewayPusher(lambda: api)
    pusher.close("c1")
    pusher.close("c1")
    with pytest.raises(ConnectionGoneError):
        pusher.post("c1", b"{}")


def test_the_management_client_fails_fast(monkeypatch):
    # GIVEN the factory's client / THEN it fails fast: pushes are small, the caller retries
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = management_client_factory("https://abc123.execute-api.eu-west-1.amazonaws.com/prod")()
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 5)
    retries = client.meta.config.retries
    assert retries["mode"] == "standard" and retries["total_max_attempts"] == 4  # 3 retries
