"""The sans-IO wire protocol (issue 8, item 1; DESIGN section 9), tested without sockets.

* every frame round-trips, with one byte form;
* any bytes, in any chunking, either decode or raise ``WireError`` -- never another
  exception -- and a refused input changes nothing (``Connection.snapshot``);
* the session follows its transition table: random sequences of sends and receives
  are checked against the table (and every entry of the table is exercised);
* replayed frames apply nothing (dedup by sequence, across sessions too);
* oversized frames are refused from their prefix alone, over-long batches from their
  array head alone;
* acks exist only after the application's commit; the window holds.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avm.core import codec
from avm.core.caps import IdentityKey, SealingKey, address_of, commons_cap, seal_context
from avm.core.delivery import DUPLICATE, EARLY, NEXT, arrival
from avm.wire import (
    FRAME_BYTES_MAX,
    LAYOUTS,
    MESSAGES_PER_BATCH_MAX,
    TRANSITIONS,
    Ack,
    Acked,
    Batch,
    BatchHeld,
    BatchReceived,
    Close,
    CloseReceived,
    Connection,
    ConnectionClosed,
    DuplicateBatch,
    FrameTooLarge,
    GapRequest,
    GapRequested,
    Hello,
    HelloReceived,
    IdentityMismatch,
    LimitExceeded,
    LocalProtocolError,
    MalformedFrame,
    Ping,
    PingReceived,
    Pong,
    Reject,
    Rejected,
    RemoteProtocolError,
    TruncatedFrame,
    UnexpectedFrame,
    VersionMismatch,
    WireError,
    decode_body,
    encode_frame,
)
from avm.wire import frames as fr
from avm.wire.session import DATA_KINDS, STATES

ROOT = Path(__file__).resolve().parent.parent


def ident(seed: bytes) -> tuple[bytes, bytes]:
    r = IdentityKey.from_seed(seed).resource((("host", seed.decode()),))
    return address_of(r), codec.encode(r)


HA, RA = ident(b"host-a")
HB, RB = ident(b"host-b")
M1 = ident(b"m1")[0]
M2 = ident(b"m2")[0]
KEY = SealingKey.from_seed(b"k" * 32)
CAP = seal_context(M2, KEY, ("method", 1))
CAP_HI = seal_context(M2, KEY, "urgent", priority=0.5)


def pair(window: int = 256, committed_a=lambda c: 0, committed_b=lambda c: 0):
    a = Connection(HA, RA, peer_address=HB, window=window, committed_seq=committed_a)
    b = Connection(HB, RB, peer_address=HA, window=window, committed_seq=committed_b)
    return a, b


def opened(window: int = 256, committed_a=lambda c: 0, committed_b=lambda c: 0):
    a, b = pair(window, committed_a, committed_b)
    b.receive_data(a.hello())
    a.receive_data(b.hello())
    assert a.state == b.state == "open"
    return a, b


def batch(seq: int, sender: bytes = M1, receiver: bytes = M2, n: int = 1, **kw) -> Batch:
    msgs = tuple((CAP, ("m", seq, i)) for i in range(n))
    return Batch(sender, receiver, seq, (1_700_000_000_000 + seq, 0), 0.0, msgs, **kw)


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

addresses = st.binary(min_size=32, max_size=32)
endpoints = addresses | st.tuples(st.just("~"), st.sampled_from(["feedback", "returned"]),
                                  st.text(max_size=12))
u64 = st.integers(0, (1 << 63) - 1)
seqs = st.integers(1, (1 << 63) - 1)
texts = st.text(max_size=fr.REASON_CHARS_MAX)
contents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20)
    | st.floats(allow_nan=False),
    lambda c: st.lists(c, max_size=4).map(tuple), max_leaves=12)
caps = st.sampled_from([CAP, CAP_HI, commons_cap(HA, "null")])
messages = st.lists(st.tuples(caps, contents), max_size=6).map(tuple)

FRAME_STRATEGIES = {
    "hello": st.builds(Hello, st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=8, unique=True)
                       .map(lambda v: tuple(sorted(v))), addresses, st.just(RA),
                       st.integers(1, fr.FRAMES_IN_FLIGHT_MAX)),
    "batch": st.builds(Batch, endpoints, addresses, seqs, st.tuples(u64, u64),
                       st.floats(-1.0, 1.0), messages,
                       st.none() | st.tuples(caps, contents), st.booleans()),
    "ack": st.builds(Ack, endpoints, addresses, u64,
                     st.lists(seqs, max_size=10, unique=True).map(lambda v: tuple(sorted(v)))),
    "gap": st.builds(lambda s, r, a, b: GapRequest(s, r, min(a, b), max(a, b)),
                     endpoints, addresses, seqs, seqs),
    "reject": st.builds(Reject, endpoints, addresses, seqs, st.booleans(), texts),
    "ping": st.builds(Ping, u64),
    "pong": st.builds(Pong, u64),
    "close": st.builds(Close, st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1,
                                      max_size=32), texts),
}
frames = st.one_of(*FRAME_STRATEGIES.values())


# ---------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------


@given(frames)
@settings(max_examples=400, deadline=None)
def test_every_frame_round_trips_with_one_byte_form(frame):
    data = encode_frame(frame)
    (n,) = struct.unpack(">I", data[:4])
    assert n == len(data) - 4 <= FRAME_BYTES_MAX
    back = decode_body(data[4:])
    assert back == frame
    assert type(back) is type(frame)
    assert encode_frame(back) == data  # canonical: a frame has exactly one encoding


def test_every_kind_has_a_class_and_the_strategy_covers_it():
    assert set(fr.FRAME_CLASSES) == set(LAYOUTS) == set(fr.PURPOSES)
    assert set(FRAME_STRATEGIES) == set(LAYOUTS)


@pytest.mark.parametrize("frame, why", [
    (Batch(M1, b"short", 1, (0, 0), 0.0, ()), "receiver"),
    (Batch(M1, M2, 0, (0, 0), 0.0, ()), "seq"),
    (Batch(M1, M2, 1, (0, 0), 2.0, ()), "priority"),
    (Batch(M1, M2, 1, (0, 0), 0, ()), "priority"),  # an int is not a float
    (Batch(M1, M2, 1, (0, 0), float("nan"), ()), "priority"),
    (Batch(M1, M2, 1, (0, -1), 0.0, ()), "ts"),
    (Batch(M1, M2, 1, (0, 0), 0.0, (("not a cap", 1),)), "capability"),
    (Batch(("~",) * 5, M2, 1, (0, 0), 0.0, ()), "sender"),
    (Ack(M1, M2, -1), "upto"),
    (Ack(M1, M2, 5, (3, 2)), "skipped"),
    (GapRequest(M1, M2, 5, 4), "first"),
    (Hello((2, 1), HA, RA), "versions"),
    (Hello((1,), HA, RA, 0), "window"),
    (Close("", "x"), "code"),
    (Reject(M1, M2, 1, True, "x" * 1000), "reason"),
])
def test_a_bad_frame_of_ours_is_our_error_and_nothing_is_sent(frame, why):
    with pytest.raises(LocalProtocolError) as e:
        encode_frame(frame)
    assert why in str(e.value)


def test_a_batch_over_the_message_limit_is_refused_from_its_array_head():
    # A body that claims MESSAGES_PER_BATCH_MAX + 1 messages and holds none: refused by
    # the head alone (a decode would have said "truncated" instead).
    head = bytes([0x82, 0x99]) + (MESSAGES_PER_BATCH_MAX + 1).to_bytes(2, "big")
    body = codec.encode(("batch", M1, M2, 1, (0, 0), 0.0, False, head))
    with pytest.raises(LimitExceeded, match="messages"):
        decode_body(body)
    ok = batch(1, n=MESSAGES_PER_BATCH_MAX)
    assert decode_body(encode_frame(ok)[4:]) == ok
    with pytest.raises(LocalProtocolError):
        encode_frame(batch(1, n=MESSAGES_PER_BATCH_MAX + 1))


def test_deep_values_in_messages_are_refused():
    deep: object = 1
    for _ in range(fr.DECODE_DEPTH_MAX + 3):
        deep = (deep,)
    body = codec.encode(("batch", M1, M2, 1, (0, 0), 0.0, False, codec.encode((((CAP, deep),), None))))
    with pytest.raises(MalformedFrame, match="deep|depth"):
        decode_body(body)


def test_non_canonical_frames_are_refused():
    good = encode_frame(Ping(5))[4:]
    # 5 written as a one-byte-argument integer instead of inline: same value, other bytes
    bad = good[:-1] + bytes([0x18, 5])
    with pytest.raises(MalformedFrame):
        decode_body(bad)


# ---------------------------------------------------------------------------------------
# Decode or raise WireError, in any chunking, and change nothing when refusing
# ---------------------------------------------------------------------------------------


def feed(conn: Connection, data: bytes, cuts: list[int]) -> tuple[list, WireError | None]:
    """Feed ``data`` cut at ``cuts``; return the events and the error that stopped it."""
    events: list = []
    last = 0
    for c in [*sorted(set(cuts)), len(data)]:
        c = min(max(c, last), len(data))
        if c == last:
            continue  # b"" is the end of the stream, not an empty read
        before = conn.snapshot()
        try:
            events.extend(conn.receive_data(data[last:c]))
        except WireError as e:
            assert isinstance(e, RemoteProtocolError)
            assert conn.snapshot() == before, "a refused input changed the session"
            return events, e
        last = c
    return events, None


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6),
       st.booleans())
@settings(max_examples=1500, deadline=None)
def test_arbitrary_bytes_decode_or_raise_wire_error(data, cuts, is_open):
    conn = opened()[1] if is_open else Connection(HB, RB)
    feed(conn, data, cuts)


def stream_of(fs: list) -> bytes:
    return b"".join(encode_frame(f) for f in fs)


@given(st.lists(st.integers(1, 12), max_size=10), st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_valid_streams_decode_or_raise_and_chunking_does_not_matter(seq_list, data):
    a, b = opened()
    fs = [batch(s) for s in seq_list] + [Ping(1), GapRequest(M1, M2, 1, 2)]
    raw = bytearray(stream_of(fs))
    for _ in range(data.draw(st.integers(0, 3))):
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    raw = bytes(raw)
    whole_conn = opened()[1]
    whole_events, whole_err = feed(whole_conn, raw, [])
    bytewise_conn = opened()[1]
    byte_events, byte_err = feed(bytewise_conn, raw, list(range(len(raw))))
    if whole_err is None:
        # The same frames, whatever the chunking: same events and same end state.
        assert byte_err is None
        assert byte_events == whole_events
        assert bytewise_conn.snapshot() == whole_conn.snapshot()
    else:
        # Whole, the refused call applied nothing; byte by byte, the frames before the
        # bad one were applied and the bad one was refused.
        assert whole_events == []
        assert byte_err is not None and type(byte_err) is type(whole_err)


def test_oversized_frame_refused_from_the_prefix_alone():
    a, b = opened()
    before = b.snapshot()
    with pytest.raises(FrameTooLarge):
        b.receive_data(struct.pack(">I", FRAME_BYTES_MAX + 1))  # no body sent at all
    assert b.snapshot() == before
    with pytest.raises(FrameTooLarge):
        b.receive_data(struct.pack(">I", 0xFFFFFFFF)[:4])
    # A smaller limit of the session's own is applied the same way.
    small = Connection(HB, RB, frame_bytes_max=64)
    with pytest.raises(FrameTooLarge):
        small.receive_data(struct.pack(">I", 65))
    # a prefix still incomplete is only buffered
    assert b.receive_data(b"\x00\x10") == []


def test_a_malformed_frame_after_good_ones_applies_none_of_them():
    a, b = opened()
    good = a.send(batch(1)) + a.send(batch(2))
    bad = struct.pack(">I", 3) + b"\xff\xff\xff"
    before = b.snapshot()
    with pytest.raises(MalformedFrame):
        b.receive_data(good + bad)
    assert b.snapshot() == before
    assert [type(e) for e in b.receive_data(good)] == [BatchReceived, BatchReceived]


def test_truncated_stream_is_a_typed_error_and_clean_end_is_not():
    a, b = opened()
    data = a.send(batch(1))
    b.receive_data(data[:-3])
    with pytest.raises(TruncatedFrame):
        b.receive_data(b"")
    ev = b.receive_data(data[-3:])
    assert [type(e) for e in ev] == [BatchReceived]
    assert b.receive_data(b"") == [ConnectionClosed(clean=False)]
    assert b.state == "closed"
    with pytest.raises(LocalProtocolError):
        b.receive_data(b"more")


# ---------------------------------------------------------------------------------------
# Hello
# ---------------------------------------------------------------------------------------


def test_hello_checks_versions_and_identity():
    a, b = pair()
    ev = b.receive_data(a.hello())
    assert ev == [HelloReceived(b.peer, 1)]
    # a host that speaks only version 7
    c = Connection(HA, RA, versions=(7,))
    with pytest.raises(VersionMismatch):
        Connection(HB, RB).receive_data(c.hello())
    # a hello naming an address its resource does not hash to
    liar = Connection(HB, RA)
    with pytest.raises(IdentityMismatch):
        Connection(HA, RA).receive_data(liar.hello())
    # a true identity, but not the one this side meant to reach
    x = Connection(HA, RA, peer_address=HA)
    before = x.snapshot()
    with pytest.raises(IdentityMismatch):
        x.receive_data(Connection(HB, RB).hello())
    assert x.snapshot() == before
    # a second hello is not allowed
    a2, b2 = opened()
    with pytest.raises(UnexpectedFrame):
        b2.receive_data(encode_frame(Hello((1,), HA, RA)))


def test_no_batch_before_hello_either_way():
    a, b = pair()
    with pytest.raises(LocalProtocolError):
        a.send(batch(1))
    with pytest.raises(UnexpectedFrame):
        b.receive_data(encode_frame(batch(1)))


# ---------------------------------------------------------------------------------------
# Delivery: order, duplicates, gaps, acks after commit
# ---------------------------------------------------------------------------------------


def test_the_session_runs_the_delivery_models_rules():
    # The per-channel rule is the core's, not a copy (avm.core.delivery.arrival).
    assert arrival(3, 2, False) == DUPLICATE
    assert arrival(3, 5, True) == DUPLICATE
    assert arrival(3, 4, False) == NEXT
    assert arrival(3, 6, False) == EARLY
    from avm.wire import session
    assert session.arrival is arrival


def test_replayed_frames_apply_nothing_in_this_session_and_the_next():
    a, b = opened()
    wire = b"".join(a.send(batch(s)) for s in (1, 2, 3))
    got = b.receive_data(wire)
    assert [e.batch.seq for e in got] == [1, 2, 3]
    a.receive_data(b.ack(M1, M2, 3))
    # the attacker (or a retransmission) replays the very same bytes
    replay = b.receive_data(wire)
    assert [type(e) for e in replay] == [DuplicateBatch] * 3
    assert not any(isinstance(e, BatchReceived) for e in replay)
    assert b.statistics().duplicates_refused == 3
    # a new session, whose application committed 3: the replay is refused there too
    store = {(M1, M2): 3}
    a2, b2 = opened(committed_b=lambda c: store.get(c, 0))
    replay2 = b2.receive_data(wire)
    assert [type(e) for e in replay2] == [DuplicateBatch] * 3
    assert [e.committed for e in replay2] == [3, 3, 3]
    # and number 4 is accepted there
    assert [type(e) for e in b2.receive_data(a2.send(batch(4)))] == [BatchReceived]


def test_early_batches_are_held_and_handed_out_in_order_when_the_gap_fills():
    a, b = opened()
    b1, b2, b3, b4 = (a.send(batch(s)) for s in (1, 2, 3, 4))
    assert [type(e) for e in b.receive_data(b1)] == [BatchReceived]
    ev = b.receive_data(b3 + b4)
    assert ev == [BatchHeld((M1, M2), 3, 2, 2), BatchHeld((M1, M2), 4, 2, 2)]
    assert [type(e) for e in b.receive_data(b4)] == [DuplicateBatch]  # held is had
    assert a.receive_data(b.send(GapRequest(M1, M2, 2, 2))) == [GapRequested((M1, M2), 2, 2)]
    ev = b.receive_data(b2)
    assert [e.batch.seq for e in ev] == [2, 3, 4]
    assert b.statistics().held == 0


def test_channels_are_independent():
    a, b = opened()
    other = ident(b"m3")[0]
    ev = b.receive_data(a.send(batch(1)) + a.send(batch(1, sender=other)))
    assert [(e.batch.sender, e.batch.seq) for e in ev] == [(M1, 1), (other, 1)]


def test_ack_only_for_what_was_handed_out_and_never_backwards():
    a, b = opened()
    with pytest.raises(LocalProtocolError):
        b.ack(M1, M2, 1)  # nothing handed out yet
    b.receive_data(a.send(batch(1)) + a.send(batch(2)))
    before = b.snapshot()
    with pytest.raises(LocalProtocolError):
        b.ack(M1, M2, 3)
    assert b.snapshot() == before
    data = b.ack(M1, M2, 1)
    with pytest.raises(LocalProtocolError):
        b.ack(M1, M2, 0)
    assert a.receive_data(data) == [Acked((M1, M2), 1, ())]
    assert a.in_flight == 1
    a.receive_data(b.ack(M1, M2, 2) + b.ack(M1, M2, 2))  # re-acking is allowed
    assert a.in_flight == 0
    with pytest.raises(LocalProtocolError):
        b.send(Ack(M1, M2, 2))  # the only way to ack is ack()


def test_acks_never_settle_what_this_session_did_not_send():
    a, b = opened()
    a.send(batch(1))
    lie = encode_frame(Ack(M1, M2, 50))
    assert a.receive_data(lie) == [Acked((M1, M2), 1, ())]
    assert a.statistics().acks_clamped == 1
    other = ident(b"m9")[0]
    assert a.receive_data(encode_frame(Ack(other, M2, 7))) == []
    assert a.statistics().acks_ignored == 1


def test_window_back_pressure_and_flood_refusal():
    a, b = opened(window=4)
    for s in range(1, 5):
        b.receive_data(a.send(batch(s)))
    assert not a.can_send()
    before = a.snapshot()
    with pytest.raises(LocalProtocolError, match="window"):
        a.send(batch(5))
    assert a.snapshot() == before
    a.send(batch(2))  # a retransmission always fits
    a.receive_data(b.ack(M1, M2, 2))
    assert a.can_send(2) and not a.can_send(3)
    # a peer that ignores the window is refused, and nothing of the flood applies
    flood = b"".join(encode_frame(batch(s)) for s in range(5, 5 + 9))
    before = b.snapshot()
    with pytest.raises(LimitExceeded):
        b.receive_data(flood)
    assert b.snapshot() == before


def test_reject_definite_consumes_the_number_indefinite_hands_it_out_again():
    a, b = opened()
    b.receive_data(a.send(batch(1)) + a.send(batch(2)))
    ev = a.receive_data(b.reject(M1, M2, 1, True, "unknown machine"))
    assert ev == [Rejected((M1, M2), 1, True, "unknown machine")]
    assert a.in_flight == 1
    with pytest.raises(LocalProtocolError):
        b.reject(M1, M2, 1, True, "again")
    ev = a.receive_data(b.reject(M1, M2, 2, False, "commit outcome unknown"))
    assert ev == [Rejected((M1, M2), 2, False, "commit outcome unknown")]
    assert a.in_flight == 1  # still the sender's to retry
    # the retransmission is handed out again (the store decides whether it applied)
    assert [type(e) for e in b.receive_data(a.send(batch(2)))] == [BatchReceived]


def test_pings_and_pongs():
    a, b = opened()
    assert b.receive_data(a.send(Ping(9))) == [PingReceived(9)]
    with pytest.raises(LocalProtocolError):
        a.send(Ping(9))  # already outstanding
    a.receive_data(b.send(Pong(9)))
    with pytest.raises(UnexpectedFrame):
        a.receive_data(b.send(Pong(9)))  # answered already


def test_close_handshake_and_frames_after_our_close():
    a, b = opened()
    b.receive_data(a.send(batch(1)))
    ack = b.ack(M1, M2, 1)
    ev = b.receive_data(a.close("ok", "bye"))
    assert ev == [CloseReceived("ok", "bye")]
    assert a.state == "close-sent" and b.state == "close-received"
    with pytest.raises(LocalProtocolError):
        a.send(batch(2))
    assert a.receive_data(ack) == [Acked((M1, M2), 1, ())]  # sent before b saw the close
    with pytest.raises(LocalProtocolError):
        b.send(Ping(1))
    a.receive_data(b.close())
    assert a.state == b.state == "closed"
    assert a.receive_data(b"") == [ConnectionClosed(clean=True)]


def test_fail_gives_a_close_with_the_errors_code():
    a, b = opened()
    try:
        b.receive_data(struct.pack(">I", FRAME_BYTES_MAX + 1))
    except WireError as e:
        data = b.fail(e)
    assert a.receive_data(data) == [
        CloseReceived("frame-too-large", f"a frame of {FRAME_BYTES_MAX + 1} bytes announced; "
                      f"the limit is {FRAME_BYTES_MAX}")]


# ---------------------------------------------------------------------------------------
# The session against its transition table, fuzzed
# ---------------------------------------------------------------------------------------

SAMPLES = {
    "hello": lambda: Hello((1,), HA, RA),
    "batch": lambda: batch(1),
    "ack": lambda: Ack(M2, M1, 0),
    "gap": lambda: GapRequest(M1, M2, 1, 1),
    "reject": lambda: Reject(M2, M1, 1, False, "x"),
    "ping": lambda: Ping(1),
    "pong": lambda: Pong(1),
    "close": lambda: Close(),
}
EXERCISED: set = set()


def act(conn: Connection, direction: str, kind: str) -> None:
    """One step of the fuzzer: send or receive one frame of ``kind`` (or the end)."""
    before_state, before = conn.state, conn.snapshot()
    expected = TRANSITIONS.get((before_state, direction, kind))
    try:
        if direction == "recv":
            if kind == "eof":
                conn.receive_data(b"")
            else:
                conn.receive_data(encode_frame(SAMPLES[kind]()))
        elif kind == "hello":
            conn.hello()
        elif kind == "ack":
            conn.ack(M2, M1, conn.committed((M2, M1)))
        elif kind == "reject":
            conn.reject(M2, M1, 1, False, "x")
        else:
            conn.send(SAMPLES[kind]())
    except WireError as e:
        assert conn.snapshot() == before, "a refused act changed the session"
        if expected is None:
            assert isinstance(e, LocalProtocolError if direction == "send" else RemoteProtocolError)
        else:
            # allowed by the table, refused by a rule about its content (a pong for no
            # ping, an ack of nothing handed out, a second eof): still typed
            assert kind in ("pong", "reject", "ping") or before_state == "closed", (kind, e)
        return
    assert expected is not None or (kind == "eof" and before_state == "closed"), (
        before_state, direction, kind)
    assert conn.state == (expected or "closed")
    EXERCISED.add((before_state, direction, kind))


kinds = st.sampled_from([*LAYOUTS, "eof"])
steps = st.lists(st.tuples(st.sampled_from(["send", "recv"]), kinds), max_size=14)


@given(steps)
@settings(max_examples=1500, deadline=None)
def test_session_follows_its_transition_table_under_random_events(ops):
    conn = Connection(HB, RB)
    for direction, kind in ops:
        if (conn._eof and direction == "recv") or (direction, kind) == ("send", "eof"):
            continue  # the stream ends once; "sending eof" is not an act of the session
        act(conn, direction, kind)


def test_every_transition_of_the_table_is_exercised():
    # Drive each entry directly from its state (the fuzzer above finds most of them).
    routes = {
        "start": [], "hello-sent": [("send", "hello")], "hello-received": [("recv", "hello")],
        "open": [("send", "hello"), ("recv", "hello")],
        "close-sent": [("send", "hello"), ("recv", "hello"), ("send", "close")],
        "close-received": [("send", "hello"), ("recv", "hello"), ("recv", "close")],
    }
    for (state, direction, kind), nxt in TRANSITIONS.items():
        conn = Connection(HB, RB)
        for d, k in routes[state]:
            act(conn, d, k)
        assert conn.state == state
        if kind == "pong" and direction == "recv":
            conn._pings = frozenset({1})  # as if a ping had been sent
        if kind == "reject" and direction == "send":
            conn.receive_data(encode_frame(Batch(M2, M1, 1, (0, 0), 0.0, ())))
        act(conn, direction, kind)
        assert (state, direction, kind) in EXERCISED, (state, direction, kind)
        assert conn.state == nxt
    assert set(STATES) == {s for s, _, _ in TRANSITIONS} | {"closed"}
    assert set(DATA_KINDS) | {"hello", "close"} == set(LAYOUTS)


# ---------------------------------------------------------------------------------------
# Two sessions over a lossy, duplicating, reordering in-memory pipe: exactly once
# ---------------------------------------------------------------------------------------


@given(st.integers(1, 40), st.integers(0, 2**32))
@settings(max_examples=150, deadline=None)
def test_retransmission_over_a_faulty_pipe_applies_each_batch_once_in_order(n, seed):
    rnd = random.Random(seed)
    store: dict = {}
    a, b = opened(window=8, committed_b=lambda c: store.get(c, 0))
    outbox = {s: batch(s) for s in range(1, n + 1)}
    applied: list[int] = []
    acked = 0
    nxt = 1
    rounds = 0
    while acked < n:
        rounds += 1
        assert rounds < 40 * n + 100, "no progress after the network healed"
        faulty = rounds <= 4 * n  # then the network heals (P1 holds once it does)
        loss = 0.25 if faulty else 0.0
        frames_out = []
        while nxt <= n and a.can_send():
            frames_out.append(a.send(outbox[nxt]))
            nxt += 1
        if rnd.random() < 0.3 or not frames_out:  # the retry timer: resend what is unacked
            frames_out += [a.send(outbox[s]) for s in range(acked + 1, nxt)]
        # the pipe: drop, duplicate, reorder (whole frames; the stream below is TCP)
        sent = [f for f in frames_out if rnd.random() >= loss]
        if faulty:
            sent += [f for f in sent if rnd.random() < 0.2]
            rnd.shuffle(sent)
        acks = []
        for f in sent:
            for e in b.receive_data(f):
                if isinstance(e, BatchReceived):
                    applied.append(e.batch.seq)  # "commit", then ack
                    store[e.batch.channel] = e.batch.seq
                    acks.append(b.ack(M1, M2, e.batch.seq))
                elif isinstance(e, DuplicateBatch):
                    acks.append(b.ack(M1, M2, e.committed))
        for f in acks:
            if rnd.random() >= loss:
                for e in a.receive_data(f):
                    if isinstance(e, Acked):
                        acked = max(acked, e.upto)
    assert applied == list(range(1, n + 1))


# ---------------------------------------------------------------------------------------
# The generated document and the fuzz script
# ---------------------------------------------------------------------------------------


def test_network_doc_tables_are_generated_from_the_code():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "wire_doc.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_fuzz_script_runs_and_finds_no_crash():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_wire.py"), "--count", "3000",
                        "--seed", "7"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "crashes: 0" in r.stdout
    assert "inputs/s" in r.stdout
