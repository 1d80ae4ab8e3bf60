"""A worker process that claims a tenant's due runs, advances them inside its
transaction, says so, then hangs before committing: the test SIGKILLs it there."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime

from carepost.core.config import load_settings
from carepost.core.runtime import build_runtime
from carepost.crypto.keyring import current_tenant_keys
from carepost.messages.sending import SendLimits
from carepost.workflows import engine


def main() -> None:
    args = json.loads(sys.argv[1])
    settings = load_settings(**args["settings"])
    runtime = build_runtime(settings)
    now = datetime.fromisoformat(args["now"])
    tenant_id = uuid.UUID(args["tenant_id"])
    with runtime.database.session() as session:
        claimed = engine.claim_due_runs(session, now, owner="doomed", tenant_id=tenant_id)
    with runtime.tenant_session(tenant_id) as session:
        executed = engine.advance_claimed(
            session,
            current_tenant_keys(),
            [run_id for run_id, _ in claimed],
            now,
            owner="doomed",
            limits=SendLimits(settings.outbox_max_attachment_bytes, settings.base_url),
        )
        session.flush()
        print(f"advanced {executed}", flush=True)
        time.sleep(120)  # killed here, before the commit


if __name__ == "__main__":
    main()
