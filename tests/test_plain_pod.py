"""The fast pod reader (`_plain_pod`, issue 19) reads a plain pod as `Pod.read` does and
leaves every other pod to it: where `Pod.read` refuses a pod, the fast reader gives None
(the refusal, naming the field, stays `Pod.read`'s)."""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from typing import Any

import pytest

from netparity.errors import InputError
from netparity.model._wire import Ctx
from netparity.model.objects import Pod, _plain_pod


def _base() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c-x2x9p",
            "namespace": "shop",
            "labels": {"app": "web", "tier": "frontend", "example.com/team": "a_b.c-1"},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "web-7d4b9c", "controller": True},
                {"kind": "Other", "name": "x"},
            ],
        },
        "spec": {
            "nodeName": "aks-nodepool1-0",
            "serviceAccountName": "web",
            "containers": [
                {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "side", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
                {"name": "plain"},
            ],
        },
        "status": {"podIP": "10.244.1.7"},
    }


# paths into the pod, and values each may take: valid ones, odd ones `Pod.read` still
# reads (other types it converts), and ones it refuses
_PLACES: list[tuple[tuple[Any, ...], list[Any]]] = [
    (("metadata",), [None, [], "x", OrderedDict(name="a")]),
    (("spec",), [None, [], {}]),
    (("status",), [None, [], {}, {"podIP": ""}, {"podIP": "::1"}, {"podIP": "10.0.0.300"}]),
    (("metadata", "name"), [None, "", "Web", "a" * 254, "a.b", 7, "-a"]),
    (("metadata", "namespace"), [None, "", "a.b", "Shop", 3, "x" * 64]),
    (("metadata", "labels"), [None, {}, [], "", {"a": None}, {"a": 1}, {"a": True}]),
    (("metadata", "labels"), [{"a": ""}, {"-a": "b"}, {"a": "b" * 64}, {1: "a"}, {"a/": "b"}]),
    (("metadata", "ownerReferences"), [None, [], "", {}, ["x"], [{"controller": 1}], ()]),
    (("spec", "containers"), [None, [], "", (), [None], ["x"], [{"ports": None}]]),
    (("spec", "containers", 0, "ports"), [None, [], "", [None], [{}], ({"containerPort": 1},)]),
    (("spec", "containers", 0, "ports", 0, "containerPort"), [0, 1, 65535, 65536, True, "80"]),
    (("spec", "containers", 0, "ports", 0, "protocol"), [None, "TCP", "tcp", "SCTP", "ICMP", 6]),
    (("spec", "containers", 0, "ports", 0, "name"), [None, "", "h", "HTTP", "a--b", "123", 5]),
    (("spec", "nodeName"), [None, "", 5]),
    (("spec", "hostNetwork"), [None, True, "yes", 0]),
    (("spec", "serviceAccountName"), [None, "", "sa", 5]),
    (("spec", "serviceAccount"), ["legacy", 5]),
]


def _put(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> bool:
    node: Any = doc
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return False
    key = path[-1]
    fits = isinstance(node, list) and isinstance(key, int) and key < len(node)
    if not (isinstance(node, dict) or fits):
        return False
    node[key] = value
    return True


def _read(doc: dict[str, Any]) -> Pod | InputError:
    try:
        return Pod.read(doc, Ctx("Pod", "test"))
    except InputError as e:
        return e


def _check(doc: dict[str, Any]) -> bool:
    """The fast reader agrees with `Pod.read`; True where it read the pod itself."""
    full = _read(doc)
    fast = _plain_pod(doc)
    if isinstance(full, InputError):
        assert fast is None, (doc, full)
        return False
    if fast is not None:
        assert fast == full and fast.key == full.key and list(fast.labels) == list(full.labels)
    return fast is not None


def test_a_plain_pod_is_read_the_fast_way_as_pod_read_reads_it() -> None:
    assert _check(_base())
    assert _check({"metadata": {"name": "a"}, "spec": {}})  # namespace default, nothing else


@pytest.mark.parametrize("place", range(len(_PLACES)))
def test_each_odd_field_goes_to_pod_read_or_is_read_alike(place: int) -> None:
    path, values = _PLACES[place]
    for value in values:
        doc = _base()
        if _put(doc, path, copy.deepcopy(value)):
            _check(doc)


def test_random_mixes_of_odd_fields_agree() -> None:
    rng = random.Random(19)
    fast = 0
    for _ in range(3000):
        doc = _base()
        for path, values in rng.sample(_PLACES, rng.randint(1, 3)):
            _put(doc, path, copy.deepcopy(rng.choice(values)))
        fast += _check(doc)
    assert fast > 100  # the valid mixes took the fast way
