"""Which nodes a deploy or rollback's `--to GROUP` names: `edgefleet deploy`/`rollback` and the
dashboard resolve groups the same way."""
from ..errors import NotFound


def resolve_group(group, nodes, where, board=None):
    """Node ids for GROUP: 'all', a board name, a runtime, or comma-separated node ids, among
    `nodes` (the fleet's, as a snapshot lists them; `where` names their source). With a
    bundle's board, only nodes of that board are kept (a node refuses another board's bundle)."""
    wanted = set(group.split(","))
    picked = [n for n in nodes if group == "all" or n["board"] == group or n["runtime"] == group or n["id"] in wanted]
    if board is not None:
        picked = [n for n in picked if n["board"] == board]
    if not picked:
        raise NotFound("group %r matches no %snode in %s" % (group, "%s " % board if board else "", where))
    return sorted(n["id"] for n in picked)
