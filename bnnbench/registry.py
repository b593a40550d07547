"""Name -> class registries for methods and datasets.

Registry key = module file name = CLI value, so the names are known without importing any module
(`pkgutil` lists the package's files): `bnnbench list` and the CLI's name checks stay instant, and a
method module (which imports lightning) is imported only when it is used.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from bnnbench.errors import BadInput


def unknown_choice(kind: str, value: str, choices: list[str]) -> BadInput:
    """An error naming the bad value, a close match if there is one, and every valid choice."""
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return BadInput(f"unknown {kind}: '{value}'{hint}; valid: {', '.join(choices)}")


class Registry:
    """Classes registered by name; names are the modules of `package` (minus private ones and `base`)."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._classes: dict[str, type] = {}

    def names(self) -> list[str]:
        pkg = importlib.import_module(self.package)
        found = {m.name for m in pkgutil.iter_modules(pkg.__path__)
                 if not m.name.startswith("_") and m.name != "base"}
        return sorted(found | set(self._classes))

    def register(self, name: str):
        def decorator(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._classes[name]!r}")
            self._classes[name] = cls
            cls.name = name
            return cls

        return decorator

    def check(self, name: str) -> str:
        """Validate a name without importing anything heavy."""
        if name not in self.names():
            raise unknown_choice(self.kind, name, self.names())
        return name

    def get(self, name: str) -> type:
        self.check(name)
        if name not in self._classes:
            importlib.import_module(f"{self.package}.{name}")
        if name not in self._classes:
            raise ValueError(f"module {self.package}.{name} does not register a {self.kind} named '{name}'")
        return self._classes[name]


METHODS = Registry("method", "bnnbench.methods")
DATASETS = Registry("dataset", "bnnbench.data")


def summary(registry: Registry, name: str) -> str:
    """First line of a registered module's docstring, read with `ast` so nothing is imported."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(f"{registry.package}.{name}")
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as source:
        doc = ast.get_docstring(ast.parse(source.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
