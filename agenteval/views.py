"""Dashboard pages of agent evaluations: the runs written by ``manage.py evaluate_agent`` under
``<DATA_DIR>/evaluations/<run_id>/``, each visible only to the user it ran for (staff see all)."""
from __future__ import annotations

import json
import re

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import render

from agenteval.runner import report_context, reports_dir

RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def _load(run_id: str, user) -> dict:
    """The report of ``run_id`` if ``user`` may see it, else Http404 (another user's run does not
    exist for you)."""
    if not RUN_ID.match(run_id):
        raise Http404("No such evaluation.")
    path = reports_dir() / run_id / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        raise Http404("No such evaluation.") from None
    if report.get("user") != user.get_username() and not user.is_staff:
        raise Http404("No such evaluation.")
    return report


@login_required
def evaluation_list(request):
    """Your evaluation runs, newest first."""
    reports = []
    root = reports_dir()
    for path in sorted(root.glob("*/report.json"), reverse=True) if root.exists() else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if report.get("user") == request.user.get_username() or request.user.is_staff:
            reports.append(report)
    return render(request, "evaluation/list.html", {"reports": reports, "page": "evaluations"})


@login_required
def evaluation_detail(request, run_id: str):
    """One run's report page (the same template as the standalone ``report.html``)."""
    report = _load(run_id, request.user)
    from django.urls import reverse

    context = report_context(report, reverse("evaluation-png", args=[run_id]), base_template="base.html")
    return render(request, "evaluation/report.html", {**context, "page": "evaluations"})


@login_required
def evaluation_png(request, run_id: str):
    """The run's equity-curve PNG."""
    _load(run_id, request.user)
    path = reports_dir() / run_id / "equity.png"
    if not path.exists():
        raise Http404("No equity curve.")
    return FileResponse(open(path, "rb"), content_type="image/png")
