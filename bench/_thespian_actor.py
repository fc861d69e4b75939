"""The counter actor for bench/net.py's Thespian contender (Thespian's multiproc bases
import an actor's class by module name in a fresh process, so it cannot live in
``__main__``)."""

from thespian.actors import Actor


class CounterActor(Actor):
    """Adds up the ``(tag, n)`` pairs of every batch it is told; ``"get"`` answers."""

    n = 0

    def receiveMessage(self, msg, sender):  # noqa: N802 - Thespian's name
        if msg == "get":
            self.send(sender, self.n)
        elif isinstance(msg, list):
            for _, k in msg:
                self.n += k
