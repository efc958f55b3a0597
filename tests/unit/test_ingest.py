"""The beacon contract and enrichment, with plain data."""

import ipaddress

import pytest
from pydantic import ValidationError

from ingest.enrich import Sender, check_events, enrich
from ingest.geo import locate
from ingest.identity import ClientAddress, client_ip, fingerprint, session_key
from ingest.models import Envelope, encode_batch
from ingest.timing import event_time_ms, time_error
from ingest.useragent import classify

NOW = 1_700_000_000_000
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")


def envelope(**overrides):
    body = {"account": "1234", "player": "p", "session": "abcdefgh", "video": "5555",
            "events": [{"id": "1", "type": "view", "ts": NOW}]}
    body.update(overrides)
    return Envelope.model_validate(body)


@pytest.mark.parametrize("overrides", [
    {"v": 2}, {"account": "a b"}, {"session": "short"}, {"video": ""}, {"player": "bad\x07"}, {"events": []},
    {"account": "x" * 65},
])
def test_bad_envelopes_are_refused(overrides):
    with pytest.raises(ValidationError):
        envelope(**overrides)


def test_strings_are_trimmed_and_unknown_zones_dropped():
    env = envelope(video=" 5555 ", context={"tz": "Mars/Olympus", "page": "https://Example.com/w?x=1"})
    assert env.video == "5555"
    assert env.context.tz is None
    assert env.context.domain == "example.com"


def test_each_event_is_judged_alone():
    env = envelope(events=[
        {"id": "1", "type": "view", "ts": NOW},
        {"id": "2", "type": "first_frame", "ts": NOW, "startup_ms": 600_001},
        {"id": "3", "type": "quartile", "ts": NOW, "percent": 30},
        {"id": "1", "type": "heartbeat", "ts": NOW},
        {"id": "5", "type": "heartbeat", "ts": NOW + 61_000},
        {"id": "6", "type": "heartbeat", "ts": NOW - 8 * 24 * 3600 * 1000},
        {"id": "7", "type": "stop", "ts": NOW, "watched_ms": 500},
    ])
    accepted, rejected = check_events(env, NOW, 7 * 24 * 3600)
    assert [event.id for event in accepted] == ["1", "7"]
    reasons = {r.index: r.error.split(":")[0] for r in rejected}
    assert reasons == {1: "invalid", 2: "invalid", 3: "duplicate_id", 4: "in_future", 5: "too_late"}


def test_event_time_corrects_the_device_clock():
    # device clock 1 h fast: sent_at and ts are both 1 h ahead; the correction cancels it
    assert event_time_ms(NOW, NOW + 3_600_000, NOW + 3_600_000 - 5_000) == NOW - 5_000
    assert event_time_ms(NOW, None, NOW - 5_000) == NOW - 5_000
    assert time_error(NOW + 60_000, NOW, 3600) is None
    assert time_error(NOW + 60_001, NOW, 3600).startswith("in_future")


def test_forwarded_for_only_from_trusted_proxies():
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_ip("10.1.1.1", "1.2.3.4, 5.6.7.8, 10.0.0.2", trusted) == "5.6.7.8"
    assert client_ip("9.9.9.9", "1.2.3.4", trusted) == "9.9.9.9"
    assert client_ip("10.1.1.1", "not-an-ip", trusted) == "10.1.1.1"


def test_the_trackers_remembered_verdicts_answer_as_client_ip():
    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    cases = [("10.1.1.1", "1.2.3.4, 5.6.7.8, 10.0.0.2"), ("9.9.9.9", "1.2.3.4"), ("10.1.1.1", "not-an-ip"),
             ("10.1.1.1", None), ("10.1.1.1", " , "), ("10.1.1.1", "10.2.2.2, 10.3.3.3"), ("", "1.2.3.4"),
             ("2001:db8::1", "2001:db9::5"), ("10.1.1.1", "1.2.3.4, not-an-ip, 10.0.0.2"), ("bogus", "1.2.3.4")]
    remembered = ClientAddress(trusted, limit=3)  # forgets all several times over the cases
    for _ in range(2):
        for peer, forwarded in cases:
            assert remembered(peer, forwarded) == client_ip(peer, forwarded, trusted), (peer, forwarded)
    assert len(remembered._verdicts) <= 3


