"""A chat room with single-use invitations and members that can be revoked.

Three ideas, each enforced by the runtime rather than by trusting the guests:

**Invitations are linear capabilities.** The room seals the context
``avm.Linear(("invite", number, name))`` into a capability; a capability whose context
is linear is itself linear. The runtime checks, at every step of every machine, that a
linear value received is passed on exactly once: a guest may forward its invitation or
use it, but a step that sends it twice (or keeps it *and* sends it) fails its whole batch
with rule ``"substructural"``. When a guest joins, the room receives the linear context
and must conserve it too: it sends it to the ``null`` commons capability, the one way to
destroy a linear value. The room also remembers which invitations were used, because a
person outside the network (a client holding the capability's bytes) is not checked by
any step and could replay them.

**Members hold revocable capabilities.** On joining, a guest gets a member capability
issued through :class:`avm.core.patterns.Grants`: its sealed context carries a grant
number, and the room keeps the live numbers in its state. Kicking a member deletes the
number, so every later message through that capability fails its batch
(``Revoked``), without having to find and recall the capability itself.

**A moderator acts through an admin capability.** The moderator is a member like any
other, but it was also given the room's admin capability; when it hears a banned word it
sends ``("kick", who)`` through it.

The run: the admin invites Alice, Bob, Carol, the moderator, and Mallory. Bob says
something banned and is kicked; his next lines fail. Mallory tries to join twice with one
invitation: her step fails with rule ``"substructural"``, so she never joins. Guests sit
on two hosts, so ``--faults all`` exercises cross-host delivery too.
"""

import avm
from avm import Linear, Map
from avm.core.patterns import Grants

BANNED = ("spam",)

# -- the room ------------------------------------------------------------------------------

room = avm.Behavior("chat.room")


@room.init
def open_room(_state, _args):
    return [], Map(
        me=None,
        null=None,
        grants=Grants(),
        members=Map(),  # name -> inbox capability
        invited=Map(),  # invitation number -> name, not used yet
        used=Map(),  # invitation number -> name, consumed by a join
        kicked=Map(),  # name -> length of the log when they were kicked
        next_invite=0,
        log=(),  # (name, text), in order
    )


@room.signal("self")
def room_self(state, me):
    return [], state.set("me", me)


@room.signal("env")
def room_env(state, env):
    return [], state.set("null", env["null"])


def _admin(ctx):
    if ctx != "admin":
        raise PermissionError("only the admin capability may do this")


def _member(state, ctx):
    # Raises Revoked if this member's grant was withdrawn: the whole batch fails.
    inner = state["grants"].open(ctx)
    return inner[1]


def _broadcast(state, content):
    return [(inbox, content) for inbox in state["members"].values()]


@room.on("invite")
def invite(state, name, reply, *, ctx):
    """Admin: mint a single-use invitation for ``name`` and send it to ``reply``."""
    _admin(ctx)
    n = state["next_invite"]
    invitation = state["me"](Linear(("invite", n, name)))  # a linear capability
    return [(reply, ("invitation", name, invitation))], state.update(
        next_invite=n + 1, invited=state["invited"].set(n, name))


@room.on("join")
def join(state, inbox, *, ctx):
    """Through an invitation: consume it and become a member."""
    if type(ctx) is not Linear or type(ctx.value) is not tuple or ctx.value[0] != "invite":
        raise PermissionError("joining needs an invitation")
    _, n, name = ctx.value
    if n not in state["invited"]:
        # Only reachable by replaying the capability's bytes from outside the network.
        raise PermissionError(f"invitation {n} was already used")
    grants, member_cap, _ = state["grants"].issue(state["me"], ("member", name), label=name)
    state = state.update(
        grants=grants,
        invited=state["invited"].delete(n),
        used=state["used"].set(n, name),
        members=state["members"].set(name, inbox),
    )
    # The linear context must leave exactly once: the null capability destroys it.
    out = [(state["null"], ctx), (inbox, ("welcome", name, member_cap))]
    return out + _broadcast(state, ("joined", name)), state


@room.on("say")
def say(state, text, *, ctx):
    name = _member(state, ctx)
    state = state.set("log", (*state["log"], (name, text)))
    return _broadcast(state, ("said", name, text)), state


def _remove(state, name):
    inbox = state["members"].get(name)
    state = state.update(
        grants=state["grants"].revoke_label(name),
        members=state["members"].discard(name),
        kicked=state["kicked"].set(name, len(state["log"])),
    )
    out = [] if inbox is None else [(inbox, ("kicked", name))]
    return out + _broadcast(state, ("left", name)), state


@room.on("kick")
def kick(state, name, *, ctx):
    """Admin: revoke ``name``'s member capability."""
    _admin(ctx)
    return _remove(state, name)


@room.on("leave")
def leave(state, *, ctx):
    return _remove(state, _member(state, ctx))


# -- guests --------------------------------------------------------------------------------

