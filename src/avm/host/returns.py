"""Returned linear values that cross hosts go back to their sending machine.

    "what a batch that will not be applied carries goes back to its sender as a
    ``~returned`` weak signal, or into the dead letters of the host that holds it"
    (:mod:`avm.core.delivery`, D7)

Inside one network the core gives the values back itself (:func:`~avm.core.delivery.
give_back`). When the sender lives on another host, the receiving host cannot mint the
sender's signal capability (it holds none of its keys), so the core records them in its
dead letters. This module, run by :class:`~avm.host.netjoin.HostNet`, carries them on,
through the core's own paths and the wire's exactly-once delivery:

1. **At the host that failed the batch**, a dead letter whose sender is a remote
   machine is taken out and sent, in the same transaction, to that machine as a
   ``~returned`` batch (:func:`~avm.core.delivery.send_batch`): numbered, kept in the
   outbox until acknowledged. Its one message is ``(carrier, (RETURNED, info))``:
   ``carrier`` names the sender's address but cannot unseal (only the sender's host
   could make one that does), and ``info`` holds the values, the rule and the reason.
2. **At the sender's host**, that batch fails to unseal, so the core puts its values
   into the dead letters there, under the sending machine. Such a letter (its reason
   starts with :data:`MARK`) is taken out and handed to
   :func:`~avm.core.delivery.give_back`, which mints the signal capability and sends
   the values to the machine as any local failure would: ``("~returned", info)`` with
   the original rule and reason.

Every move is one act on the network (committed like a step), so a crash leaves a
letter where it was, and :meth:`Returns.scan` at start picks it up again. A letter
whose machine cannot take it (stopped, evicted, gone) stays a dead letter: values are
never dropped. A machine whose ``returned`` handler fails puts them in the dead letters
again, with its own rule, and they are not moved a second time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.caps import Capability
from ..core.delivery import RETURNED, give_back, send_batch
from ..core.netvalue import Network, events, new_batch, with_
from ..core.values import Map
from .runtime import Runtime
from .store import Dirty

__all__ = ["Returns", "MARK"]

#: How a carried letter's reason starts (then the rule, a NUL, the original reason).
MARK = "returned from a peer host: "
#: The carrier capability's ciphertext: of the right size, unsealable by anyone.
_CARRIER_SEALED = b"avm returned-from-peer carrier!!" + bytes(16)


class Returns:
    """Moves the dead letters of remote senders home; see the module docstring."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.counts = {"sent-home": 0, "given-back": 0}
        self._due = False
        rt.subscribers.append(self._on_step)

    def _on_step(self, evs: list, dirty: Any) -> None:
        if not self._due and any(type(e) is events.DeadLetter for e in evs):
            self._due = True
            asyncio.get_running_loop().call_soon(self.scan)

    def scan(self) -> None:
        """Move every dead letter of this host that belongs elsewhere or came home."""
        self._due = False
        rt = self.rt
        net = rt.net
        for e in tuple(net.dead_letters.get(rt.host, ())):
            sender = e["sender"]
            if type(sender) is not bytes:
                continue
            if sender in net.remote:
                rt.apply(self._send_home(e), Dirty(heads={sender}))
            elif (e["dest"] is None and type(e["reason"]) is str and e["reason"].startswith(MARK)
                  and sender in net.machines._m and net.machines[sender].status != "stopped"):
                rt.apply(self._give_back(e), Dirty(heads={sender}))
            net = rt.net

    def _take(self, net: Network, e: Map) -> Network | None:
        host = self.rt.host
        letters = net.dead_letters.get(host, ())
        for i, x in enumerate(letters):
            if x is e:
                rest = letters[:i] + letters[i + 1:]
                dead = net.dead_letters.set(host, rest) if rest else net.dead_letters.delete(host)
                return with_(net, dead_letters=dead)
        return None  # moved already

    def _send_home(self, e: Map) -> Any:
        host = self.rt.host

        def act(net: Network) -> tuple[Network, list]:
            taken = self._take(net, e)
            if taken is None or e["sender"] not in taken.remote:
                return net, []
            info = Map({"reason": f"{MARK}{e['rule']}\0{e['reason']}", "rule": e["rule"],
                        "values": e["values"]})
            carrier = Capability(e["sender"], 0, 0, 1.0, _CARRIER_SEALED)
            self.counts["sent-home"] += 1
            return send_batch(taken, ("~", "returned", host), e["sender"],
                              ((carrier, (RETURNED, info)),), host, 1.0)
        return act

    def _give_back(self, e: Map) -> Any:
        host, env = self.rt.host, self.rt.env

        def act(net: Network) -> tuple[Network, list]:
            taken = self._take(net, e)
            if taken is None:
                return net, []
            text = e["reason"][len(MARK):].split("; not taken back: ")[0]
            rule, _, reason = text.partition("\0")
            b = new_batch(e["sender"], None, e["seq"], (0, 0), 1.0, e["values"])
            self.counts["given-back"] += 1
            return give_back(taken, b, rule or "returned", reason, host, env)
        return act
