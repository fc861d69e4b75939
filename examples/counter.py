"""The smallest machine: a counter.

A machine is a pure step function plus its state. Here the state is an ``int``, and
the behavior answers two messages:

* ``("add", n)`` adds ``n`` to the count;
* ``("get", reply)`` sends ``("count", n)`` to the capability ``reply``.

Handlers return ``(outputs, new_state)``: a list of ``(capability, content)`` pairs to
send, and the state the machine keeps. Nothing else happens: no I/O, no globals. That is
what lets the runtime run a batch of messages all-or-nothing, replay it, or run the same
machine inside a simulator or another machine.

Run it with ``avm sim examples/counter.py``; the trace shows every batch.
"""

import avm

counter = avm.Behavior("counter")


@counter.on("add")
def add(count, n):
    return [], count + n


@counter.on("get")
def get(count, reply):
    return [(reply, ("count", count))], count


def build(sim):
    """Spawn a counter starting at 0, add 1, 2 and 3, then ask for the count."""
    sim.spawn("counter", counter, 0)  # the init argument is the initial state
    answers = sim.probe("answers")  # a machine that records what it receives
    c = sim.cap("counter", "main")  # a capability: the counter's address + a sealed context
    sim.submit([(c, ("add", 1)), (c, ("add", 2)), (c, ("add", 3)), (c, ("get", answers))])
    # The state is None until the init batch has run, hence the "or 0".
    sim.invariant(lambda s: (s.state("counter") or 0) >= 0, name="count is never negative")
