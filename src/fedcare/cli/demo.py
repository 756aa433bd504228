"""``fedcare demo``: a throwaway federation on 127.0.0.1, real processes, mutual TLS.

Provisions a federation for the 4 heart-disease hospitals in a temporary folder, starts one
coordinator process and one site-agent process per hospital, submits the heart-disease study,
shows live progress, writes results.json and report.html, and stops every process it started
(also on Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedcare.errors import FedcareError

console = Console(emoji=False, stderr=True)
HOSPITALS = ("cleveland", "hungary", "switzerland", "va")
#: Privacy modes the demo runs as they are (``private`` needs DP settings chosen per study).
DEMO_MODES = ("open", "secure", "encrypted")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "heart-disease.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Child processes that are always stopped: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedcare", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-1500:]
                raise FedcareError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self, grace: float = 5.0) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def local_federation(
    root: Path,
    *,
    name: str,
    port: int,
    sites: Sequence[str],
    dataset: str,
    options: dict[str, Any] | None = None,
    he: bool = False,
) -> tuple[Path, dict[str, Path]]:
    """Provision a federation on 127.0.0.1 whose sites each serve their part of a built-in
    dataset (with CKKS keys when ``he``); returns the coordinator kit and each site's data
    file."""
    from fedcare.transport.provisioning import create_federation

    fed = create_federation(
        root / "federation",
        name=name,
        sites=sites,
        coordinator_hosts=("localhost", "127.0.0.1"),
        coordinator_port=port,
        he=he,
    )
    data_files = {}
    for site in sites:
        path = root / f"{site}-data.yaml"
        entry = {"builtin": dataset, "site": site, "options": dict(options or {})}
        path.write_text(yaml.safe_dump({"datasets": {dataset: entry}}))
        data_files[site] = path
    return fed.coordinator_kit, data_files


def start_federation(
    procs: Processes,
    root: Path,
    kit: Path,
    data_files: Mapping[str, Path],
    *,
    port: int,
    liveness: float,
    approve_all: bool = False,
    coordinator_args: Sequence[str] = (),
) -> tuple[Path, subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """Start a coordinator process (home ``root/coordinator``) and one agent per data file.

    Agents run only plans approved in ``root/state/<site>`` (see ``approve_for_sites``), or,
    with ``approve_all`` (throwaway benchmark federations), every plan (audited, warned).
    """
    from fedcare.coordinator.server import default_db_url
    from fedcare.coordinator.store import CoordinatorStore

    home = root / "coordinator"
    home.mkdir()
    # Migrate the database before the coordinator process and its readers open it.
    CoordinatorStore(default_db_url(home), home / "artifacts").close()
    coordinator = procs.start(
        "coordinator",
        "coordinator",
        "start",
        "--kit",
        str(kit),
        "--home",
        str(home),
        "--listen",
        f"127.0.0.1:{port}",
        "--liveness",
        str(liveness),
        *coordinator_args,
    )
    agents = [
        procs.start(
            site,
            "site",
            "start",
            "--kit",
            str(kit.parent / "sites" / site),
            "--data",
            str(data),
            "--state",
            str(root / "state" / site),
            *(["--approve-all"] if approve_all else []),
        )
        for site, data in data_files.items()
    ]
    _wait_for_sites(procs, home, list(data_files))
    return home, coordinator, agents


def _wait_for_sites(
    procs: Processes, home: Path, sites: Sequence[str], timeout: float = 120
) -> None:
    """Wait until every site said Hello, so a study's statistics round reaches all of them.

    A study started earlier would standardize with the statistics of the sites connected at
    that moment: a valid model, but not the one the simulation trains.
    """
    from fedcare.coordinator.server import default_db_url
    from fedcare.coordinator.store import CoordinatorStore

    store = CoordinatorStore(default_db_url(home), home / "artifacts")
    try:
        deadline = time.monotonic() + timeout
        while True:
            procs.check()
            seen = {s.id for s in store.list_sites() if s.first_seen is not None}
            if seen >= set(sites):
                return
            if time.monotonic() > deadline:
                missing = sorted(set(sites) - seen)
                raise FedcareError(f"sites {missing} did not connect within {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        store.close()


def _follow(store: Any, study_id: str, rounds: int, procs: Processes) -> str:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("federated rounds", total=rounds, info="waiting for sites")
        while True:
            procs.check()
            info = store.get_study(study_id)
            done = info.last_completed_round or 0
            text = f"{len(store.list_sites())} sites connected"
            if done:
                ev = store.get_round(study_id, done).record.get("evaluate") or {}
                acc = (ev.get("unweighted") or {}).get("accuracy")
                text = f"accuracy {acc:.3f}" if isinstance(acc, float) else text
            bar.update(task, completed=done, info=text)
            if info.status not in ("pending", "running"):
                return str(info.status) + (f": {info.reason}" if info.reason else "")
            time.sleep(0.3)


def _close_the_loop(
    home: Path,
    root: Path,
    kit: Path,
    data_files: dict[str, Path],
    study_id: str,
    out: Path,
    procs: Processes,
    keep: bool,
) -> None:
    """``--full``: deploy, approve, predict, feed back, and print the monitoring panel."""
    from fedcare.cli.demo_loop import close_the_loop, print_panel
    from fedcare.coordinator.server import default_db_url
    from fedcare.coordinator.store import CoordinatorStore

    start = time.monotonic()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        (model,) = store.list_models(study_id)
        summaries = close_the_loop(
            store, root=root, home=home, kit=kit, data_files=data_files, version=model.version,
            out=out, check=procs.check, console=console,
        )  # fmt: skip
    console.print(f"deployment loop closed in {time.monotonic() - start:.0f} s")
    print_panel(summaries, out, root, keep)


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for results.json and report.html."),
    rounds: int | None = typer.Option(None, help="Override the study's number of rounds."),
    keep: bool = typer.Option(False, help="Keep the federation folder (kits, logs, database)."),
    privacy: str = typer.Option(
        "open",
        help="Privacy mode: open, secure (SecAgg+) or encrypted (CKKS; needs the he extra).",
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Then deploy the model to the 4 hospitals, score their test rows as new patients, "
        "feed back the outcomes and show the post-deployment monitoring panel.",
    ),
) -> None:
    """Run a real federation of the 4 heart-disease hospitals on this machine."""
    from fedcare.cli.governance import approve_for_sites
    from fedcare.cli.output import write_outputs
    from fedcare.coordinator.results import study_results
    from fedcare.coordinator.server import default_db_url
    from fedcare.coordinator.store import CoordinatorStore
    from fedcare.records.study import StudyConfig

    if privacy not in DEMO_MODES:
        console.print(f"[red]error:[/red] --privacy must be one of {', '.join(DEMO_MODES)}")
        raise typer.Exit(code=2)
    root = Path(tempfile.mkdtemp(prefix="fedcare-demo-"))
    procs = Processes(root)
    try:
        port = _free_port()
        kit, data_files = local_federation(
            root,
            name="fedcare-demo",
            port=port,
            sites=HOSPITALS,
            dataset="heart-disease",
            options={"protocol": "raw"},
            he=privacy == "encrypted",
        )
        study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
            baselines={"local": False, "pooled": False, "cross_site": False},
            privacy={"mode": privacy},
            **({"rounds": rounds} if rounds else {}),
        )
        # The stewards' step of this throwaway federation: approve the study's plan (audited).
        approve_for_sites(root, kit, list(HOSPITALS), study, "approved by `fedcare demo`")
        home, _, _ = start_federation(procs, root, kit, data_files, port=port, liveness=15)
        store = CoordinatorStore(default_db_url(home), home / "artifacts")
        with store:
            study_id = store.create_study(study.name, study.model_dump(mode="json"), study.seed)
            console.print(f"federation in {root}; study {study_id} submitted")
            outcome = _follow(store, study_id, study.rounds, procs)
            results = study_results(store, study_id)
        results_path, report_path = write_outputs(results, out)
        console.print(f"study {outcome}")
        final = results["final"]["unweighted"]
        console.print(f"final accuracy (mean over sites) {final.get('accuracy', float('nan')):.3f}")
        console.print(f"results: {results_path}\nreport:  {report_path}")
        if not outcome.startswith("completed"):
            raise typer.Exit(code=1)
        if full:
            _close_the_loop(home, root, kit, data_files, study_id, out, procs, keep)
    except FedcareError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("interrupted; stopping the federation")
        raise typer.Exit(code=130) from None
    finally:
        procs.stop_all()
        if keep:
            console.print(f"kept {root}")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
