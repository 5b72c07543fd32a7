"""`make compose-check` as part of the suite: the image built and the services run for real."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.compose.check import CONF
from tests.support.env import ROOT


def _why_podman_cannot_run() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it: apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "the check runs podman as root (rootless podman cannot use host networking and runc here)"
    probe = subprocess.run(
        ["podman", "info"],
        env={**os.environ, "CONTAINERS_CONF": str(CONF)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return f"podman cannot run here: {probe.stderr.strip().splitlines()[-1:]}"
    return None


REASON = _why_podman_cannot_run()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.timeout(900)
def test_make_compose_check_builds_the_image_and_runs_the_services():
    result = subprocess.run(
        ["make", "compose-check"], cwd=ROOT, capture_output=True, text=True, timeout=880, check=False
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "compose-check passed" in result.stdout
