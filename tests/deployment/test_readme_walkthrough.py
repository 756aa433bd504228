"""The README's federation walkthrough, followed literally (issue 11's acceptance test).

The steps are parsed out of README.md's "A real federation" section, in order, up to the block
that writes the study's report:

- a ``yaml`` block whose first line names a file (``# ~/fedcare/cleveland/site-data.yaml``) is
  written there, as is (its folder must exist by then: the README makes it);
- each line of a ``bash`` block is typed into one bash shell, as into a terminal (so
  ``COORDINATOR=…`` and ``STUDY=$(…)`` carry over to the next lines), and must succeed;
- a command marked ``# keeps running`` is started in a terminal of its own instead (a fresh
  ``bash -c``, its own process group, stopped at the end, also on failure).

Substitutions, and nothing else:

- ``HOME`` is a fresh temporary folder, so ``~/fedcare/…`` lands there;
- the ports ``50051`` and ``8443`` are replaced by free ports wherever they appear (``--port``,
  ``--listen``, ``--api-port``, the API's URL);
- ``PATH`` starts with the folder of this interpreter's virtual environment (the README assumes
  it active, so ``fedcare`` is its console script), ``PYTHONPATH`` is this checkout's ``src``
  (the commands run this checkout's code) and ``FEDCARE_DATA_MIRROR`` the offline dataset mirror.

It waits where a person at the terminals would: after a ``# keeps running`` command until its
terminal shows it up (the coordinator "listening on port", an agent "connected to"), and it runs
a command the README says to run "again until it says completed" until it does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedcare.coordinator.home import open_home

from ..conftest import require_mirror
from .processes import _signal_group, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECTION = "### A real federation (coordinator + site agents)"
KEEPS_RUNNING = "# keeps running"
AGAIN = "again until it says completed"
#: What a terminal shows once its long-running command is up, by command.
READY = {"coordinator start": "listening on port", "site start": "connected to"}


@dataclass(frozen=True)
class Step:
    """One step of the walkthrough: ``kind`` is ``file``, ``run``, ``keeps-running``."""

    kind: str
    text: str
    path: str = ""


def walkthrough(readme: str) -> list[Step]:
    """The walkthrough's steps, in the README's order, up to the block with `study report`."""
    section = readme.split(SECTION, 1)[1].split("\n### ", 1)[0]
    steps: list[Step] = []
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.M | re.S):
        if lang == "yaml":
            first = body.splitlines()[0]
            if first.startswith("# ~/"):
                steps.append(Step("file", body, first[2:].strip()))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            steps.append(Step("keeps-running" if KEEPS_RUNNING in line else "run", line))
        if "fedcare study report" in body:
            return steps
    raise AssertionError("the README's federation walkthrough never writes the study's report")


class Terminals:
    """One interactive shell for the commands that end, and one process per long-running one."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        logs.mkdir()
        self.shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self.background: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.transcript: list[str] = []
        self.count = 0

    def run(self, command: str, timeout: float = 90.0) -> str:
        """Type ``command`` into the shell; its output (stdout and stderr), or fail the test."""
        self.count += 1
        out, rc = self.logs / f"{self.count}.out", self.logs / f"{self.count}.rc"
        q = shlex.quote
        assert self.shell.stdin is not None
        rc_file, part = q(str(rc)), q(f"{rc}.part")
        typed = f"{{ {command}\n}} </dev/null >{q(str(out))} 2>&1\n"
        self.shell.stdin.write(f"{typed}echo $? >{part} && mv {part} {rc_file}\n")
        self.shell.stdin.flush()
        end = time.monotonic() + timeout
        while not rc.exists():
            if time.monotonic() > end or self.shell.poll() is not None:
                self.fail(f"`{command}` did not finish within {timeout:g} s")
            time.sleep(0.1)
        said = out.read_text(errors="replace")
        self.transcript.append(f"$ {command}\n{said}")
        if rc.read_text().strip() != "0":
            self.fail(f"`{command}` exited {rc.read_text().strip()}")
        return said

    def start(self, command: str, timeout: float = 60.0) -> None:
        """Start ``command`` in a terminal of its own; wait until it shows it is up."""
        log = self.logs / f"terminal-{len(self.background) + 1}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
                start_new_session=True,
            )
        self.background.append((command, proc, log))
        self.transcript.append(f"$ {command}   (own terminal)")
        sign = next(v for k, v in READY.items() if f"fedcare {k}" in command)
        end = time.monotonic() + timeout
        while sign not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > end:
                self.fail(f"`{command}` did not show {sign!r} within {timeout:g} s")
            time.sleep(0.2)

    def fail(self, what: str) -> None:
        shown = "\n".join(self.transcript[-12:])
        logs = "\n".join(f"--- {c}\n{log.read_text(errors='replace')[-2500:]}"
                         for c, _, log in self.background)  # fmt: skip
        pytest.fail(f"{what}\n=== commands\n{shown}\n=== own terminals\n{logs}", pytrace=False)

    def close(self) -> None:
        """Stop every terminal's process group: SIGTERM, then SIGKILL for what is left."""
        procs: list[subprocess.Popen[Any]] = [p for _, p, _ in self.background] + [self.shell]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            _signal_group(proc, signal.SIGKILL)  # leftovers: an agent's worker
            proc.wait()


