"""`quick_init` builds the same frozen instances as the `__init__` dataclasses writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from netparity.engine.traffic import Decision, DirectionResult, PathKind, Verdict
from netparity.model.quick import quick_init


def _twins() -> tuple[type, type]:
    """The same class twice: as dataclasses writes it, and with quick_init."""

    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Sample:
            a: int
            b: str = "b"
            c: tuple[int, ...] = field(default_factory=lambda: (1, 2))
            d: list[int] = field(default_factory=list, kw_only=True)
            e: int = field(default=0, kw_only=True)
            derived: int = field(init=False, default=0)
            late: int = field(init=False)

            def __post_init__(self) -> None:
                object.__setattr__(self, "late", self.a + self.e)

        return Sample

    return make(), quick_init(make())


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, "x"), {}), ((1, "x", (3,)), {"d": [4], "e": 5}), ((2,), {"e": 7})],
)
def test_same_instances_as_dataclasses(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    plain, quick = _twins()
    a, b = plain(*args, **kwargs), quick(*args, **kwargs)
    assert dataclasses.astuple(a) == dataclasses.astuple(b)
    assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    assert b.late == b.a + b.e  # __post_init__ ran


def test_factories_give_fresh_objects_and_frozen_stays_frozen() -> None:
    _, quick = _twins()
    x, y = quick(1), quick(1)
    assert x.d == [] and x.d is not y.d
    with pytest.raises(dataclasses.FrozenInstanceError):
        x.a = 2
    with pytest.raises(TypeError):
        quick()  # a is required
    with pytest.raises(TypeError):
        quick(1, e=1, f=2)  # no such field
    with pytest.raises(TypeError):
        quick(1, "x", (3,), [4])  # d is keyword-only


def test_refuses_what_it_cannot_rewrite() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (Mutable, NoSlots):
        with pytest.raises(TypeError, match="frozen dataclass with slots"):
            quick_init(cls)


def test_engine_results_equal_and_hash_as_before() -> None:
    side = DirectionResult(direction="ingress", subject="ns/a", decision=Decision.DENY, why="w")
    again = DirectionResult(direction="ingress", subject="ns/a", decision=Decision.DENY, why="w")
    assert side == again and hash(side) == hash(again)
    assert side.rules == () and side.selected_by == ()
    v = Verdict(decision=Decision.DENY, path=PathKind.POD_POD, ingress=side)
    assert v.ingress is side and v.notes == () and v.refused_is_deny is False
