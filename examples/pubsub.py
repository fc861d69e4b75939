"""Publish and subscribe: a topic behind membranes, one membrane per subscriber.

Four kinds of machine:

``topic``
    Keeps the log of what was published and the inboxes of its subscribers.
    ``("subscribe", inbox)`` answers ``("subscribed", number, cancel)`` and replays the log
    to the new inbox, then every ``("publish", item)`` goes to every inbox as
    ``("event", seq, item)``. ``cancel`` is a capability of the topic's own: sending
    ``"cancel"`` through it ends that subscription. Because the log is replayed, every
    subscriber sees every item exactly once and in order, whenever it subscribed.

``press``
    The publisher. Each item it publishes is ``("news", i, headline, detail)`` where
    ``detail`` is a capability of the press: ``("fetch", reply)`` through it answers
    ``("detail", i, text)``. So items carry *capabilities*, not only data.

``reader.N``
    A subscriber. It subscribes itself when it starts, records the events it gets, and
    fetches the detail of each one through the capability the item carried.

membranes
    Nobody holds the topic's own capability but membranes (``avm.core.patterns``): the
    press publishes through ``press.door`` (allow ``publish``, and ``detail`` for the
    press's answers coming back in), and each reader has its own, ``reader.N.door`` (allow
    ``subscribe``, ``cancel`` and ``fetch``). A membrane wraps every capability that
    crosses it, so the detail capability a reader holds is *its own door's* wrapper of the
    press door's wrapper of the press's capability, and the reader's inbox, as the topic
    holds it, is its door's wrapper too. Revoking ``reader.N.door`` therefore cuts that
    reader off completely: its inbox (the topic's batches to it fail at the door), its
    cancel capability, and every detail capability it received through the topic. The
    other readers are untouched: each holds only its own door's wrappers.

The membranes are made in ``build``, one per reader known up front (the seed has no
spawner capability to make one as a reader arrives). The run: three readers on two hosts
subscribe, the press publishes five items, and the operator revokes ``reader.3.door``
at some moment of the run (often before ``reader.3`` subscribed at all: nothing orders
the operator's batch against the others); ``reader.3`` then holds a prefix of the log,
the others all of it, with every detail fetched. ``tests/test_pubsub.py`` revokes the
door mid-run, after the reader holds events and their capabilities, over many seeds.
"""

import avm
from avm import Map
from avm.core.patterns import forwarder_caps, membrane, membrane_args

# -- the topic -----------------------------------------------------------------------------

topic = avm.Behavior("pubsub.topic")


@topic.init
def open_topic(_state, _args):
    return [], Map(me=None, subs=Map(), log=(), next=0)


@topic.signal("self")
def topic_self(state, me):
    return [], state.set("me", me)


@topic.on("subscribe", "main")
def subscribe(state, inbox):
    n = state["next"]
    cancel = state["me"](("cancel", n))
    replay = [(inbox, ("event", seq, item)) for seq, item in enumerate(state["log"])]
    return ([(inbox, ("subscribed", n, cancel)), *replay],
            state.update(subs=state["subs"].set(n, inbox), next=n + 1))


@topic.on("cancel", "cancel")
def cancel(state, *, ctx):
    return [], state.set("subs", state["subs"].discard(ctx[1]))


@topic.on("publish", "main")
def publish(state, item):
    seq = len(state["log"])
    outs = [(inbox, ("event", seq, item)) for inbox in state["subs"].values()]
    return outs, state.set("log", (*state["log"], item))


# -- the publisher -------------------------------------------------------------------------

press = avm.Behavior("pubsub.press")

ITEMS = ("Topic opens", "Membranes wrap", "Readers subscribe", "One door revoked", "Fin")
DETAILS = tuple(f"the whole story of {h.lower()!r}" for h in ITEMS)


@press.init
def start_press(_state, args):
    """Init argument: ``Map(topic=capability to publish through)``."""
    return [], Map(me=None, topic=args["topic"], published=0)


@press.signal("self")
def press_self(state, me):
    return [], state.set("me", me)


