"""Label Studio over its HTTP API: projects, tasks with predictions, and what people annotated.

Plain ``requests`` rather than the Label Studio SDK: ``label-studio-sdk`` 2.0 installs beside our
pins only by bringing black, isort, datamodel-code-generator and a second OpenCV
(``opencv-python-headless`` next to Ultralytics' ``opencv-python``, two copies of ``cv2`` in one
environment), for seven endpoints. The endpoints used here are Label Studio's stable public API
(``/api/version``, ``/api/projects``, ``/api/projects/<id>``, ``/api/storages/localfiles``,
``/api/projects/<id>/import``, ``/api/projects/<id>/export``, ``/api/token/refresh``), checked
against the real 1.23.2 server in the integration tests.

**The token** is either a legacy API token (sent as ``Authorization: Token ...``) or a personal
access token, which is a JWT refresh token that Label Studio trades for a short-lived access
token (sent as ``Bearer``). Both come from the environment. No message this module raises or
logs contains either: errors name the URL and the HTTP status, never a header.

**Failures.** A connection error, a timeout or a 5xx is retried (``retries`` times, doubling
the pause); then ``LabelStudioUnavailable`` names the URL. A 401/403 is not retried: it raises
``LabelStudioAuthError``, which says which variable to check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

import requests

log = logging.getLogger(__name__)

TOKEN_VAR = "CV_ASSETS_LABELSTUDIO_TOKEN"
URL_VAR = "CV_ASSETS_LABELSTUDIO_URL"
# The control names in the labelling config; predictions and annotations refer to them.
FROM_NAME, TO_NAME = "label", "image"


class LabelStudioError(Exception):
    """Label Studio answered with something the platform cannot use (names URL and status)."""


class LabelStudioUnavailable(LabelStudioError):
    """Label Studio could not be reached after the retries."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio refused the token."""


def label_config(classes: Sequence[str]) -> str:
    """The labelling interface: one image, one rectangle tool with the platform's classes."""
    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return (
        # The header tells the person why the task is there (an uncertain image, or a label
        # the champion contradicts): ``data.cv_note``.
        '<View><Header value="$cv_note" size="5"/>'
        f'<Image name="{TO_NAME}" value="$image" zoom="true"/>'
        f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels>'
        "</View>"
    )


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2


@dataclass
class LabelStudio:
    """A client for one Label Studio server. ``url`` is its root, e.g. http://127.0.0.1:8080."""

    url: str
    token: str = field(repr=False)
    timeout_s: float = 30.0
    retries: int = 3
    pause_s: float = 1.0
    _access: str | None = field(default=None, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if not self.token:
            raise LabelStudioAuthError(
                f"no Label Studio token: set {TOKEN_VAR} (Label Studio at {self.url})"
            )

    # -- transport --------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if not _is_jwt(self.token):
            return {"Authorization": f"Token {self.token}"}
        if self._access is None:
            r = self._send("POST", "/api/token/refresh", json={"refresh": self.token}, auth=False)
            self._access = str(r.json()["access"])
        return {"Authorization": f"Bearer {self._access}"}

    def _send(self, method: str, path: str, auth: bool = True, **kw: Any) -> requests.Response:
        where = f"{method} {self.url}{path.split('?')[0]}"
        pause, last = self.pause_s, ""
        for attempt in range(self.retries + 1):
            try:
                headers = self._auth() if auth else {}
                r = self._session.request(
                    method, self.url + path, headers=headers, timeout=self.timeout_s, **kw
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                last = type(e).__name__
            else:
                if r.status_code in (401, 403):
                    if auth and _is_jwt(self.token) and self._access and attempt == 0:
                        self._access = None  # an expired access token: trade the refresh again
                        continue
                    raise LabelStudioAuthError(
                        f"{where}: Label Studio refused the token (HTTP {r.status_code}); "
                        f"check {TOKEN_VAR}"
                    )
                if r.status_code < 500:
                    if r.status_code >= 400:
                        raise LabelStudioError(f"{where}: HTTP {r.status_code}: {r.text[:300]}")
                    return r
                last = f"HTTP {r.status_code}"
            if attempt < self.retries:
                log.warning("%s: %s; retrying in %.1fs", where, last, pause)
                time.sleep(pause)
                pause *= 2
        raise LabelStudioUnavailable(
            f"Label Studio at {self.url} is unavailable ({where}: {last} after "
            f"{self.retries + 1} attempts); is it running? (`make labelstudio`, {URL_VAR})"
        )

    # -- API ----------------------------------------------------------------------------------

    def check(self) -> str:
        """The server's version, after checking that it answers and accepts the token."""
        version = self._send("GET", "/api/version", auth=False).json()
        self._send("GET", "/api/projects?page_size=1")
        return str(version.get("release") or version.get("label-studio-os-package", {}).get(
            "version", "?"))  # fmt: skip

    def create_project(self, title: str, classes: Sequence[str], description: str = "") -> int:
        body = {"title": title, "label_config": label_config(classes), "description": description}
        return int(self._send("POST", "/api/projects", json=body).json()["id"])

    def delete_project(self, project: int) -> None:
        self._send("DELETE", f"/api/projects/{project}")

    def project_exists(self, project: int) -> bool:
        try:
            self._send("GET", f"/api/projects/{project}")
        except LabelStudioError as e:
            if "HTTP 404" in str(e):
                return False
            raise
        return True

    def add_local_storage(self, project: int, path: str, title: str) -> int:
        """Let the project's tasks read files under ``path`` (inside Label Studio's document
        root) through ``/data/local-files/?d=...``; no task is created by it."""
        body = {"project": project, "path": path, "title": title, "use_blob_urls": False}
        return int(self._send("POST", "/api/storages/localfiles", json=body).json()["id"])

    def import_tasks(self, project: int, tasks: Sequence[dict[str, Any]]) -> int:
        """Create tasks (``data`` and ``predictions``) in one request, so they land all or none."""
        r = self._send("POST", f"/api/projects/{project}/import", json=list(tasks))
        return int(r.json().get("task_count", 0))

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (cancelled ones included) in Label
        Studio's JSON export format, which the ``labelstudio`` import adapter reads."""
        r = self._send(
            "GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true"
        )
        tasks = r.json()
        if not isinstance(tasks, list):
            raise LabelStudioError(f"{self.url}: the export of project {project} is not a list")
        return tasks

    def project_url(self, project: int) -> str:
        return f"{self.url}/projects/{project}/data"
