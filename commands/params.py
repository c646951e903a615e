"""Print the parameters in force: params.yaml with the -S overrides and the profile's values filled in, each with
where its value came from and what it means (pipeline/schema.py).

    python -m commands.params [-S profile=lab] [-S T=12] [--only train]

`set by`: params.yaml, -S, or the profile (a value left null). The result is checked as a stage checks it, so a
bad value is named here too.
"""
from __future__ import annotations

import argparse

import pandas as pd

from pipeline.config import check, overridden, parse_overrides, read_params, resolve, run
from pipeline.schema import declared, get_dotted


def as_yaml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(as_yaml, value)) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def resolved_table(params: dict, overrides: dict) -> pd.DataFrame:
    cfg = resolve(params, overrides)
    check(cfg)
    before, _ = overridden(params, overrides)
    rows = []
    for key, info in declared().items():
        value = get_dotted(cfg, key)
        given = any(key == k or key.startswith(k + ".") for k in overrides)
        source = (f"profile {cfg['profile']}" if get_dotted(before, key) is None and value is not None
                  else "-S" if given else "params.yaml")
        rows.append({"parameter": key, "value": as_yaml(value), "set by": source,
                     "meaning": info.description})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter (dotted key, as dvc exp run -S)")
    parser.add_argument("--only", metavar="GROUP", help="only the parameters of this group, e.g. train")
    a = parser.parse_args()
    table = resolved_table(read_params(), parse_overrides(a.overrides))
    if a.only:
        table = table[table.parameter.str.startswith(a.only + ".") | (table.parameter == a.only)]
    print(table.to_markdown(index=False, disable_numparse=True, tablefmt="simple"))


if __name__ == "__main__":
    run(main)