@contextmanager
def terminals(env: dict[str, str], logs: Path) -> Iterator[Terminals]:
    t = Terminals(env, logs)
    try:
        yield t
    finally:
        t.close()


def test_the_readme_walkthrough_runs_as_written_to_a_completed_study(tmp_path: Path) -> None:
    mirror = require_mirror()
    fedcare = Path(sys.executable).parent / "fedcare"
    if not fedcare.is_file():
        pytest.skip(f"no fedcare console script beside {sys.executable} (pip install -e .)")
    steps = walkthrough(README.read_text())
    commands = [s.text for s in steps if s.kind != "file"]
    # the README's order: agents up and the plan approved at every site before submission
    approve = [i for i, c in enumerate(commands) if "fedcare site approve" in c]
    agents = [i for i, c in enumerate(commands) if "fedcare site start" in c]
    submit = next(i for i, c in enumerate(commands) if "fedcare study submit" in c)
    assert len(approve) == len(agents) >= 2 and max(approve + agents) < submit, commands
    assert all("--plan" not in commands[i] for i in approve), "a steward types no hash"

    home, port, api_port = tmp_path / "home", free_port(), free_port()
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{fedcare.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
        ),
        "FEDCARE_DATA_MIRROR": str(mirror),
    }
    with terminals(env, tmp_path / "logs") as term:
        for step in steps:
            text = step.text.replace("50051", str(port)).replace("8443", str(api_port))
            if step.kind == "file":
                path = home / step.path.removeprefix("~/")
                assert path.parent.is_dir(), f"the README writes {step.path} before its folder"
                path.write_text(text)
            elif step.kind == "keeps-running":
                term.start(text)
            elif AGAIN in text:
                end = time.monotonic() + 120
                while "status: completed" not in (said := term.run(text)):
                    stuck = "status: failed" in said or "awaiting approval" in said
                    if stuck or time.monotonic() > end:  # every site approved before submission
                        term.fail(f"the study did not complete:\n{said}")
                    time.sleep(1.0)
            elif "fedcare sites " in text:  # before submission: every hospital connected
                said = term.run(text)
                assert said.count(" connected ") == len(agents), said
            else:
                term.run(text)
        study = term.run('echo "$STUDY"').strip()  # what the README's shell holds

    kit = (home / "fedcare/fed/kits/sites/cleveland/kit.yaml").read_text()
    assert f"coordinator: 127.0.0.1:{port}" in kit
    report = home / "fedcare/runs/study"
    results = json.loads((report / "results.json").read_text())
    assert results["study"]["id"] == study and results["study"]["status"] == "completed"
    assert sorted(results["sites"]) == ["cleveland", "hungary"]
    accuracy = results["final"]["unweighted"]["accuracy"]
    assert 0.7 < accuracy <= 1.0, accuracy  # about 0.81 for these two hospitals
    assert "<html" in (report / "report.html").read_text()[:2000].lower()
    # submitted over the HTTP API by the study lead's account, audited with her name
    with open_home(home / "fedcare/coord", None) as store:
        assert store.get_study(study).owner == "lea"
    audit = (home / "fedcare/coord/audit.jsonl").read_text()
    assert '"study-submitted"' in audit and '"person":"lea"' in audit.replace(" ", "")
