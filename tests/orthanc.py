"""A real Orthanc with its DICOMweb plugin (Debian's ``orthanc`` and ``orthanc-dicomweb``) for the DICOMweb tests.

:func:`start_orthanc` writes a configuration into a temporary folder (HTTP on a free port with remote access
off, the DICOM port on another free port, storage in the folder, the DICOMweb plugin from the Debian package,
a Lua filter that rejects SEG and SR objects of patient ``LS-REJECT``: a real STOW-RS rejection) and starts the
server; the caller stops it. Tests skip with the reason when the binary or the plugin is absent.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")
REJECTED_PATIENT = "LS-REJECT"
LUA_FILTER = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.PatientID == '{REJECTED_PATIENT}' and (dicom.Modality == 'SEG' or dicom.Modality == 'SR') then
    return false
  end
  return true
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing() -> Optional[str]:
    """Why Orthanc cannot run here, or None."""
    if shutil.which("Orthanc") is None:
        return "Orthanc not installed (Debian: apt-get install orthanc orthanc-dicomweb; .ci/install-dicom)"
    if plugin() is None:
        return "Orthanc's DICOMweb plugin not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def plugin() -> Optional[Path]:
    for folder in PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if found:
            return found[0]
    return None


@dataclass
class Orthanc:
    process: subprocess.Popen
    port: int
    folder: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
            return answer.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_orthanc(folder: Path) -> Orthanc:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "filter.lua").write_text(LUA_FILTER)
    port = free_port()
    config = {
        "Name": "lumbarseg-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": False, "DicomPort": free_port(), "Plugins": [str(plugin())],
        "LuaScripts": [str(folder / "filter.lua")], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False, "HttpThreadsCount": 4, "StorageCompression": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    with open(folder / "orthanc.log", "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=folder)
    server = Orthanc(process, port, folder)
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text(errors='replace')[-800:]}")
        try:
            if b"DicomWeb" in server.get("/plugins/dicom-web") or server.get("/system"):
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("Orthanc did not answer within 30 s")
