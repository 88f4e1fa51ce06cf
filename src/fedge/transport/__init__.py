"""The wire protocol (v1) and the HTTP layer shared by coordinator and gateways."""

from fedge.transport.messages import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
