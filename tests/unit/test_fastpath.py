"""The tracker's fast path (ingest.fastpath) accepts and rejects exactly what the models do, with the same reasons
and the same Kafka message, on a corpus of valid and invalid batches and on generated ones."""

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest import enrich as slow
from ingest import fastpath
from ingest.enrich import Sender
from ingest.models import EVENT_TYPES, MAX_MS, Envelope, batch_dict, decode_batch

NOW = 1_700_000_000_000
LATENESS_S = 7 * 24 * 3600
SENDER = Sender(NOW, "81.2.69.160", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                    "Chrome/124.0.0.0 Safari/537.36")
SALT = b"test-salt"

VALID = [
    {"id": "1", "type": "impression", "ts": NOW - 2000},
    {"id": "2", "type": "view", "ts": NOW - 1500},
    {"id": "3", "type": "first_frame", "ts": NOW - 1400, "startup_ms": 812},
    {"id": "4", "type": "heartbeat", "ts": NOW - 1000, "watched_ms": 10_000, "position": 12.5, "percentiles": [0, 1, 2]},
    {"id": "5", "type": "heartbeat", "ts": NOW - 900},
    {"id": "6", "type": "heartbeat", "ts": NOW - 800, "position": 7, "unknown": "\x00 ignored"},
    {"id": "7", "type": "quartile", "ts": NOW - 700, "percent": 25},
    {"id": "8", "type": "rebuffer", "ts": NOW - 600, "duration_ms": 600_000},
    {"id": "9", "type": "ad_start", "ts": NOW - 500, "server_side": True},
    {"id": "10", "type": "error", "ts": NOW - 400, "code": "MEDIA_ERR_DECODE", "message": "decode failed", "fatal": False},
    {"id": "11", "type": "error", "ts": NOW - 300},
    {"id": "a-b_c.d e", "type": "stop", "ts": NOW, "watched_ms": 0, "position": None, "percentiles": []},
    {"id": "x" * 64, "type": "view", "ts": NOW + 60_000},
]
INVALID = [
    {"id": "1", "type": "view", "ts": NOW},                                  # a duplicate of the view above
    {"id": "", "type": "view", "ts": NOW},
    {"id": "   ", "type": "view", "ts": NOW},
    {"id": "x" * 65, "type": "view", "ts": NOW},
    {"id": "bell\x07", "type": "view", "ts": NOW},
    {"id": 12, "type": "view", "ts": NOW},
    {"id": "v", "type": "bogus", "ts": NOW},
    {"id": "v", "ts": NOW},
    {"id": "v", "type": ["view"], "ts": NOW},
    {"id": "v", "type": "view"},
    {"id": "v", "type": "view", "ts": -1},
    {"id": "v", "type": "view", "ts": MAX_MS + 1},
    {"id": "v", "type": "view", "ts": 2**70},
    {"id": "v", "type": "view", "ts": NOW + 60_001},                          # in the future
    {"id": "v", "type": "view", "ts": NOW - LATENESS_S * 1000 - 1},           # too late
    {"id": "f", "type": "first_frame", "ts": NOW},
    {"id": "f", "type": "first_frame", "ts": NOW, "startup_ms": 600_001},
    {"id": "h", "type": "heartbeat", "ts": NOW, "watched_ms": -1},
    {"id": "h", "type": "heartbeat", "ts": NOW, "watched_ms": None},
    {"id": "h", "type": "heartbeat", "ts": NOW, "position": "12"},
    {"id": "h", "type": "heartbeat", "ts": NOW, "percentiles": [101]},
    {"id": "h", "type": "heartbeat", "ts": NOW, "percentiles": list(range(100)) * 11},
    {"id": "h", "type": "heartbeat", "ts": NOW, "percentiles": "1,2"},
    {"id": "h", "type": "heartbeat", "ts": NOW, "percentiles": None},
    {"id": "h", "type": "heartbeat", "ts": NOW, "percentiles": {}},
    {"id": "q", "type": "quartile", "ts": NOW, "percent": 30},
    {"id": "q", "type": "quartile", "ts": NOW},
    {"id": "r", "type": "rebuffer", "ts": NOW, "duration_ms": 1.5},
    {"id": "a", "type": "ad_start", "ts": NOW, "server_side": "yes"},
    {"id": "e", "type": "error", "ts": NOW, "code": "x" * 65},
    {"id": "e", "type": "error", "ts": NOW, "message": "line\nbreak"},
    {"id": "e", "type": "error", "ts": NOW, "fatal": "no"},
    "not an event",
    None,
    ["view"],
]
# accepted by the models after coercion or trimming: the fast path leaves these to them, with the same result
COERCED = [
    {"id": " padded ", "type": "view", "ts": NOW - 100},
    {"id": "ünïcode", "type": "view", "ts": NOW - 99},
    {"id": "c", "type": "view", "ts": float(NOW - 98)},
    {"id": "d", "type": "view", "ts": str(NOW - 97)},
    {"id": "e2", "type": "heartbeat", "ts": NOW - 96, "watched_ms": 1000.0, "position": True},
    {"id": "f2", "type": "quartile", "ts": NOW - 95, "percent": 50.0},
    {"id": "g2", "type": "error", "ts": NOW - 94, "code": " CODE ", "message": "é", "fatal": 0},
    {"id": "h2", "type": "ad_start", "ts": NOW - 93, "server_side": 1},
]


