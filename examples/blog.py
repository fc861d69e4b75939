"""A blog whose reads never write: the example from the design notes.

    "developers could mitigate the performance hit by arranging such that some AVMs are
    read-only (or nearly so) while writes are indirectly offloaded to other AVMs, e.g. by
    having one AVM for the blog content, and another to count the reads per page."

Two machines split the work:

``blog.posts``
    Holds the posts. ``("read", slug, reply)`` answers ``("post", slug, text)`` and
    returns the state *unchanged*, so a batch of reads is a read-only batch: a runtime may
    run it in parallel with other readers or on a replica (DESIGN section 4). Counting the
    read is a write, so instead of doing it here the step sends ``("hit", slug)`` to...

``blog.hits``
    ...a second machine that only counts reads per page. Its writes never conflict with
    the posts machine's reads.

The public does not get the posts capability, which can also ``publish``. It gets a
**membrane** (``avm.core.patterns.membrane``): a forwarding machine that passes only
``read`` and ``list`` messages and refuses the rest, failing the batch. That is
attenuation: the author holds full authority, readers hold a weaker capability made from
it, and the author can revoke the readers' access at once through the membrane's admin
capability without touching the posts machine.

The run: the blog starts with two posts; the author publishes a third; two readers on
two hosts read pages through the membrane; one reader tries to publish through the
membrane and is refused.
"""

import avm
from avm import Map
from avm.core.patterns import forwarder_caps, membrane, membrane_args

# -- the posts machine -----------------------------------------------------------------------

posts = avm.Behavior("blog.posts")


@posts.init
def open_blog(_state, args):
    """Init argument: ``Map(posts=Map(slug -> text), hits=capability of the counter)``."""
    return [], Map(posts=args["posts"], hits=args["hits"])


def _author(ctx):
    # The only capability this machine hands out is the author's; attenuated versions of
    # it are made outside, by membranes, without this machine having to know.
    if ctx != "author":
        raise PermissionError(f"unknown capability {ctx!r}")


@posts.on("publish")
def publish(state, slug, text, *, ctx):
    _author(ctx)
    return [], state.set("posts", state["posts"].set(slug, text))


@posts.on("read")
def read(state, slug, reply, *, ctx):
    _author(ctx)
    text = state["posts"].get(slug)
    if text is None:
        return [(reply, ("missing", slug))], state
    # The same state object goes back: this step wrote nothing. The write it would have
    # done (count the read) is offloaded to the hits machine.
    return [(reply, ("post", slug, text)), (state["hits"], ("hit", slug))], state


@posts.on("list")
def list_posts(state, reply, *, ctx):
    _author(ctx)
    return [(reply, ("posts", tuple(sorted(state["posts"]))))], state


# -- the hit counter -----------------------------------------------------------------------

hits = avm.Behavior("blog.hits")


@hits.init
def no_hits(_state, _args):
    return [], Map()


@hits.on("hit")
def hit(state, slug):
    return [], state.set(slug, state.get(slug, 0) + 1)


@hits.on("report")
def report(state, reply):
    return [(reply, ("hits", state))], state


# -- the network ---------------------------------------------------------------------------

#: Hosts for ``avm sim``, which creates them before calling build; build adds any that
#: are missing, so it also runs in a one-host simulator or nested in a machine.
HOSTS = ("h0", "h1")
INITIAL = {"hello": "Hello, world.", "about": "A blog run by two machines."}
AUTHORED = {"news": "Reads are now counted elsewhere."}
READS = {  # reader -> pages, read one batch per page
    "reader.1": ("hello", "about", "hello"),
    "reader.2": ("hello", "news", "missing-page"),
}


def build(sim):
    """Spawn posts (h0), hits (h1) and a public membrane; publish, read, and misbehave."""
    for h in HOSTS:  # unless the caller (the CLI, a test) already made them
        sim.add_host(h, exist_ok=True)
    sim.spawn("hits", hits, None, host="h1")
    sim.spawn("posts", posts, Map(posts=Map(INITIAL), hits=sim.cap("hits", "count")), host="h0")
    # Readers get a membrane in front of the posts machine that lets only reads through.
    # The posts machine knows one capability, the author's; the membrane holds it and lets
    # only reads through, so access policy lives outside the posts machine.
    author = sim.cap("posts", "author")
    sim.spawn("public", membrane(), membrane_args(author, ("read", "list")), host="h0")
    public, _admin = forwarder_caps(sim, "public")

    sim.send(author, ("publish", "news", AUTHORED["news"]), client="author")
    for i, (reader, pages) in enumerate(READS.items()):
        inbox = sim.probe(reader, host=("h0", "h1")[i % 2])
        for page in pages:
            sim.send(public, ("read", page, inbox), client=reader)
        sim.send(public, ("list", inbox), client=reader)
    # Refused by the membrane: the batch fails there and never reaches the posts machine.
    sim.send(public, ("publish", "hello", "defaced"), client="vandal")

    def only_the_author_writes(s):
        st = s.state("posts")
        return st is None or (
            set(st["posts"]) <= set(INITIAL) | set(AUTHORED)
            and all(st["posts"][k] == v for k, v in INITIAL.items()))

    def hits_only_for_real_pages(s):
        counted = s.state("hits") or Map()
        return set(counted) <= set(INITIAL) | set(AUTHORED)

    sim.invariant(only_the_author_writes)
    sim.invariant(hits_only_for_real_pages)