def test_the_trackers_reading_of_addresses_judges_as_ipaddress_does():
    """ClientAddress reads IPv4 with inet_pton and integers; its verdicts equal ``ipaddress``'s on edge cases and on
    generated strings of address characters."""
    import random

    from ingest.identity import _trust

    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.128/25"),
               ipaddress.ip_network("203.0.113.7/32"), ipaddress.ip_network("2001:db8::/32")]
    edges = ["10.0.0.1", "10.255.255.255", "11.0.0.0", "9.255.255.255", "192.168.1.127", "192.168.1.128",
             "192.168.1.255", "203.0.113.7", "203.0.113.8", "0.0.0.0", "255.255.255.255", "010.0.0.1", "10.0.0.01",
             "10.0.0", "10.0.0.0.1", "256.0.0.1", "10.0.0.1 ", " 10.0.0.1", "10.0.0.1\n", "10.0.0.1\x00", "1e1.0.0.1",
             "0x0a.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "2001:db9::1", "fe80::1%eth0", "", "localhost", "10.0.0.-1"]
    rng = random.Random(12)
    generated = ["".join(rng.choice("0123456789.:af ") for _ in range(rng.randint(1, 16))) for _ in range(3000)]
    generated += [".".join(str(rng.choice([0, 1, 10, 127, 128, 192, 168, 203, 255, 256, rng.randint(0, 300)]))
                           for _ in range(4)) for _ in range(3000)]
    judge = ClientAddress(trusted)._judge
    for address in edges + generated:
        assert judge(address) == _trust(address, trusted), repr(address)
    assert judge("10.1.2.3") is True and judge("11.1.2.3") is False and judge("nonsense") is None


def test_fingerprint_is_keyed_and_stable():
    one = fingerprint(b"salt", "1234", "1.2.3.4", "UA", "p")
    assert one == fingerprint(b"salt", "1234", "1.2.3.4", "UA", "p")
    assert one != fingerprint(b"other", "1234", "1.2.3.4", "UA", "p")
    assert one != fingerprint(b"salt", "1234", "1.2.3.5", "UA", "p")
    assert 0 <= one < 2 ** 64
    assert session_key("1234", one, "abcdefgh") != session_key("1234", one, "abcdefgi")


def test_user_agents_are_classified():
    assert classify(IPHONE)[:3] == ("mobile", "iOS", "Mobile Safari")
    assert classify("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)").is_bot
    assert classify("Mozilla/5.0 (PlayStation 5 3.11) AppleWebKit/605.1.15").device_type == "console"
    assert classify("").device_type == "other"


def test_geo_unknown_is_zz_never_an_error():
    assert locate("8.8.8.8")[:2] == ("US", "NA")
    assert locate("10.0.0.1") == ("ZZ", "", "")
    assert locate("nonsense") == ("ZZ", "", "")


def test_enriched_batch_keeps_no_raw_ip_or_user_agent():
    env = envelope(context={"user": "u1"})
    accepted, _ = check_events(env, NOW, 3600)
    batch = enrich(env, accepted, Sender(NOW, "81.2.69.142", IPHONE), b"salt")
    dumped = encode_batch(batch).decode()
    assert "81.2.69.142" not in dumped and "iPhone OS" not in dumped
    assert (batch.country, batch.continent, batch.device_type, batch.user) == ("GB", "EU", "mobile", "u1")


def test_a_city_database_gives_subdivisions_and_falls_back_to_registry_data(tmp_path):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    from ingest.geo import Locator

    writer = MMDBWriter(4, "GeoIP2-City", languages=["en"], description="vidpulse test")
    writer.insert_network(IPSet(["81.2.69.0/24"]), {
        "country": {"iso_code": "GB"}, "continent": {"code": "EU"}, "subdivisions": [{"iso_code": "ENG"}]})
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "US"}, "continent": {"code": "NA"},
                                                   "subdivisions": [{"iso_code": "CA"}]})
    path = tmp_path / "city.mmdb"
    writer.to_db_file(str(path))
    locator = Locator(path)
    assert locator.locate("81.2.69.142") == ("GB", "EU", "GB-ENG")
    assert locator.locate("8.8.8.8") == ("US", "NA", "US-CA")
    assert locator.locate("1.0.16.1") == ("JP", "AS", "")  # not in the file: registry data
    assert locator.locate("not an ip") == ("ZZ", "", "")
    env = envelope()
    accepted, _ = check_events(env, NOW, 3600)
    assert enrich(env, accepted, Sender(NOW, "8.8.8.8", IPHONE), b"salt", locator).subdivision == "US-CA"


def test_the_removed_allowed_origins_variable_is_refused_with_what_to_do_instead(monkeypatch):
    import pydantic

    from ingest.settings import Settings

    monkeypatch.setenv("VIDPULSE_ALLOWED_ORIGINS", '{"1234": ["https://a.example"]}')
    try:
        Settings()
    except pydantic.ValidationError as exc:
        assert "vidpulse accounts update" in str(exc)
    else:
        raise AssertionError("VIDPULSE_ALLOWED_ORIGINS was accepted and would be ignored")


def test_the_remembered_salt_is_the_salt_of_the_utc_day():
    import datetime as dt

    from ingest.enrich import salt_for
    from ingest.identity import daily_salt
    for ms in (0, 1, 86_399_999, 86_400_000, NOW, -1, -86_400_001):
        day = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()
        assert salt_for("secret", True, ms) == daily_salt("secret", True, day), ms
        assert salt_for("secret", False, ms) == b"secret"