def envelope(events, **overrides):
    body = {"account": "1234", "player": "web", "session": "abcdefgh", "video": "5555",
            "context": {"tz": "Europe/Berlin", "page": "https://www.example.com/watch", "duration": 600}, "events": events}
    body.update(overrides)
    return Envelope.model_validate(body)


def assert_same(env):
    slow_accepted, slow_rejected = slow.check_events(env, NOW, LATENESS_S)
    fast_accepted, fast_rejected = fastpath.check_events(env, NOW, LATENESS_S)
    assert fast_rejected == slow_rejected
    slow_batch = batch_dict(slow.enrich(env, slow_accepted, SENDER, SALT))
    fast_batch = fastpath.enrich(env, fast_accepted, SENDER, SALT)
    assert fast_batch == slow_batch
    assert orjson.dumps(fast_batch) == orjson.dumps(slow_batch)  # the same Kafka message, byte for byte


def test_the_message_leaves_defaults_out_and_reads_back_whole():
    env = envelope(VALID + COERCED)
    accepted, _ = fastpath.check_events(env, NOW, LATENESS_S)
    message = orjson.dumps(fastpath.enrich(env, accepted, SENDER, SALT))
    decoded = decode_batch(message)
    assert decoded == slow.enrich(env, slow.check_events(env, NOW, LATENESS_S)[0], SENDER, SALT)
    # a message with every field, as trackers wrote before, reads as the same batch
    whole = orjson.dumps({**msgspec.structs.asdict(decoded),
                          "events": [msgspec.structs.asdict(event) for event in decoded.events]})
    assert decode_batch(whole) == decoded and len(message) < 0.8 * len(whole)
    for default in (b'"fatal":false', b'"code":""', b'"percentiles":[]', b'"startup_ms":null', b'"percent":0'):
        assert default not in message


def test_a_batch_of_valid_invalid_and_coerced_events_is_judged_the_same():
    assert_same(envelope(VALID + INVALID + COERCED))
    assert_same(envelope(VALID + COERCED, sent_at=NOW + 3_600_000))  # a device clock an hour fast


def test_each_event_alone_is_judged_the_same():
    for event in VALID + INVALID + COERCED:
        assert_same(envelope([event]))


def test_the_plain_events_take_the_fast_way_and_the_rest_the_models():
    """Else the fast path would be the slow one: every valid event of the corpus is checked by hand."""
    assert all(fastpath.plain_event(event) is not None for event in VALID)
    assert all(fastpath.plain_event(event) is None for event in COERCED)
    rejected_by_the_models = [event for event in INVALID if fastpath.plain_event(event) is None]
    # only the duplicate and the two out-of-window times are valid events as such; time and ids are checked after
    assert len(INVALID) - len(rejected_by_the_models) == 3


