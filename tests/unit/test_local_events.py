"""The local gateway's and pollers' events parse through the models the handlers use."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2, APIGatewayWebSocketEvent
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
    DynamoDBStreamModel,
    EventBridgeModel,
    SqsModel,
)

from flowforge.local import events


def _request(**overrides) -> events.HttpRequest:
    fields = {
        "method": "POST",
        "path": "/graph/run/abc/cancel",
        "raw_query": "a=1&a=2",
        "query": [("a", "1"), ("a", "2")],
        "headers": [
            ("Content-Type", "application/json"),
            ("X-Tag", "x"),
            ("x-tag", "y"),
            ("Cookie", "k=v; s=t"),
        ],
        "body": b'{"background": true}',
        "source_ip": "127.0.0.1",
    }
    return events.HttpRequest(**{**fields, **overrides})


def test_http_event_is_a_payload_v2_event_with_route_and_path_parameters():
    # GIVEN a request matched to a template route
    # WHEN the gateway builds its event
    event = events.http_event(
        _request(),
        route_key="POST /graph/run/{run_id}/cancel",
        path_parameters={"run_id": "abc"},
        domain="127.0.0.1:3000",
    )
    # THEN Powertools reads it as API Gateway would have sent it
    APIGatewayProxyEventV2Model.model_validate(event)
    parsed = APIGatewayProxyEventV2(event)
    assert parsed.path == "/graph/run/abc/cancel"
    assert parsed.http_method == "POST"
    assert parsed.path_parameters == {"run_id": "abc"}
    assert parsed.route_key == "POST /graph/run/{run_id}/cancel"
    assert parsed.json_body == {"background": True}
    # repeated names are comma-joined, headers lower-cased, cookies split out (payload 2.0)
    assert parsed.query_string_parameters == {"a": "1,2"}
    assert parsed.headers["x-tag"] == "x,y"
    assert parsed.cookies == ["k=v", "s=t"]
    assert "cookie" not in parsed.headers


def test_http_event_sends_binary_bodies_base64_and_omits_an_empty_body():
    binary = events.http_event(
        _request(headers=[("Content-Type", "application/octet-stream")], body=b"\xff\x00"),
        route_key="POST /x",
        path_parameters=None,
        domain="h",
    )
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\xff\x00"
    empty = events.http_event(
        _request(body=b"", query=[], raw_query=""), route_key="GET /x", path_parameters=None, domain="h"
    )
    assert "body" not in empty and "queryStringParameters" not in empty and "pathParameters" not in empty


def _client() -> events.WsClient:
    return events.WsClient(events.new_connection_id(), "127.0.0.1", "wscat/6", "127.0.0.1:3000")


def test_websocket_events_parse_as_connect_message_and_disconnect():
    client = _client()
    connect = events.ws_connect_event(client, [("Host", "127.0.0.1:3000")], [("run_id", "r1")])
    message = events.ws_message_event(client, "subscribe", '{"action": "subscribe", "run_id": "r1"}')
    disconnect = events.ws_disconnect_event(client, 1000, "Client closed")

    APIGatewayWebSocketConnectEventModel.model_validate(connect)
    APIGatewayWebSocketMessageEventModel.model_validate(message)
    APIGatewayWebSocketDisconnectEventModel.model_validate(disconnect)
    assert APIGatewayWebSocketEvent(connect).query_string_parameters == {"run_id": "r1"}
    for event, route in ((connect, "$connect"), (message, "subscribe"), (disconnect, "$disconnect")):
        parsed = APIGatewayWebSocketEvent(event)
        assert parsed.request_context.route_key == route
        assert parsed.request_context.connection_id == client.connection_id


def test_binary_websocket_frames_arrive_base64_encoded():
    event = events.ws_message_event(_client(), "$default", b"\x01\x02")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x01\x02"


def test_connection_ids_look_like_api_gateway_ones():
    ids = {events.new_connection_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 16 and i.endswith("=") for i in ids)


def test_sqs_event_carries_each_message_as_lambda_does():
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "rh",
        "Body": '{"run_id": "r", "step": 0}',
        "MD5OfBody": "0" * 32,
        "Attributes": {
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1",
            "SenderId": "s",
            "ApproximateFirstReceiveTimestamp": "1",
            "QueueArn": "dropped",
        },
        "MessageAttributes": {"k": {"StringValue": "v", "DataType": "String"}},
    }
    event = events.sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    record = SqsModel.model_validate(event).Records[0]
    assert record.messageId == "m1"
    assert record.attributes.ApproximateReceiveCount == "2"
    assert record.messageAttributes["k"].stringValue == "v"
    assert "QueueArn" not in event["Records"][0]["attributes"]


def test_stream_event_has_epoch_seconds_and_the_stream_arn():
    record = {
        "eventID": "e1",
        "eventName": "INSERT",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2025, 1, 1, tzinfo=UTC),
            "Keys": {"pk": {"S": "RUN#r"}, "sk": {"S": "LOG#0000000000"}},
            "NewImage": {"pk": {"S": "RUN#r"}, "sk": {"S": "LOG#0000000000"}, "kind": {"S": "log"}},
            "SequenceNumber": "100",
            "SizeBytes": 10,
            "StreamViewType": "NEW_IMAGE",
        },
    }
    event = events.stream_event(
        [record], "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x", "us-east-1"
    )
    parsed = DynamoDBStreamModel.model_validate(event).Records[0]
    assert parsed.eventName == "INSERT"
    assert event["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] == 1735689600


def test_schedule_event_is_an_eventbridge_scheduled_event():
    event = events.schedule_event("arn:aws:events:us-east-1:123456789012:rule/r", "us-east-1")
    parsed = EventBridgeModel.model_validate(event)
    assert parsed.detail_type == "Scheduled Event"
    assert parsed.source == "aws.events"
