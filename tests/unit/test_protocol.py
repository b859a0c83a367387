from __future__ import annotations

import pytest

from faasbox.runtime.protocol import FrameDecoder, FrameTooLarge, ProtocolError, encode


def test_frames_split_anywhere_decode_in_order() -> None:
    frames = [({"t": "res", "id": i}, bytes([i]) * i) for i in range(1, 6)]
    data = b"".join(encode(h, b) for h, b in frames)
    got: list[tuple[dict, bytes]] = []
    dec = FrameDecoder(lambda h, b: got.append((h, b)), max_body=100)
    for i in range(len(data)):  # one byte at a time
        dec.feed(data[i : i + 1])
    assert got == frames


def test_oversized_body_is_refused_before_buffering() -> None:
    dec = FrameDecoder(lambda h, b: None, max_body=10)
    frame = encode({"t": "res"}, b"x" * 11)
    with pytest.raises(FrameTooLarge, match="exceeds"):
        dec.feed(frame[:12])  # the length prefix alone is enough


def test_malformed_header_is_a_protocol_error() -> None:
    import struct

    dec = FrameDecoder(lambda h, b: None, max_body=10)
    with pytest.raises(ProtocolError):
        dec.feed(struct.pack("<II", 3, 0) + b"{{{")
    dec = FrameDecoder(lambda h, b: None, max_body=10)
    with pytest.raises(ProtocolError):
        dec.feed(struct.pack("<II", 2, 0) + b"[]")