MS_VALUES = st.one_of(st.integers(-2, 600_002), st.sampled_from([0, 600_000, 600_001, True, 1.0, 1.5, "5", None]))
TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", " x ", "a\x00", "é", "x" * 64, "x" * 65, "y" * 257, 5]))
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from([*EVENT_TYPES, "bogus", 1, None, " view"])},
    optional={
        "id": st.one_of(st.from_regex(r"[ -~]{0,3}", fullmatch=True), TEXT, st.integers(0, 9)),
        "ts": st.one_of(st.sampled_from([NOW, NOW - 1, NOW + 60_000, NOW + 60_001, NOW - LATENESS_S * 1000 - 1,
                                         float(NOW), str(NOW), True, -1, MAX_MS + 1]),
                        st.integers(NOW - 10**6, NOW + 10**6)),
        "watched_ms": MS_VALUES, "startup_ms": MS_VALUES, "duration_ms": MS_VALUES,
        "position": st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-(2**60), 2**60), st.booleans(), TEXT),
        "percentiles": st.one_of(st.lists(st.one_of(st.integers(-2, 102), st.booleans(), st.floats(0, 100)), max_size=4),
                                 TEXT, st.sampled_from([None, {}, 0, False])),
        "percent": st.sampled_from([25, 50, 75, 100, 30, 25.0, "25", True, None]),
        "server_side": st.sampled_from([True, False, 0, 1, "true", None]),
        "fatal": st.sampled_from([True, False, 0, 1, "false", None]),
        "code": TEXT, "message": TEXT,
    })


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.one_of(EVENTS, st.sampled_from(VALID + INVALID)), min_size=1, max_size=8),
       sent_at=st.one_of(st.none(), st.sampled_from([NOW, NOW + 3_600_000, NOW - 5_000])))
def test_generated_batches_are_judged_the_same(events, sent_at):
    assert_same(envelope(events, sent_at=sent_at))


BASE = {"account": "1234", "player": "web", "session": "abcdefgh", "video": "5555", "events": [VALID[0]]}
PLAIN_ENVELOPES = [
    BASE,
    {**BASE, "v": 1, "live": True, "sent_at": NOW, "unknown": "\x00 ignored"},
    {**BASE, "sent_at": None, "sent_at2": 5, "account": "a-b_C", "session": "s" * 64, "player": "x" * 64},
    {**BASE, "video": "a video: with spaces", "context": {}},
    {**BASE, "context": {"tz": "Europe/Berlin", "page": "https://WWW.Example.com/watch?x=1", "duration": 600}},
    {**BASE, "context": {"tz": "Not/AZone", "user": "u-1", "page": "", "duration": 12.5, "other": [1]}},
    {**BASE, "context": {"tz": "", "page": "not a url [", "duration": 0}},
    {**BASE, "context": {"tz": None, "user": None, "page": None, "duration": None}},
    {**BASE, "context": {"tz": "UTC", "page": "http://[::1", "duration": 2**53}},
]
OTHER_ENVELOPES = [  # each valid with coercion by the model, or invalid: the model decides
    [], "text", None, {**BASE, "v": 2}, {**BASE, "v": None}, {**BASE, "v": True}, {**BASE, "v": 1.0},
    {k: v for k, v in BASE.items() if k != "account"}, {**BASE, "account": ""}, {**BASE, "account": "a" * 65},
    {**BASE, "account": " 1234 "}, {**BASE, "account": "12 34"}, {**BASE, "account": 1234},
    {**BASE, "session": "short"}, {**BASE, "session": "s" * 65}, {**BASE, "session": "abcdefgh\n"},
    {**BASE, "player": ""}, {**BASE, "player": "   "}, {**BASE, "player": " web "}, {**BASE, "player": "x" * 65},
    {**BASE, "player": "wéb"}, {**BASE, "player": "w\x07"}, {**BASE, "video": "v" * 129}, {**BASE, "video": 5555},
    {**BASE, "live": "true"}, {**BASE, "live": 1}, {**BASE, "live": None},
    {**BASE, "sent_at": -1}, {**BASE, "sent_at": MAX_MS + 1}, {**BASE, "sent_at": float(NOW)}, {**BASE, "sent_at": True},
    {**BASE, "sent_at": str(NOW)}, {**BASE, "events": []}, {**BASE, "events": {"0": VALID[0]}},
    {k: v for k, v in BASE.items() if k != "events"}, {**BASE, "context": None}, {**BASE, "context": []},
    {**BASE, "context": {"tz": " UTC "}}, {**BASE, "context": {"tz": "x" * 65}}, {**BASE, "context": {"tz": 5}},
    {**BASE, "context": {"user": ""}}, {**BASE, "context": {"user": "u" * 129}}, {**BASE, "context": {"user": " u"}},
    {**BASE, "context": {"page": "p" * 2049}}, {**BASE, "context": {"page": "https://é.example"}},
    {**BASE, "context": {"page": "a\tb"}}, {**BASE, "context": {"duration": -1}},
    {**BASE, "context": {"duration": True}}, {**BASE, "context": {"duration": "12"}},
    {**BASE, "context": {"duration": 2**60}},
]


