"""The exception hierarchy: bad input is an exception naming the object and the field."""

from __future__ import annotations


class NetparityError(Exception):
    """Base of every error netparity raises on purpose; the CLI turns it into exit 2."""


class InputError(NetparityError):
    """Input that cannot be used: one sentence naming where, which object and which field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.kind = kind
        self.name = name
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where: list[str] = []
        if self.source:
            where.append(self.source)
        if self.kind or self.name:
            where.append(" ".join(p for p in (self.kind, self.name) if p))
        if self.field:
            where.append(f"field {self.field}")
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def at(self, *, source: str | None = None) -> InputError:
        """The same error, located in a file (kept if already located)."""
        return InputError(
            self.message,
            source=self.source or source,
            kind=self.kind,
            name=self.name,
            field=self.field,
        )


class ClusterError(NetparityError):
    """A cluster (live or lab) that cannot be read or acted on."""


class RecordError(NetparityError):
    """A record or baseline that cannot be used for this run."""
