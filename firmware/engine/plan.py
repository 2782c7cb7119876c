# Activation memory planning: every non-constant tensor gets an offset in one arena.
#
# A tensor is live from the operator that writes it (or from the start, for graph inputs) to the
# last operator that reads it (or to the end, for graph outputs). Tensors are placed largest
# first at the lowest aligned offset that does not overlap any already-placed tensor whose
# lifetime intersects; the arena size is the highest end offset. This is the greedy-by-size
# strategy TFLM's GreedyMemoryPlanner also uses, without its scratch-buffer bookkeeping.

ALIGN = 4


def _align(n):
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def lifetimes(model):
    """{tensor index: [first op, last op]} for every activation tensor."""
    end = len(model.operators)
    live = {}
    for t in model.inputs:
        live[t] = [0, 0]
    for op in model.operators:
        for t in op.outputs:
            if t >= 0 and not model.tensors[t].is_constant and t not in live:
                live[t] = [op.index, op.index]
        for t in op.inputs:
            if t >= 0 and not model.tensors[t].is_constant:
                if t not in live:
                    live[t] = [0, op.index]
                live[t][1] = max(live[t][1], op.index)
    for t in model.outputs:
        if t in live:
            live[t][1] = end
        else:
            live[t] = [0, end]
    return live


def plan(model):
    """(arena size in bytes, {tensor index: offset})."""
    live = lifetimes(model)
    order = sorted(live, key=lambda t: (-model.tensors[t].nbytes, t))
    placed = []  # (offset, end, first, last)
    offsets = {}
    for t in order:
        first, last = live[t]
        size = _align(model.tensors[t].nbytes)
        busy = sorted((o, e) for o, e, f, l in placed if f <= last and first <= l)
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            if e > offset:
                offset = e
        offsets[t] = offset
        placed.append((offset, offset + size, first, last))
    arena = 0
    for o, e, f, l in placed:
        if e > arena:
            arena = e
    return arena, offsets
