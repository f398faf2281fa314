"""Print pip constraints that pin every dependency of pyproject.toml to the floor of its range.

`make test-floor` installs the project under these, so the lowest releases pyproject admits
are the ones tested, not only the Makefile's pins. A dependency without a floor is left free.
"""

import re
import sys
from pathlib import Path

import tomllib

REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?(.*)$")  # name, [extras], clauses


def floors(pyproject: Path) -> list[str]:
    """`name==X` for each `name>=X[,...]` in the project's dependencies and optional ones."""
    project = tomllib.loads(pyproject.read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    pins = []
    for dep in deps:
        name, clauses = REQUIREMENT.match(dep.split(";")[0].replace(" ", "")).groups()
        for clause in clauses.split(","):
            if clause.startswith(">="):
                pins.append(f"{name}=={clause[2:]}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    print("\n".join(floors(root / "pyproject.toml")))
