"""A real node process that dies right after a Complete (tests/test_e2e_aggregate.py).

`python tests/support/dropout_node.py MARKER N --home DIR` runs the ordinary daemon
(`zkpot node start`) with one change in this process only, so no test hook lives on a
production path: at the N-th Complete that lists its own masked vector, of a selection
another node proposed, it writes {"round", "selection"} to MARKER and kills itself with
SIGKILL before it unmasks, as a laptop closed mid-round would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from node import aggmember
from node.roundpool import Mine, RoundState
from node.tools import cli

MARKER: Path | None = None
AT = 0
_seen: set[bytes] = set()
_maybe_unmask = aggmember.Member._maybe_unmask


async def maybe_unmask(self: aggmember.Member, st: RoundState, mine: Mine) -> None:
    me = self.key.public
    for h, comp in list(st.agg.completes.items()):
        sel = st.agg.selections.get(h)
        ours = st.agg.updates.get(h, {}).get(me)
        if sel is None or ours is None or sel.proposer == me or h in _seen:
            continue
        if comp.updates[sel.members.index(me)] != ours.hash():
            continue
        _seen.add(h)
        if len(_seen) == AT:
            assert MARKER is not None
            with MARKER.open("w") as f:
                f.write(json.dumps({"round": sel.round, "selection": h.hex()}))
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    await _maybe_unmask(self, st, mine)


def main(argv: list[str]) -> Any:
    global MARKER, AT
    MARKER, AT = Path(argv.pop(0)), int(argv.pop(0))
    aggmember.Member._maybe_unmask = maybe_unmask  # type: ignore[method-assign]
    return cli.main(["node", "start", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
