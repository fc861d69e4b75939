"""Publish and subscribe: a topic behind membranes, one membrane per subscriber.

Five kinds of machine:

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
    A subscriber. It joins when it starts (below), subscribes through its door, records
    the events it gets, and fetches the detail of each one through the capability the
    item carried.

``registrar``
    Makes a door for each reader *as it joins*: ``("join", label, reply)`` asks the
    ``spawner`` capability (from the registrar's ``env``; the operator granted it, for
    membranes only) for a new membrane in front of the topic, and hands its use capability
    to the reader; the registrar keeps the admin capability, so ``("revoke", label)``
    (through its ``operator`` capability) revokes that reader's door.

membranes
    Nobody holds the topic's own capability but membranes (``avm.core.patterns``): the
    press publishes through ``press.door`` (allow ``publish``, and ``detail`` for the
    press's answers coming back in), and each reader has its own door, spawned for it
    when it joined (allow ``subscribe``, ``cancel`` and ``fetch``). A membrane wraps every
    capability that crosses it, so the detail capability a reader holds is *its own
    door's* wrapper of the press door's wrapper of the press's capability, and the
    reader's inbox, as the topic holds it, is its door's wrapper too. Revoking a
    reader's door therefore cuts that reader off completely: its inbox (the topic's
    batches to it fail at the door), its cancel capability, and every detail capability
    it received through the topic. The other readers are untouched: each holds only its
    own door's wrappers.

The topic is not told of a revocation: what it sends to a revoked door keeps failing
there, one failed batch per item (visible in the failures), which is the price of
keeping revocation out of the topic's code.

The run: three readers on two hosts join and subscribe, the press publishes five
items, and the operator revokes ``reader.3``'s door at some moment of the run (often
before ``reader.3`` subscribed at all: nothing orders the operator's batch against the
others; a door revoked before it exists is never handed over); ``reader.3`` then holds a
prefix of the log, the others all of it, with every detail fetched.
``tests/test_pubsub.py`` revokes the door mid-run, after the reader holds events and
their capabilities, over many seeds with every fault kind.
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
    """Init argument: ``Map(registrar=its desk capability, label=this reader's name)``."""
    return [], Map(me=None, registrar=args["registrar"], label=args["label"], topic=None,
                   number=None, cancel=None, got=(), details=Map())


@reader.signal("self")
def reader_self(state, me):
    # Ask for a door of its own; it comes back as ("door", use) through "setup".
    return [(state["registrar"], ("join", state["label"], me("setup")))], state.set("me", me)


@reader.on("door", "setup")
def got_door(state, use):
    # Subscribe at once: the inbox capability crosses the door, wrapped.
    return [(use, ("subscribe", state["me"]("inbox")))], state.set("topic", use)


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


# -- the registrar: a door per reader, made as it joins --------------------------------

registrar = avm.Behavior("pubsub.registrar")

#: The behavior name the registrar's spawner creates doors from.
DOOR_BEHAVIOR = "pubsub.door"


@registrar.init
def open_registrar(_state, args):
    """Init argument: ``Map(topic=the topic's own capability)``."""
    return [], Map(me=None, spawner=None, topic=args["topic"], next=0, joining=Map(),
                   doors=Map(), revoked=())


@registrar.signal("self")
def registrar_self(state, me):
    return [], state.set("me", me)


@registrar.signal("env")
def registrar_env(state, env):
    return [], state.set("spawner", env["spawner"])


@registrar.on("join", "desk")
def join(state, label, reply):
    n = state["next"]
    me = state["me"]
    # The new membrane sends ("membrane", use, admin) to ("door", n) once it starts.
    args = membrane_args(state["topic"], READER_ALLOW, reply=me(("door", n)))
    ask = (state["spawner"], (me(("spawned", n)), ("spawn", DOOR_BEHAVIOR, args)))
    return [ask], state.update(next=n + 1, joining=state["joining"].set(n, (label, reply)))


@registrar.on("spawned", "spawned")
def spawned(state, cap, *, ctx):
    return [], state  # the door tells its capabilities itself, to ("door", n)


@registrar.on("membrane", "door")
def door_ready(state, use, admin, *, ctx):
    label, reply = state["joining"][ctx[1]]
    state = state.update(joining=state["joining"].delete(ctx[1]),
                         doors=state["doors"].set(label, Map(use=use, admin=admin)))
    if label in state["revoked"]:  # revoked before it existed: never handed over
        return [(admin, "revoke")], state
    return [(reply, ("door", use))], state


@registrar.on("revoke", "operator")
def revoke_reader(state, label):
    door_caps = state["doors"].get(label)
    state = state.set("revoked", (*state["revoked"], label))
    return ([(door_caps["admin"], "revoke")] if door_caps is not None else []), state


# -- the network ---------------------------------------------------------------------------

HOSTS = ("h0", "h1", "h2")
READERS = {"reader.1": "h1", "reader.2": "h2", "reader.3": "h2"}
REVOKED = "reader.3"
PRESS_ALLOW = ("publish", "detail")
READER_ALLOW = ("subscribe", "cancel", "fetch")


PRESS_DOOR = "press.door"


def door_address(sim, label: str) -> bytes | None:
    """The address of reader ``label``'s door, once the registrar has it."""
    doors = (sim.state("registrar") or Map()).get("doors", Map())
    return doors[label]["use"].address if label in doors else None


def revoke(sim, label: str) -> None:
    """The operator revokes reader ``label``'s door (through the registrar)."""
    sim.send(sim.cap("registrar", "operator"), ("revoke", label), client="operator")


def spawn_world(sim) -> None:
    """The machines, without the workload; readers' doors are made as they join."""
    for h in HOSTS:
        sim.add_host(h, exist_ok=True)
    sim.behavior(membrane(DOOR_BEHAVIOR), DOOR_BEHAVIOR)
    spawner, _ = sim.spawner((DOOR_BEHAVIOR,), host="h0")  # it may make doors only
    sim.spawn("topic", topic, None, host="h0")
    main = sim.cap("topic", "main")
    sim.spawn(PRESS_DOOR, membrane(), membrane_args(main, PRESS_ALLOW), host="h0")
    sim.spawn("press", press, Map(topic=forwarder_caps(sim, PRESS_DOOR)[0]), host="h1")
    sim.spawn("registrar", registrar, Map(topic=main), host="h0", env={"spawner": spawner})
    desk = sim.cap("registrar", "desk")
    for name, host in READERS.items():
        sim.spawn(name, reader, Map(registrar=desk, label=name), host=host)


def build(sim):
    """Spawn the topic, the press, three readers and their doors; publish; revoke one."""
    spawn_world(sim)
    desk = sim.cap("press", "desk")
    for _ in ITEMS:
        sim.send(desk, "next", client="editor")
    revoke(sim, REVOKED)

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
