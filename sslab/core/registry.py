"""A small generic registry: ``@REG.register("name")`` maps names to builders.

Spirit of timm's model registry: one lookup table per kind (encoders, objectives, ...),
duplicate names are a programming error, unknown names are a user error that lists the choices.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterator, List, TypeVar

from sslab.core.errors import BuildError, UserError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """Unknown or duplicate registry name. ``str()`` gives the readable message."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Name -> object table with a decorator interface."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second registration raises."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} registry: name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._items:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {self._items[name]!r}); "
                    "pick another name"
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the known ones."""
        if name not in self._items:
            _autoload()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the registered builder with ``kwargs``; a bad keyword names the builder and key."""
        builder = self.get(name)
        try:
            return builder(**kwargs)  # type: ignore[operator]
        except TypeError as err:
            if "unexpected keyword argument" in str(err) or "missing" in str(err):
                raise BuildError(f"{self.kind} {name!r}: {err}") from err
            raise

    def names(self) -> List[str]:
        _autoload()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            _autoload()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _autoload() -> None:
    """Import plugin modules lazily so lookups see every registration."""
    from sslab.core.plugins import load_all

    load_all()


ENCODERS: Registry[Callable[..., Any]] = Registry("encoder")
OBJECTIVES: Registry[Callable[..., Any]] = Registry("objective")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
MODALITIES: Registry[Callable[..., Any]] = Registry("modality")
COMMANDS: Registry[Callable[..., Any]] = Registry("command")
# ``sslab import FORMAT CHECKPOINT --out DIR``: converters of published checkpoints into sslab encoder folders
IMPORTERS: Registry[Callable[..., Any]] = Registry("importer")
# ``encoder.json["pipeline"]["kind"]`` -> the InputPipeline class that applies it (sslab.core.pipeline)
PIPELINES: Registry[Callable[..., Any]] = Registry("pipeline")

ALL_REGISTRIES: Dict[str, Registry[Any]] = {
    "encoders": ENCODERS,
    "objectives": OBJECTIVES,
    "datasets": DATASETS,
    "modalities": MODALITIES,
    "commands": COMMANDS,
    "importers": IMPORTERS,
    "pipelines": PIPELINES,
}