guest = avm.Behavior("chat.guest")


@guest.init
def arrive(_state, args):
    """Init argument: ``Map(lines=(...))``, what to say, one line after each echo."""
    return [], Map(me=None, member=None, lines=args["lines"], heard=(), name=None)


@guest.signal("self")
def guest_self(state, me):
    return [], state.set("me", me)


@guest.on("invitation")
def accept(state, name, invitation):
    # The invitation is linear: sending it once is using it up, and it may not stay in
    # the state as well.
    return [(invitation, ("join", state["me"]("inbox")))], state.set("name", name)


def _next_line(state):
    if not state["lines"] or state["member"] is None:
        return [], state
    line, rest = state["lines"][0], state["lines"][1:]
    return [(state["member"], ("say", line))], state.set("lines", rest)


@guest.on("welcome")
def welcome(state, name, member):
    return _next_line(state.set("member", member))


@guest.on("said")
def heard(state, who, text):
    state = state.set("heard", (*state["heard"], (who, text)))
    # Speak one line at a time, after hearing our own echo, so lines are separate batches.
    return _next_line(state) if who == state["name"] else ([], state)


@guest.on("joined")
def joined(state, who):
    return [], state


@guest.on("left")
def left(state, who):
    return [], state


@guest.on("kicked")
def kicked(state, who):
    return [], state.set("member", None)


# -- the moderator: a guest that also holds the admin capability ---------------------------

moderator = avm.Behavior("chat.moderator")


@moderator.init
def moderator_init(_state, admin):
    return [], Map(admin=admin, me=None, member=None, kicks=())


@moderator.signal("self")
def moderator_self(state, me):
    return [], state.set("me", me)


@moderator.on("invitation")
def moderator_accept(state, name, invitation):
    return [(invitation, ("join", state["me"]("inbox")))], state


@moderator.on("welcome")
def moderator_welcome(state, name, member):
    return [], state.set("member", member)


@moderator.on("said")
def watch(state, who, text):
    if any(word in text for word in BANNED) and who not in state["kicks"]:
        return [(state["admin"], ("kick", who))], state.set("kicks", (*state["kicks"], who))
    return [], state


@moderator.otherwise
def moderator_ignore(state, content):
    return [], state


# -- a cheat: tries to use one invitation twice --------------------------------------------

cheat = avm.Behavior("chat.cheat")


@cheat.signal("self")
def cheat_self(state, me):
    return [], Map(me=me)


@cheat.on("invitation")
def join_twice(state, name, invitation):
    inbox = state["me"]("inbox")
    # Two outputs through one linear capability: a copy. This step fails with rule
    # "substructural", its batch is not applied, and the invitation is gone with it.
    return [(invitation, ("join", inbox)), (invitation, ("join", inbox))], state


# -- the network ---------------------------------------------------------------------------

#: Hosts for ``avm sim``, which creates them before calling build; build adds any that
#: are missing, so it also runs in a one-host simulator or nested in a machine.
HOSTS = ("h0", "h1")
GUESTS = {
    "alice": ("h0", ("hi all", "how are you?")),
    "bob": ("h0", ("hello", "buy spam now", "more spam", "anyone?", "hello?")),
    "carol": ("h1", ("hey", "fine, thanks")),
}


def live_members(room_state):
    """Names that hold a live grant."""
    return set(room_state["grants"].live.values())


def build(sim):
    """Spawn the room, guests, a moderator and a cheat; invite them all."""
    for h in HOSTS:  # unless the caller (the CLI, a test) already made them
        sim.add_host(h, exist_ok=True)
    sim.spawn("room", room, None, host="h0")
    admin = sim.cap("room", "admin")
    for name, (host, lines) in GUESTS.items():
        sim.spawn(name, guest, Map(lines=lines), host=host)
    sim.spawn("moderator", moderator, admin, host="h0")
    sim.spawn("mallory", cheat, None, host="h1")
    invites = [(admin, ("invite", "moderator", sim.cap("moderator", "inbox")))]
    invites += [(admin, ("invite", n, sim.cap(n, "inbox"))) for n in (*GUESTS, "mallory")]
    sim.submit(invites)

    def each_invitation_used_at_most_once(s):
        st = s.state("room")
        if st is None:
            return True
        used, invited = set(st["used"]), set(st["invited"])
        return not used & invited and len(used) + len(invited) == st["next_invite"]

    def members_are_exactly_the_live_grants(s):
        st = s.state("room")
        return st is None or set(st["members"]) == live_members(st)

    def kicked_members_say_nothing_more(s):
        st = s.state("room")
        if st is None:
            return True
        return all(who != name for name, at in st["kicked"].items() for who, _ in st["log"][at:])

    sim.invariant(each_invitation_used_at_most_once)
    sim.invariant(members_are_exactly_the_live_grants)
    sim.invariant(kicked_members_say_nothing_more)
