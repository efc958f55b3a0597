import pytest

from queries.params import Filter, QueryError, parse_buckets, parse_page, parse_question, parse_where

M = 60_000
NOW = 1_700_000_123_456


def question(**overrides):
    args = dict(account="1234", dimensions="video", metrics="video_view", where=None, start=None, end=None)
    args.update(overrides)
    return parse_question(now_ms=NOW, **args)


def test_defaults_are_the_last_32_days_with_the_current_minute_included():
    q = question()
    assert q.end_ms == NOW - NOW % M + M
    assert q.start_ms == (NOW - 32 * 24 * 3600 * 1000) - (NOW - 32 * 24 * 3600 * 1000) % M


def test_from_is_floored_and_to_minute_included():
    q = question(start="1581767880123", end="1581767999999")
    assert (q.start_ms, q.end_ms) == (1581767880000, 1581768000000)


def test_iso_8601_with_offset_even_when_plus_became_space():
    q = question(start="2020-02-15T10:00:00 02:00", end="2020-02-15T10:59:59.999Z")
    assert q.start_ms == 1581753600000
    assert q.end_ms == 1581764400000


@pytest.mark.parametrize("kwargs, message", [
    (dict(dimensions="vid"), "unknown dimension"),
    (dict(metrics="views"), "unknown metric"),
    (dict(metrics=""), "`metrics` is required"),
    (dict(start="1581767999999", end="1581767880000"), "after"),
    (dict(start="yesterday"), "epoch milliseconds or ISO 8601"),
    (dict(where="video=5555"), "malformed"),
    (dict(where="live==maybe"), "live takes"),
    (dict(where="colour==red"), "unknown dimension in where"),
])
def test_bad_questions_say_what_is_wrong(kwargs, message):
    with pytest.raises(QueryError, match=message):
        question(**kwargs)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(QueryError) as caught:
        question(metrics="ccu,nope")
    assert "fingerprint_count" in caught.value.valid


def test_where_clauses_and_lists():
    assert parse_where("video==5555,5556;country==US") == (
        Filter("video", ("5555", "5556")), Filter("country", ("US",)))


def test_bucket_duration_and_count():
    q = question(start=str(0), end=str(3 * 3600 * 1000 - 1))
    buckets = parse_buckets(q, "1h", None)
    assert (buckets.step_ms, buckets.count) == (3600 * 1000, 3)
    assert buckets.timestamps() == [0, 3600 * 1000, 7200 * 1000]


def test_bucket_limit_cuts_into_whole_minutes():
    q = question(start="0", end=str(10 * M - 1))  # 10 minutes
    assert (parse_buckets(q, None, "1").count, parse_buckets(q, None, "1").step_ms) == (1, 10 * M)
    three = parse_buckets(q, None, "3")
    assert (three.step_ms, three.count) == (4 * M, 3)


@pytest.mark.parametrize("duration, limit, message", [
    ("1h", "2", "use one of"), ("5s", None, "bucket_duration"), (None, "0", "bucket_limit"), ("0m", None, "bucket_duration")])
def test_bad_buckets(duration, limit, message):
    with pytest.raises(QueryError, match=message):
        parse_buckets(question(), duration, limit)


def test_too_many_points_is_refused():
    with pytest.raises(QueryError, match="50000"):
        parse_buckets(question(start=str(NOW - 35 * 24 * 3600 * 1000)), "1m", None)  # 50,400 minutes
    assert parse_buckets(question(), "1m", None).count == 46_081  # the default 32 days fit


def test_page():
    assert parse_page("-video_view", "10", "20", ("video_view",)) == ("video_view", True, 10, 20)
    with pytest.raises(QueryError, match="sort"):
        parse_page("ccu", None, None, ("video_view",))
    with pytest.raises(QueryError, match="limit"):
        parse_page(None, "10001", None, ("video_view",))


def test_numbers_that_python_reads_but_clickhouse_cannot_hold_are_400s():
    for start in ("\u00b2", "9" * 4301, "253402300000000", "-5"):
        with pytest.raises(QueryError):
            parse_question("a", "video", "ccu", None, start, None)
    question = parse_question("a", "video", "ccu", None, "1700000000000", "1700000600000")
    for limit in ("\u00b2", "9" * 4301):
        with pytest.raises(QueryError):
            parse_buckets(question, None, limit)
    with pytest.raises(QueryError):
        parse_page(None, "\u00b2", None, ("ccu",))
