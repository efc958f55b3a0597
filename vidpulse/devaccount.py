"""The first run works in one command: ``vidpulse up`` on a database without accounts makes one, with keys."""

from __future__ import annotations

from aggregations.accounts import create_account, create_key, list_accounts
from aggregations.clickhouse import ClickHouse

DEMO_VIDEO = "5555"


def provision_dev_account(db: ClickHouse, account: str, port: int) -> bool:
    """Creates ``account`` with a secret key and a public key (ccu of video 5555 from this host's pages) and
    prints both, once; does nothing when any account exists. True when it created them."""
    if list_accounts(db):
        return False
    pages = (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    create_account(db, account, "development")
    _, secret_key = create_key(db, account, "secret", name="development")
    _, public_key = create_key(db, account, "public", name="development page", videos=(DEMO_VIDEO,),
                                    metrics=("ccu",), origins=pages)
    print(f"vidpulse: created the development account {account}; its keys are shown this once:\n"
          f"  secret key (reads everything of {account}; for backends): {secret_key}\n"
          f"  public key (ccu of video {DEMO_VIDEO}, from {' or '.join(pages)}): {public_key}\n"
          f"  e.g. curl -H 'Authorization: Bearer {secret_key}' "
          f"'http://127.0.0.1:{port}/v1/events/accounts/{account}?dimensions=video&metrics=video_view'",
          flush=True)
    return True
