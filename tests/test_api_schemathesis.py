"""Schemathesis against the live stack (the production web server, the ingester and the replay
exchange, ``conftest.stack``), from the OpenAPI schema the server serves at /api/schema/.

Every /api/v1/ operation is called with the schema's examples, then with boundary values of
each parameter (coverage phase), then with generated valid and invalid data, then in stateful
sequences (the schema's links and the ones Schemathesis infers: an order placed, then read,
cancelled or amended by its orderId). The budget is fixed (``SCHEMATHESIS_EXAMPLES`` cases per
operation and phase, default 12; a fixed seed, so a run can be repeated; about 1,900 requests).
Checks: no 5xx; status codes, content types, headers and bodies as the schema documents them;
schema-violating requests refused; undocumented methods answered 405. The token used
is restricted to the two recorded symbols (BTCUSDT, ETHUSDT), so generated symbols are refused
(403) instead of asking the venue for markets it has no data for; its rate limit is off.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ARTIFACTS, cache_quotes, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "unsupported_method", "use_after_free",
    "ensure_resource_availability",
])
CONFIG = """
[generation]
codec = "utf-8"

[parameters]
"path.accountId" = {account_id}

[phases.stateful]
max-steps = 8

[phases.stateful.inference]
algorithms = ["location-headers", "dependency-analysis"]
"""


def test_schemathesis_finds_no_5xx_and_every_response_matches_the_schema(stack, trader, tmp_path):
    import httpx

    from marketdata.services import exchange_info_sync
    from risk.services import agent_token_create

    user, account, _ = trader
    exchange_info_sync()
    cache_quotes()
    token, key = agent_token_create(user=user, name="schemathesis")
    token.symbols, token.rate_limit_per_minute = ["BTCUSDT", "ETHUSDT"], 0
    token.save()
    wait_until(lambda: httpx.get(f"{stack.base_url}/api/v1/ticker/bookTicker", params={"symbol": "BTCUSDT"},
                                 headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200,
               timeout=30, what="a live BTCUSDT quote on the stack")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(account_id=account.pk))
    report = ARTIFACTS / "schemathesis"
    cmd = [
        str(Path(sys.executable).parent / "st"), "--config-file", str(config), "run", f"{stack.base_url}/api/schema/",
        "--url", stack.base_url, "-H", f"Authorization: Bearer {key}", "--checks", CHECKS,
        "--max-examples", str(EXAMPLES), "--seed", "23", "--workers", "2", "--no-shrink", "--no-color",
        "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "10",
        "--suppress-health-check", "all", "--report", "junit", "--report-dir", str(report),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache stays out of the repo
    (ARTIFACTS / "schemathesis.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-3000:]
    assert "No issues found" in proc.stdout or " passed" in proc.stdout, proc.stdout[-3000:]
