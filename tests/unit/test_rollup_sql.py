"""Which questions queries.sql answers from the rollup projections, and how it cuts a range."""

from queries import sql
from queries.catalog import METRICS
from queries.params import parse_buckets, parse_question

M, H, D = 60_000, 3_600_000, 86_400_000
DAY = 1_790_000_000_000 // D * D
ALL = ",".join(METRICS)


def statements(question, buckets=None):
    groups = sql.component_groups(question.metrics).values()
    if buckets is None:
        return [sql.totals(question, components) for components in groups]
    return [sql.timeseries(question, buckets, components) for components in groups]


def test_split_cuts_days_hours_and_edge_minutes():
    assert sql.split([(DAY - D - 2 * H - 5 * M, DAY + H + 7 * M)]) == {
        "toStartOfDay(minute)": [(DAY - D, DAY)],
        "toStartOfHour(minute)": [(DAY - D - 2 * H, DAY - D), (DAY, DAY + H)],
        "minute": [(DAY - D - 2 * H - 5 * M, DAY - D - 2 * H), (DAY + H, DAY + H + 7 * M)]}
    assert sql.split([(DAY, DAY + 30 * M), (DAY + 30 * M, DAY + 2 * H)]) == {
        "minute": [(DAY, DAY + H)], "toStartOfHour(minute)": [(DAY + H, DAY + 2 * H)]}


def test_split_joins_neighbours_so_aligned_buckets_make_one_span_per_level():
    hours = [(DAY + i * H, DAY + (i + 1) * H) for i in range(30)]
    assert sql.split(hours) == {"toStartOfHour(minute)": [(DAY, DAY + 30 * H)]}


def test_long_ranges_by_video_or_account_use_the_rollups():
    question = parse_question("a", "video", ALL, "video==x,y", str(DAY - 3 * D + 7 * M), str(DAY + 5 * M))
    for statement in statements(question):
        assert "toStartOfDay(minute) >=" in statement.sql and "toStartOfHour(minute) >=" in statement.sql
        assert statement.sql.endswith("SETTINGS optimize_time_filter_with_preimage = 0")


def test_other_dimensions_short_ranges_and_minute_maxima_read_the_minute_tables():
    for dimensions, where, start in (("video,country", None, DAY - 3 * D), ("video", "country==US", DAY - 3 * D),
                                     ("video", None, DAY + 3 * M)):
        question = parse_question("a", dimensions, ALL, where, str(start), str(DAY + 50 * M))
        assert all(" UNION ALL " not in statement.sql for statement in statements(question))
    long = parse_question("a", "video", ALL, None, str(DAY - 3 * D), str(DAY))
    for buckets in (parse_buckets(long, "30m", None), parse_buckets(long, None, "1")):
        for statement in statements(long, buckets):
            rolled = " UNION ALL " in statement.sql
            assert rolled == (buckets.step_ms >= H and not statement.components[0].max_of_minutes)