def model_fields(payload):
    """What the tracker reads of an envelope, from the model; None when the model refuses it."""
    try:
        env = Envelope.model_validate(payload)
    except ValidationError:
        return None
    context = env.context
    return {"v": env.v, "account": env.account, "player": env.player, "session": env.session, "video": env.video,
            "live": env.live, "sent_at": env.sent_at,
            "context": {"tz": context.tz, "user": context.user, "page": context.page, "duration": context.duration,
                        "domain": context.domain}, "events": env.events}


def assert_same_envelope(payload):
    plain = fastpath.plain_envelope(payload)
    if plain is not None:
        expected = model_fields(payload)
        assert expected is not None, payload
        # the same values and types (600.0 is not 600)
        assert orjson.dumps(msgspec.to_builtins(plain)) == orjson.dumps(expected), payload


def test_plain_envelopes_are_read_as_the_model_reads_them_and_take_the_fast_way():
    for payload in PLAIN_ENVELOPES:
        assert fastpath.plain_envelope(payload) is not None, payload
        assert_same_envelope(payload)


def test_every_other_envelope_is_left_to_the_model():
    """Anything the model would coerce, trim, drop or refuse goes to the model: its reasons stay the only ones."""
    for payload in OTHER_ENVELOPES:
        assert fastpath.plain_envelope(payload) is None, payload


ENVELOPE_TEXT = st.one_of(TEXT, st.from_regex(r"[A-Za-z0-9_ -]{0,70}", fullmatch=True), st.none())
def mostly(*valid):
    """Usually one of ``valid``, else any text: most generated envelopes are plain, the rest test the borders."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid), ENVELOPE_TEXT)


ENVELOPES = st.fixed_dictionaries({
    "account": mostly("1234", "a-b_C", "x" * 64), "session": mostly("abcdefgh", "s" * 64, "A_b-c123"),
    "player": mostly("web", "p 1", "x" * 64), "video": mostly("5555", "a video", "v" * 128),
    "events": st.sampled_from([[VALID[0]], [VALID[0]], [VALID[0]], [VALID[0]], [], None, "x"]),
}, optional={
    "v": st.sampled_from([1, 1, 2, None, True, 1.0]), "live": st.sampled_from([True, False, 0, "true", None]),
    "sent_at": st.sampled_from([NOW, 0, -1, MAX_MS, MAX_MS + 1, None, float(NOW), True]),
    "context": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "tz": st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "Bad/Zone", " UTC", ""]), ENVELOPE_TEXT),
        "user": mostly(None, "u-1"), "page": mostly("https://A.b/c", "http://[x", ""),
        "duration": st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-5, 2**60), st.booleans())}),
        st.just({"tz": "UTC"})),
})


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENVELOPES)
def test_generated_envelopes_are_read_as_the_model_reads_them(payload):
    assert_same_envelope(payload)