@press.on("next", "desk")
def publish_next(state):
    i = state["published"]
    if i >= len(ITEMS):
        return [], state
    item = ("news", i, ITEMS[i], state["me"](("detail", i)))
    return [(state["topic"], ("publish", item))], state.set("published", i + 1)


@press.on("fetch", "detail")
def fetch(state, reply, *, ctx):
    i = ctx[1]
    return [(reply, ("detail", i, DETAILS[i]))], state


# -- a subscriber --------------------------------------------------------------------------

reader = avm.Behavior("pubsub.reader")


@reader.init
def start_reader(_state, args):
    """Init argument: ``Map(topic=this reader's door to the topic)``."""
    return [], Map(me=None, topic=args["topic"], number=None, cancel=None, got=(),
                   details=Map())


@reader.signal("self")
def reader_self(state, me):
    # Subscribe at once: the inbox capability crosses the door, wrapped.
    return [(state["topic"], ("subscribe", me("inbox")))], state.set("me", me)


@reader.on("subscribed", "inbox")
def subscribed(state, number, cancel_cap):
    return [], state.update(number=number, cancel=cancel_cap)


@reader.on("event", "inbox")
def event(state, seq, item):
    _, i, headline, detail = item
    ask = (detail, ("fetch", state["me"](("detail", seq))))
    return [ask], state.set("got", (*state["got"], (seq, i, headline, detail)))


@reader.on("detail", "detail")
def detail_text(state, i, text, *, ctx):
    return [], state.set("details", state["details"].set(ctx[1], text))


@reader.on("refetch", "admin")
def refetch(state):
    """Fetch every detail again (tests use it to try old capabilities after revocation)."""
    me = state["me"]
    return [(d, ("fetch", me(("detail", seq)))) for seq, _, _, d in state["got"]], state


@reader.on("unsubscribe", "admin")
def unsubscribe(state):
    return [(state["cancel"], "cancel")], state


# -- the network ---------------------------------------------------------------------------

HOSTS = ("h0", "h1", "h2")
READERS = {"reader.1": "h1", "reader.2": "h2", "reader.3": "h2"}
REVOKED = "reader.3"
PRESS_ALLOW = ("publish", "detail")
READER_ALLOW = ("subscribe", "cancel", "fetch")


def door(name: str) -> str:
    return f"{name}.door"


def spawn_world(sim) -> None:
    """The machines and their doors, without the workload."""
    for h in HOSTS:
        sim.add_host(h, exist_ok=True)
    sim.spawn("topic", topic, None, host="h0")
    main = sim.cap("topic", "main")
    sim.spawn(door("press"), membrane(), membrane_args(main, PRESS_ALLOW), host="h0")
    sim.spawn("press", press, Map(topic=forwarder_caps(sim, door("press"))[0]), host="h1")
    for name, host in READERS.items():
        sim.spawn(door(name), membrane(), membrane_args(main, READER_ALLOW), host="h0")
        sim.spawn(name, reader, Map(topic=forwarder_caps(sim, door(name))[0]), host=host)


def build(sim):
    """Spawn the topic, the press, three readers and their doors; publish; revoke one."""
    spawn_world(sim)
    desk = sim.cap("press", "desk")
    for _ in ITEMS:
        sim.send(desk, "next", client="editor")
    sim.send(sim.cap(door(REVOKED), "admin"), "revoke", client="operator")

    def readers_see_the_log_in_order(s):
        log = (s.state("topic") or Map()).get("log", ())
        for name in READERS:
            st = s.state(name)
            if st is None:
                continue
            got = tuple((seq, i, h) for seq, i, h, _ in st["got"])
            if got != tuple((seq, item[1], item[2]) for seq, item in enumerate(log))[:len(got)]:
                return False
        return True

    def details_are_the_press_own(s):
        for name in READERS:
            st = s.state(name)
            if st is None:
                continue
            for seq, text in st["details"].items():
                if seq >= len(st["got"]) or text != DETAILS[st["got"][seq][1]]:
                    return False
        return True

    sim.invariant(readers_see_the_log_in_order)
    sim.invariant(details_are_the_press_own)
