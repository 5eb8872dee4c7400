"""`netparity lab up --api`: the lab's API server as a process of its own.

`start(lab, kubeconfig)` makes the credentials, starts `python -m netparity.labapi.serve`
(a new session: it outlives the `lab up` command), waits for its `ready URL` line, merges
the context `netparity-lab-NAME` into the kubeconfig and records the server next to the
lab's state. The server follows the lab: after `lab upgrade` it shows the rebuilt lab (new
pod addresses and names, the new dataplane's DaemonSet); when the lab is gone it stops.
`stop(lab)` (what `lab down` calls first) ends it. Either way, on SIGTERM, SIGHUP or
Ctrl-C too, the server removes the pods the run left and its context from the kubeconfig.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import yaml

from netparity.errors import ClusterError
from netparity.interrupts import signals_as_interrupt
from netparity.lab import netns as nx
from netparity.lab.state import LabState, load_state
from netparity.labapi.kubeconfig import (
    api_dir,
    context_name,
    make_credentials,
    merge_context,
    remove_context,
)
from netparity.labapi.labhost import (
    DEFAULT_PROGRAMMING_DELAY,
    LabKubeAPI,
    forget_run,
    serve_in_netns,
)
from netparity.labapi.labobjects import lab_objects
from netparity.labapi.rbac import Authorizer
from netparity.model.traffic import DEFAULT_EXTERNAL_IP

READY_TIMEOUT = 60.0
RBAC_FILE = "rbac.yaml"  # the RBAC objects the ServiceAccount's requests are checked against
ACCOUNT_TOKEN_FILE = "serviceaccount-token"  # the ServiceAccount netparity/netparity's token
POLL = 0.5


def _record(lab: str) -> Path:
    return api_dir(lab) / "server.json"


def load_record(lab: str) -> dict[str, object] | None:
    try:
        doc = json.loads(_record(lab).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write_record(lab: str, record: dict[str, object]) -> None:
    """Replace the record at once (a reader never sees half of it)."""
    tmp = _record(lab).with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(_record(lab))


def wait_shown(lab: str, generation: int, *, timeout: float = 30.0) -> None:
    """Wait until the lab's API server shows generation `generation` of the lab (after
    `lab upgrade`: the new pods and DaemonSets); ClusterError if it does not in time."""
    deadline = time.monotonic() + timeout
    while True:
        record = load_record(lab)
        if record is not None and record.get("generation") == generation:
            return
        if time.monotonic() > deadline:
            shown = record.get("generation") if record is not None else "no server"
            raise ClusterError(
                f"the API server of lab {lab} does not show generation {generation} of the "
                f"lab after {timeout:.0f} s (it shows {shown}; see {api_dir(lab) / 'server.log'})"
            )
        time.sleep(0.05)


def start(
    lab: str,
    kubeconfig: Path,
    *,
    programming_delay: float = DEFAULT_PROGRAMMING_DELAY,
    rbac: str | None = None,
) -> str:
    """Start the API server of ready lab `lab`; returns its URL (ClusterError on failure).
    With `rbac` (RBAC objects as YAML, what `netparity rbac` prints), the server also serves
    the ServiceAccount netparity/netparity: its token (file `serviceaccount-token` next to
    the server's) is authorized by those objects, and gets 403 outside them."""
    stop(lab)
    folder = api_dir(lab)
    make_credentials(folder)
    if rbac is not None:
        (folder / RBAC_FILE).write_text(rbac, encoding="utf-8")
        token = secrets.token_urlsafe(32)
        (folder / ACCOUNT_TOKEN_FILE).write_text(token + "\n", encoding="utf-8")
    argv = [
        *(sys.executable, "-m", "netparity.labapi.serve", "--lab", lab),
        *("--kubeconfig", str(kubeconfig), "--programming-delay", str(programming_delay)),
    ]
    with open(folder / "server.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
    line = proc.stdout.readline().decode().strip() if ready else ""
    proc.stdout.close()
    if not line.startswith("ready "):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
        tail = (folder / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise ClusterError(
            f"the API server of lab {lab} did not start: {' / '.join(tail) or 'no message'}"
        )
    return line.split(" ", 1)[1]


def stop(lab: str, *, timeout: float = 30.0) -> bool:
    """End the lab's API server (SIGTERM: it cleans up) and remove its files; False if none
    ran. Only the recorded process, and only if it is still that process."""
    record = load_record(lab)
    stopped = False
    if record is not None:
        pid, started = int(str(record.get("pid"))), record.get("start")
        if nx.same_process(pid, int(str(started)) if started is not None else None):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while nx.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if nx.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped = True
        if record.get("kubeconfig"):
            remove_context(Path(str(record["kubeconfig"])), context_name(lab))
    shutil.rmtree(api_dir(lab), ignore_errors=True)
    return stopped


# --------------------------------------------------------------------------- the server


def _dataplane_crds(state: LabState) -> bool:
    return state.dataplane.startswith("cilium")


def _listen_outside(api: LabKubeAPI, state: LabState, extra: list[ThreadingHTTPServer]) -> None:
    """(Again, after an upgrade rebuilt the lab's namespaces) the API inside the outside host."""
    for httpd in extra:
        httpd.shutdown()
        httpd.server_close()
    extra.clear()
    outside = _outside_host(state)
    if outside is not None:
        extra.append(serve_in_netns(api, outside))


def _serve(
    api: LabKubeAPI,
    state: LabState,
    extra: list[ThreadingHTTPServer],
    record: dict[str, object],
) -> None:
    """Follow the lab until it is gone: a new generation (upgrade) is shown when ready, and
    the record says which generation the API shows."""
    generation = state.generation
    while True:
        time.sleep(POLL)
        try:
            now = load_state(api.lab)
        except ClusterError:
            continue
        if now is None:
            return
        if now.status == "ready" and now.generation != generation and now.topology is not None:
            forget_run(api)
            with api.lock:
                api.store.clear()
            api.cilium_crds = _dataplane_crds(now)
            api.add(*lab_objects(now))
            _listen_outside(api, now, extra)
            generation = now.generation
            _write_record(api.lab, {**record, "generation": generation})


def _outside_host(state: LabState) -> str | None:
    """The namespace of the lab's default outside host (where `pytest` runs to probe from
    outside the cluster), or None."""
    assert state.topology is not None
    host = next((h for h in state.topology.hosts if h.ip == DEFAULT_EXTERNAL_IP), None)
    return host.netns if host is not None else None


def outside_host(lab: str) -> str | None:
    state = load_state(lab)
    return _outside_host(state) if state is not None and state.topology is not None else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netparity.labapi.serve")
    p.add_argument("--lab", required=True)
    p.add_argument("--kubeconfig", required=True, type=Path)
    p.add_argument("--programming-delay", type=float, default=DEFAULT_PROGRAMMING_DELAY)
    args = p.parse_args(argv)
    folder = api_dir(args.lab)
    token = (folder / "token").read_text(encoding="utf-8").strip()
    state = load_state(args.lab)
    if state is None or state.topology is None:
        print(f"there is no ready lab named {args.lab}", file=sys.stderr)
        return 1
    api = LabKubeAPI(
        lab=args.lab,
        programming_delay=args.programming_delay,
        token=token,
        tls=(folder / "tls.crt", folder / "tls.key"),
        cilium_crds=_dataplane_crds(state),
    )
    if (folder / RBAC_FILE).is_file():
        docs = yaml.safe_load_all((folder / RBAC_FILE).read_text(encoding="utf-8"))
        api.authorizer = Authorizer(d for d in docs if isinstance(d, dict))
        api.account_token = (folder / ACCOUNT_TOKEN_FILE).read_text(encoding="utf-8").strip()
    context = context_name(args.lab)
    extra: list[ThreadingHTTPServer] = []
    with signals_as_interrupt():
        try:
            api.add(*lab_objects(state))
            api.start()
            _listen_outside(api, state, extra)
            merge_context(args.kubeconfig, context, api.url, folder / "tls.crt", token)
            record: dict[str, object] = {
                "pid": os.getpid(),
                "start": nx.process_start(os.getpid()),
                "url": api.url,
                "kubeconfig": str(args.kubeconfig),
                "context": context,
            }
            record["generation"] = state.generation
            _write_record(args.lab, record)
            print(f"ready {api.url}", flush=True)
            _serve(api, state, extra, record)
        except KeyboardInterrupt:
            pass
        finally:
            for httpd in extra:
                httpd.shutdown()
                httpd.server_close()
            api.stop()
            remove_context(args.kubeconfig, context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
