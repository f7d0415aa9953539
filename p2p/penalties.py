"""Penalty points per class of misbehaviour, one table for the whole node.

Points decay over time; a peer is banned past `HostConfig.ban_threshold` (100):
ten invalid messages, five malformed frames, two lies.
"""

from __future__ import annotations

STREAM_ERROR = 2.0  # a stream that broke: often the network, rarely malice
INVALID = 10.0  # a well-formed message that breaks a protocol rule
MALFORMED = 20.0  # bytes that do not decode, a request outside the protocol
LIE = 50.0  # content that does not match its hash, or an invalid block served by sync
