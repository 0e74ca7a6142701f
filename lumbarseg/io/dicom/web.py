"""DICOMweb in and out (dicomweb-client, the ``dicom`` extra): studies read with WADO-RS, outputs stored with STOW-RS.

An input URL names a study or a series: ``http(s)://HOST/dicom-web/studies/UID[/series/UID]``. The series to
segment is chosen from the series' metadata (WADO-RS, no pixel data) by :mod:`lumbarseg.io.dicom.choice`, and
only that series is retrieved, into a temporary folder that is removed once it is read. An output URL is a
DICOMweb root (``http(s)://HOST/dicom-web``); a case's objects are stored in one STOW-RS request into their
study. Credentials: a bearer token (``--dicomweb-token`` or ``LUMBARSEG_DICOMWEB_TOKEN``), else user and password
in the URL, else ``~/.netrc`` (requests reads it); no message ever shows them.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

from lumbarseg.errors import LumbarsegError

TOKEN_VARIABLE = "LUMBARSEG_DICOMWEB_TOKEN"
TIMEOUT_S = 60
_STUDY = re.compile(r"^(?P<root>.+?)/studies/(?P<study>[0-9.]+)(?:/series/(?P<series>[0-9.]+))?/?$")


def is_url(text: Any) -> bool:
    return str(text).lower().startswith(("http://", "https://"))


def public(url: str) -> str:
    """The URL without user, password, query or fragment: what messages show."""
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname
                       else parts.netloc, parts.path, "", ""))


@dataclass(frozen=True)
class Target:
    """A parsed DICOMweb URL: the service root and, for inputs, a study and maybe a series."""

    root: str
    study: Optional[str] = None
    series: Optional[str] = None

    @property
    def shown(self) -> str:
        tail = f"/studies/{self.study}" if self.study else ""
        return public(self.root) + tail + (f"/series/{self.series}" if self.series else "")


def parse(url: str, want_study: bool) -> Target:
    """A study/series URL (``want_study``) or a service root."""
    text = str(url).rstrip("/")
    match = _STUDY.match(text)
    if want_study and not match:
        raise LumbarsegError(public(text), "not a DICOMweb study or series URL (expected "
                                           "http(s)://HOST/dicom-web/studies/UID[/series/UID])")
    if match:
        return Target(match["root"], match["study"], match["series"])
    return Target(text)


class _Bearer:
    """requests auth: a bearer token (given as auth, so requests does not replace it with ~/.netrc's)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def client(target: Target, token: Optional[str] = None) -> Any:
    """A DICOMwebClient for the target's root, with credentials, a timeout and no retries (one line, at once)."""
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise LumbarsegError(target.shown, "DICOMweb needs the 'dicom' extra: pip install 'lumbarseg[dicom]'") from None
    session = requests.Session()
    parts = urlsplit(target.root)
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    if token:
        session.auth = _Bearer(token)
    elif parts.username:
        session.auth = (parts.username, parts.password or "")
    web = DICOMwebClient(url=public(target.root), session=session, timeout=TIMEOUT_S)
    web.set_http_retry_params(retry=False)
    return web


def failure(target: Target, exc: BaseException, doing: str) -> LumbarsegError:
    """A transport or HTTP error as one line naming the URL (never credentials) and what to do."""
    import requests

    where = target.shown
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        code, reason = exc.response.status_code, exc.response.reason or ""
        hint = {401: ": give credentials (--dicomweb-token, $" + TOKEN_VARIABLE + " or ~/.netrc)",
                403: ": these credentials may not do this", 404: ": no such study or series on the server"}
        return LumbarsegError(where, f"{doing} failed: HTTP {code} {reason}{hint.get(code, '')}".rstrip())
    if isinstance(exc, requests.exceptions.Timeout):
        return LumbarsegError(where, f"{doing} failed: no answer within {TIMEOUT_S} s")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return LumbarsegError(where, f"{doing} failed: cannot reach the DICOMweb server (connection refused, host "
                                     "unknown or network down)")
    return LumbarsegError(where, f"{doing} failed: {type(exc).__name__}: {str(exc)[:160]}")


def _call(target: Target, doing: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except LumbarsegError:
        raise
    except Exception as exc:  # requests, dicomweb-client (ValueError on a bad answer), pydicom
        raise failure(target, exc, doing) from None


def _headers(target: Target, web: Any, study: str, series: str) -> List[Tuple[Path, Any]]:
    import pydicom

    metadata = _call(target, "reading the series metadata (WADO-RS)", web.retrieve_series_metadata, study, series)
    return [(Path(), pydicom.Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data)) for item in metadata]


def _no_bulk_data(*_: Any) -> None:
    """Metadata leave pixel data on the server (a BulkDataURI): the choice needs headers only."""
    return None


def find_cases(url: str, series: Optional[str] = None, token: Optional[str] = None) -> List[Any]:
    """The case of a study or series URL: the series chosen from the metadata, retrieved when read."""
    from lumbarseg.io.cases import Case, fails_when_read
    from lumbarseg.io.dicom.choice import choose
    from lumbarseg.io.dicom.study import group

    target = parse(url, want_study=True)
    web = client(target, token)
    if target.series:
        items = _headers(target, web, target.study, target.series)  # type: ignore[arg-type]
    else:
        found = _call(target, "listing the study's series (QIDO-RS)", web.search_for_series,
                      study_instance_uid=target.study)
        uids = [str(item.get("0020000E", {}).get("Value", [""])[0]) for item in found]
        items = [entry for uid in uids if uid for entry in _headers(target, web, target.study, uid)]  # type: ignore
    studies = group(items, Path())
    if not studies:
        raise LumbarsegError(target.shown, "no instances found on the server")
    study = studies[0]
    name = study.uid  # unique, unlike StudyID; names the outputs of a local output folder
    try:
        chosen = choose(study, series or target.series, target.shown)
    except LumbarsegError as exc:
        return [Case(name, Path(name), "dicom", loader=partial(fails_when_read, exc), study=study, remote=target.shown)]
    loader = partial(_retrieve, target, token, study.uid, chosen.series.uid)
    return [Case(name, Path(name), "dicom", loader=loader, note=chosen.line(target.shown), study=study,
                 remote=target.shown)]


def _retrieve(target: Target, token: Optional[str], study: str, series: str) -> Any:
    """Retrieve one series (WADO-RS) into a temporary folder, read it, remove the folder."""
    from lumbarseg.io.dicom import save_dataset
    from lumbarseg.io.dicom.study import find_studies
    from lumbarseg.io.readers import read_dicom_series

    web = client(target, token)
    where = Target(target.root, study, series)
    instances = _call(where, "retrieving the series (WADO-RS)", web.retrieve_series, study, series)
    with tempfile.TemporaryDirectory(prefix="lumbarseg-dicomweb-") as tmp:
        for number, ds in enumerate(instances):
            save_dataset(ds, os.path.join(tmp, f"{number:05d}.dcm"))
        found = [s for st in find_studies(tmp) for s in st.series if s.uid == series]
        if not found:
            raise LumbarsegError(where.shown, "the server returned no instance of the series")
        return read_dicom_series(found[0].files, where.shown, found[0].headers)


def check_reachable(url: str, token: Optional[str] = None) -> Target:
    """Before any work: the output server answers a QIDO-RS query with these credentials."""
    target = parse(url, want_study=False)
    web = client(target, token)
    _call(target, "querying the server (QIDO-RS)", web.search_for_studies, limit=1)
    return target


def store(url: str, datasets: Sequence[Any], study_uid: str, token: Optional[str] = None) -> int:
    """Store a case's objects in one STOW-RS request into their study, then check with QIDO-RS that the server
    holds each of them (a server may answer success and drop an object, as Orthanc does when a filter refuses
    it). Returns how many are stored; any object missing is one line saying how many and why."""
    target = parse(url, want_study=False)
    web = client(target, token)
    where = Target(target.root, study_uid)
    answer = _call(where, "storing (STOW-RS)", web.store_instances, list(datasets), study_instance_uid=study_uid)
    failed = list(answer.get("FailedSOPSequence", []) if answer is not None else [])
    held = _call(where, "checking what was stored (QIDO-RS)", web.search_for_instances, study_instance_uid=study_uid)
    present = {str(item.get("00080018", {}).get("Value", [""])[0]) for item in held}
    missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in present]
    if failed or missing:
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        why = (f"rejected, failure reason {', '.join(reasons)}" if failed
               else "the server answered success but does not hold them: refused by a filter?")
        raise LumbarsegError(where.shown, f"STOW-RS: {len(missing) or len(failed)} of {len(datasets)} object(s) not "
                                          f"stored ({why}); {len(datasets) - len(missing)} stored")
    return len(datasets)
