"""The wire protocol with no I/O: envelopes, sessions, backoff, heartbeat timers.

Everything here is driven by the caller: frames in, frames out, and an
injected clock (`now` arguments, seconds). The asyncio layers in
`wsnb.client` and `wsnb.server` only move bytes and wait.
"""

from wsnb.protocol.backoff import Backoff, ReconnectPolicy
from wsnb.protocol.envelope import (
    VERSION,
    ChunkAssembler,
    decode_payload,
    dumps,
    encode_msg,
    frame_text,
    parse_frame,
    payload_text,
    split_chunks,
    verify_msg,
)
from wsnb.protocol.heartbeat import DeadLinkTimer
from wsnb.protocol.session import Outgoing, Receiver, Sender

__all__ = [
    "VERSION",
    "Backoff",
    "ChunkAssembler",
    "DeadLinkTimer",
    "Outgoing",
    "ReconnectPolicy",
    "Receiver",
    "Sender",
    "decode_payload",
    "dumps",
    "encode_msg",
    "frame_text",
    "parse_frame",
    "payload_text",
    "split_chunks",
    "verify_msg",
]
