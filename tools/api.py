"""Print the public API: every submodule's ``__all__``, functions with their signatures (Markdown list).

    python tools/api.py            # full signatures
    python tools/api.py --names    # names only
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import xai_robust  # noqa: E402


def api(names_only: bool = False) -> str:
    lines = ["- `xai_robust`: " + ", ".join(f"`{n}`" for n in xai_robust.__all__)]
    for name in sorted(xai_robust._SUBMODULES):
        module = importlib.import_module(f"xai_robust.{name}")
        entries = []
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public, None)
            if obj is None or inspect.ismodule(obj):
                continue
            if inspect.isfunction(obj) and not names_only:
                entries.append(f"`{public}{inspect.signature(obj)}`".replace("'", '"'))
            else:
                entries.append(f"`{public}`" + (" (class)" if inspect.isclass(obj) and not names_only else ""))
        lines.append(f"- **{name}**: " + "; ".join(entries))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", action="store_true", help="names only, no signatures")
    print(api(parser.parse_args().names))
