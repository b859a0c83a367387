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


def test_frames_in_chunks_of_any_size_decode_whole_and_as_bytes() -> None:
    """Reads that hold several whole frames, a frame and a piece of the next, or pieces
    only: every frame comes out once, in order, its body as ``bytes``."""
    import random

    frames = [({"t": "res", "id": i}, bytes([i % 256]) * (i * 37 % 300)) for i in range(60)]
    data = b"".join(encode(h, b) for h, b in frames)
    rng = random.Random(4)
    got: list[tuple[dict, bytes]] = []
    for _ in range(50):
        got.clear()
        dec = FrameDecoder(lambda h, b: got.append((h, b)), max_body=1000)
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 7, 64, 500, 4000, len(data)])
            dec.feed(data[pos : pos + n])
            pos += n
        assert got == frames
        assert all(type(b) is bytes for _, b in got)
