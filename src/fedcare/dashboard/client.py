"""The Python client of the coordinator's HTTP API (``/api/v1``, docs/api.md).

::

    from fedcare import Client

    client = Client("https://coordinator.example.org:8443", ca="ca.pem")  # token: FEDCARE_TOKEN
    study = client.submit("study.yaml")            # uploads a local .fcpkg package first
    final = client.wait(study["id"], progress=lambda event, data: print(event, data))
    client.report(study["id"], "report/")          # results.json, report.html

Settings not given come from the environment, then the config file
(:mod:`fedcare.dashboard.client_config`). TLS is verified against the federation CA (``ca``);
the token travels only in the ``Authorization`` header and is never printed or put in an error.
Every failure raises :class:`fedcare.errors.ApiError`: ``status`` and the server's one-line
detail, or ``status`` None with the URL and the cause when the coordinator could not be reached.
"""

from __future__ import annotations

import ssl
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import httpx

from fedcare.dashboard.client_config import ClientSettings, parse_sse, resolve_settings
from fedcare.dashboard.client_types import (
    AnalyticsJob,
    ModelBrief,
    ModelLineage,
    PackageUpload,
    RoundEntry,
    SiteEntry,
    StudyBrief,
    StudyDetail,
    SubmitResult,
)
from fedcare.errors import ApiError, ConfigError

__all__ = ["Client"]  # the shapes it answers with: fedcare.dashboard.client_types


Progress = Callable[[str, Any], None]


