"""Builds the classic-script SDK (``vidpulse.js``, sets ``window.vidpulse``) from the ES module (``vidpulse.mjs``).

The module is the source; the classic build is the same code inside an IIFE, with ``export`` dropped,
``import.meta.url`` (unavailable to classic scripts) replaced by the loading script's URL, and the module's
default export (``export default { attach, liveViewers, version };``) as ``window.vidpulse``. Both files are
committed and served as they are; ``python -m ingest.sdk.build --check`` fails when the build is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE, CLASSIC = HERE / "vidpulse.mjs", HERE / "vidpulse.js"
SCRIPT_URL_LINE = "const SCRIPT_URL = import.meta.url;"
CLASSIC_SCRIPT_URL = "const SCRIPT_URL = (document.currentScript && document.currentScript.src) || location.href;"
DEFAULT_EXPORT = re.compile(r"^export default (\{[\w\s,]*\});\n?", flags=re.M)


def build(source: str) -> str:
    header_end = source.index("*/") + 2
    header, body = source[:header_end], source[header_end:].strip("\n")
    if SCRIPT_URL_LINE not in body:
        raise ValueError(f"vidpulse.mjs no longer has the line {SCRIPT_URL_LINE!r} that the classic build replaces")
    body = body.replace(SCRIPT_URL_LINE, CLASSIC_SCRIPT_URL)
    exported = DEFAULT_EXPORT.findall(body)
    if len(exported) != 1:
        raise ValueError("vidpulse.mjs must have exactly one `export default { name, ... };` (the classic build's global)")
    body = DEFAULT_EXPORT.sub("", body)
    body = re.sub(r"^export (function|const) ", r"\1 ", body, flags=re.M)
    if re.search(r"^\s*(export|import)\b", body, flags=re.M):
        raise ValueError("vidpulse.mjs has an import or export form the classic build does not handle")
    indented = "\n".join(f"  {line}" if line else "" for line in body.rstrip().splitlines())
    return (f"{header}\n/* Classic-script build of vidpulse.mjs by ingest/sdk/build.py: do not edit by hand. */\n"
            f"(function (global) {{\n  \"use strict\";\n\n{indented}\n\n"
            f"  global.vidpulse = {exported[0]};\n}})(typeof self !== \"undefined\" ? self : this);\n")


def main(argv: list[str]) -> int:
    built = build(MODULE.read_text())
    if "--check" in argv:
        if CLASSIC.read_text() != built:
            print(f"{CLASSIC.name} is stale: run python -m ingest.sdk.build", file=sys.stderr)
            return 1
        return 0
    CLASSIC.write_text(built)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
