"""The lab API's credentials and kubeconfig: a self-signed certificate for 127.0.0.1 and a
bearer token (next to the lab's state), and a context `netparity-lab-NAME` merged into a
kubeconfig file without touching its other clusters, users and contexts."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import yaml

from netparity.errors import ClusterError
from netparity.lab.state import state_dir

CONTEXT_PREFIX = "netparity-lab-"


def context_name(lab: str) -> str:
    return f"{CONTEXT_PREFIX}{lab}"


def api_dir(lab: str) -> Path:
    """Where the lab's API keeps its certificate, key, token, log and server record."""
    return state_dir() / f"{lab}.api"


def default_kubeconfig() -> Path:
    """$KUBECONFIG (its first file), else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first) if first else Path.home() / ".kube" / "config"


def make_credentials(folder: Path) -> tuple[Path, Path, str]:
    """(certificate, key, token): a self-signed certificate for 127.0.0.1 and a token."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = folder / "tls.crt", folder / "tls.key"
    argv = [
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
        *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=netparity-lab-api"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
    ]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise ClusterError(f"cannot make the lab API's certificate with openssl: {e}") from e
    token = secrets.token_urlsafe(32)
    token_file = folder / "token"
    token_file.write_text(token, encoding="utf-8")
    for path in (key, token_file):
        path.chmod(0o600)
    return cert, key, token


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        doc = None
    except (OSError, yaml.YAMLError) as e:
        raise ClusterError(f"{path}: cannot read the kubeconfig ({e})") from e
    if doc is None:
        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    if not isinstance(doc, dict):
        raise ClusterError(f"{path}: a kubeconfig must be a mapping")
    return doc


def _save(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _without(entries: Any, name: str) -> list[Any]:
    return [e for e in entries or () if not (isinstance(e, dict) and e.get("name") == name)]


def merge_context(path: Path, context: str, server: str, ca: Path, token: str) -> None:
    """Add (or replace) cluster, user and context `context`; leave the rest as it was. The
    current context is set only in a file that has none."""
    doc = _load(path)
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    cluster = {"server": server, "certificate-authority-data": ca_data}
    doc["clusters"] = [
        *_without(doc.get("clusters"), context),
        {"name": context, "cluster": cluster},
    ]
    doc["users"] = [
        *_without(doc.get("users"), context),
        {"name": context, "user": {"token": token}},
    ]
    ctx = {"cluster": context, "user": context}
    doc["contexts"] = [*_without(doc.get("contexts"), context), {"name": context, "context": ctx}]
    if not doc.get("current-context"):
        doc["current-context"] = context
    _save(path, doc)


def remove_context(path: Path, context: str) -> bool:
    """Remove cluster, user and context `context` (False: the file does not have it)."""
    with contextlib.suppress(ClusterError):
        doc = _load(path)
        names = [c.get("name") for c in doc.get("contexts") or () if isinstance(c, dict)]
        if context not in names:
            return False
        for section in ("clusters", "users", "contexts"):
            doc[section] = _without(doc.get(section), context)
        if doc.get("current-context") == context:
            doc["current-context"] = ""
        _save(path, doc)
        return True
    return False