def _quote(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def _detail(response: httpx.Response) -> str:
    """The server's one-line ``detail``, else the status line and the body's first line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if detail:
        return str(detail)
    text = response.text.strip().splitlines()
    reason = response.reason_phrase or "error"
    return f"HTTP {response.status_code} {reason}" + (f": {text[0][:200]}" if text else "")


class Client:
    """A signed-in connection to the coordinator's HTTP API.

    Parameters
    ----------
    url:
        ``https://HOST:PORT`` (``/api/v1`` may be included); else ``FEDCARE_COORDINATOR``, else
        ``coordinator`` in the config file.
    token:
        An API token (``fedcare users add``); else ``FEDCARE_TOKEN``, else the config file.
        Without one only :meth:`health` answers (others: ApiError 401).
    ca:
        The federation's ``ca.pem`` to trust; else ``FEDCARE_CA``, else the config file, else
        the system's trusted CAs.
    timeout_s:
        Seconds to connect and to wait for each answer (for event streams: between events).

    Raises
    ------
    ConfigError
        No URL anywhere, a URL that is not https, an unreadable CA file or config file.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        ca: str | Path | None = None,
        timeout_s: float = 30,
    ) -> None:
        self.settings: ClientSettings = resolve_settings(url, token, ca)
        self.timeout_s = timeout_s
        verify: ssl.SSLContext | bool = True
        if self.settings.ca is not None:
            try:
                verify = ssl.create_default_context(cafile=str(self.settings.ca))
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(
                    f"the CA certificate {self.settings.ca} cannot be read: {err}"
                ) from None
        headers = {"Accept": "application/json"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        self._http = httpx.Client(
            base_url=self.settings.url, verify=verify, timeout=timeout_s, headers=headers
        )

    @property
    def url(self) -> str:
        """The API's base URL, ``https://HOST:PORT/api/v1``."""
        return self.settings.url

    def __repr__(self) -> str:
        token = "set" if self.settings.token else "none"
        return f"Client(url={self.url!r}, token={token}, ca={self.settings.ca})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # --- transport -------------------------------------------------------------------------
    def _unreachable(self, err: httpx.HTTPError) -> ApiError:
        """A clear ApiError (status None) for an answer that never came."""
        text = str(err) or type(err).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(err.__context__, ssl.SSLError):
            ca = self.settings.ca
            hint = (
                f"the coordinator's certificate is not signed by the CA {ca}"
                if ca
                else "give the federation's ca.pem (--ca, FEDCARE_CA or 'ca:' in the config)"
            )
            return ApiError(f"TLS to {self.url} failed ({text}): {hint}")
        if isinstance(err, httpx.TimeoutException):
            return ApiError(f"no answer from {self.url} within {self.timeout_s:g} s ({text})")
        if isinstance(err, httpx.ConnectError):
            return ApiError(
                f"cannot connect to {self.url} ({text}): is the coordinator running with "
                "--api-port, and is the address right?"
            )
        return ApiError(f"the connection to {self.url} failed: {text}")

    def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except httpx.HTTPError as err:
            raise self._unreachable(err) from err
        if response.status_code >= 400:
            raise ApiError(_detail(response), status=response.status_code)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """The JSON of any GET route, ``path`` relative to ``/api/v1`` (e.g. ``"/ledger"``)."""
        clean = {k: v for k, v in params.items() if v is not None}
        return self._request("GET", "/" + path.lstrip("/"), params=clean).json()

    def _post(self, path: str, **options: Any) -> Any:
        return self._request("POST", path, **options).json()

    # --- routes ----------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """``{"status": "ok"}`` when the API answers (no token needed)."""
        return cast(dict[str, str], self.get("/health"))

    def studies(self) -> list[StudyBrief]:
        """The studies the caller may see, oldest first."""
        return cast(list[StudyBrief], self.get("/studies"))

    def study(self, study_id: str) -> StudyDetail:
        """One study (a unique prefix of its id will do) with rounds, refusals, epsilon."""
        return cast(StudyDetail, self.get(f"/studies/{_quote(study_id)}"))

    def status(self, study_id: str) -> StudyBrief:
        """Where one study stands: its brief (the first fields of :meth:`study`)."""
        detail = self.study(study_id)
        return cast(StudyBrief, {k: detail[k] for k in StudyBrief.__annotations__})  # type: ignore[literal-required]

    def rounds(self, study_id: str) -> list[RoundEntry]:
        """The study's rounds, each with every site's part in it."""
        return cast(list[RoundEntry], self.get(f"/studies/{_quote(study_id)}/rounds"))

    def cancel(self, study_id: str) -> StudyBrief:
        """Stop a study after its current round (409 if it already finished)."""
        return cast(StudyBrief, self._post(f"/studies/{_quote(study_id)}/cancel"))

    def sites(self) -> list[SiteEntry]:
        """The registered sites: state, last seen, version, datasets."""
        return cast(list[SiteEntry], self.get("/sites"))

    def models(self) -> list[ModelBrief]:
        """The registered model versions the caller may see, oldest first."""
        return cast(list[ModelBrief], self.get("/models"))

    def model(self, version: str) -> dict[str, Any]:
        """The model card of ``version``."""
        return cast(dict[str, Any], self.get(f"/models/{_quote(version)}"))

    def lineage(self, version: str) -> ModelLineage:
        """``version`` (``model``), the models it was built on (``ancestors``, parent first)
        and those built on it (``descendants``)."""
        return cast(ModelLineage, self.get(f"/models/{_quote(version)}/lineage"))

    def deploy(self, version: str, sites: list[str]) -> list[dict[str, Any]]:
        """Ask ``sites`` to take model ``version`` (``fedcare models deploy``)."""
        body = {"sites": list(sites)}
        return cast(
            list[dict[str, Any]], self._post(f"/models/{_quote(version)}/deploy", json=body)
        )

    def deployments(self, version: str) -> list[dict[str, Any]]:
        """The deployments of ``version`` and what each site answered."""
        return cast(list[dict[str, Any]], self.get(f"/models/{_quote(version)}/deployments"))

    def analytics_job(self, job_id: str) -> AnalyticsJob:
        """One analytics job: status, spec and ``result`` (None until the sites answered)."""
        return cast(AnalyticsJob, self.get(f"/analytics/{_quote(job_id)}"))

    def submit_analytics(
        self, spec_file: str | Path, dataset: str | None = None, min_sites: int = 1
    ) -> AnalyticsJob:
        """Queue the analytics spec in ``spec_file`` (YAML) as a job the caller owns, as
        ``fedcare analytics SPEC --federation HOME`` does; follow it with :meth:`wait`, read
        its result with :meth:`analytics_job`."""
        try:
            text = Path(spec_file).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read analytics file {spec_file}: {err}") from None
        body = {"spec": text, "dataset": dataset, "min_sites": min_sites}
        return cast(AnalyticsJob, self._post("/analytics", json=body))

    def upload_package(self, archive: str | Path) -> PackageUpload:
        """Upload a signed package archive (``.fcpkg``); the coordinator verifies it against
        the federation CA (422 with the reason if it does not verify)."""
        try:
            data = Path(archive).read_bytes()
        except OSError as err:
            raise ConfigError(f"package archive {archive} cannot be read: {err}") from None
        headers = {"Content-Type": "application/octet-stream"}
        return cast(PackageUpload, self._post("/packages", content=data, headers=headers))

    def submit(self, study_file: str | Path, queue: bool = False) -> SubmitResult:
        """Submit a study file; see :func:`fedcare.dashboard.client_submit.study_text` for how
        a local package archive is uploaded first (a package folder is refused)."""
        from fedcare.dashboard.client_submit import study_text

        text = study_text(Path(study_file), self.upload_package)
        return cast(SubmitResult, self._post("/studies", json={"study": text, "queue": queue}))

    def report(self, study_id: str, out_dir: str | Path) -> tuple[Path, Path]:
        """Write the study's ``results.json`` and ``report.html`` into ``out_dir`` (as
        ``fedcare study report`` does on the coordinator's host); returns both paths.
        ApiError 409 while there are no results yet (an analytics job not answered)."""
        import json

        results = self.get(f"/studies/{_quote(study_id)}/results")
        page = self._request(
            "GET", f"/studies/{_quote(study_id)}/report", params={"download": "true"}
        )
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        results_path, report_path = out / "results.json", out / "report.html"
        results_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
        report_path.write_bytes(page.content)
        return results_path, report_path

    def download_model(self, version: str, out: str | Path) -> Path:
        """Save a registered model as the zip archive ``fedcare models export`` would write
        (``model_card.json``, ``lineage.json``, ``params.npz``) to ``out``: a file, or a
        folder to keep the server's file name (``model-VERSION.zip``) in; returns the path."""
        from fedcare.dashboard.client_submit import download_name

        target = Path(out)
        path = f"/models/{_quote(version)}/download"
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(_detail(response), status=response.status_code)
                if target.is_dir():
                    target = target / download_name(response.headers, version)
                with target.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.HTTPError as err:
            raise self._unreachable(err) from err
        return target

    # --- events ----------------------------------------------------------------------------
    def _stream(
        self, study_id: str, after_round: int | None, read_s: float
    ) -> Generator[tuple[str, Any] | None, None, None]:
        """The raw event stream (None per keep-alive comment); ApiError on any failure."""
        params = {"after_round": after_round} if after_round is not None else {}
        timeout = httpx.Timeout(self.timeout_s, read=read_s)
        path = f"/studies/{_quote(study_id)}/events"
        headers = {"Accept": "text/event-stream"}
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=timeout, headers=headers
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(_detail(response), status=response.status_code)
                yield from parse_sse(response.iter_lines())
        except httpx.HTTPError as err:
            raise self._unreachable(err) from err

    def events(self, study_id: str, after_round: int | None = None) -> Iterator[tuple[str, Any]]:
        """The study's events as ``(event, data)``: ``status`` (StudyBrief, first and on each
        change), ``round`` (RoundEntry, past rounds first; ``after_round`` skips rounds up to
        it), ``end`` (the final StudyBrief; the stream then closes). One connection, no
        reconnection (:meth:`wait` reconnects)."""
        for item in self._stream(study_id, after_round, self.timeout_s):
            if item is not None:
                yield item

    def wait(
        self,
        study_id: str,
        progress: Progress | None = None,
        timeout_s: float | None = None,
        *,
        retries: int = 5,
        retry_wait_s: float = 1.0,
    ) -> StudyBrief:
        """Follow the study's events until it ends; returns its final StudyBrief.

        ``progress(event, data)`` is called for each event (after a reconnection the stream
        starts again with a ``status`` event). A dropped stream is reopened with
        ``?after_round=`` the last round seen, so no round is reported twice; ``retries``
        failures in a row (waiting ``retry_wait_s``, doubling, between them) give up.

        Raises
        ------
        ApiError
            The server refused (401, 404...: never retried), the stream could not be reopened,
            or the study had not ended after ``timeout_s`` seconds.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        after: int | None = None
        failures = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            read_s = (
                self.timeout_s if remaining is None else max(0.05, min(self.timeout_s, remaining))
            )
            first = True  # the first event of a connection is its status: not yet progress
            try:
                with closing(self._stream(study_id, after, read_s)) as stream:
                    for item in stream:
                        if deadline is not None and time.monotonic() > deadline:
                            break
                        if not first:
                            failures = 0  # the connection lived past its greeting
                        first = False
                        if item is None:
                            continue
                        event, data = item
                        if event == "round" and isinstance(data, dict):
                            after = max(after or 0, int(data.get("round") or 0))
                        if progress is not None:
                            progress(event, data)
                        if event == "end":
                            return cast(StudyBrief, data)
                cause = "the stream closed before the study ended"
            except ApiError as err:
                if err.status is not None:
                    raise
                cause = str(err)
            if deadline is not None and time.monotonic() >= deadline:
                raise ApiError(f"study {study_id} had not ended after {timeout_s:g} s")
            failures += 1
            if failures > retries:
                raise ApiError(
                    f"lost the event stream of study {study_id} at {self.url} {failures} "
                    f"times in a row; last: {cause}"
                )
            time.sleep(min(retry_wait_s * 2 ** (failures - 1), 30.0))
