"""The classic-script SDK is the ES module's build, not a hand-kept copy (no browser needed)."""

from __future__ import annotations

from ingest.sdk import build


def test_the_classic_script_is_the_current_build_of_the_module():
    assert build.CLASSIC.read_text() == build.build(build.MODULE.read_text()), "run: python -m ingest.sdk.build"


def test_the_classic_build_drops_module_syntax_and_defines_the_global():
    built = build.build(build.MODULE.read_text())
    assert "import.meta" not in built and "\nexport " not in built and "\n  export " not in built
    assert "global.vidpulse = { attach, liveViewers, version };" in built
    assert "customElements.define(BADGE_TAG, VidpulseViewers);" in built  # the badge element, in both builds
