"""A host's identity key on disk: made once from the OS random source, kept 0600.

    "each side checks that the peer's key hashes to the address it meant to reach"
    (issue 8, item 2)

A host's address is the hash of its identity resource, so it stays the same only as
long as the key does: ``avm host run --listen`` keeps the key's seed in a file beside
the store (``STORE.identity``, or ``--identity FILE``) and reads it back on every start.
The file holds exactly :data:`SEED_BYTES` bytes drawn from :func:`os.urandom`, created
with ``O_EXCL`` and mode 0600 (never overwritten: a lost key is a new address, so a
file that is there is used or refused, never replaced). A file that others may read or
write is refused, as ssh refuses a private key anyone can read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..core.caps import IdentityKey
from ..core.errors import UsageError
from ..wire.transport import HostIdentity

__all__ = ["SEED_BYTES", "IDENTITY_SUFFIX", "identity_path", "load_or_create", "host_name"]

#: Bytes of the seed kept in the identity file (an Ed25519 seed).
SEED_BYTES = 32
#: The identity file beside a store: ``STORE`` + this.
IDENTITY_SUFFIX = ".identity"


def identity_path(store: str | os.PathLike) -> Path:
    """Where the identity of the host on ``store`` lives by default."""
    return Path(str(store) + IDENTITY_SUFFIX)


def load_or_create(path: str | os.PathLike) -> tuple[HostIdentity, bool]:
    """The host identity kept at ``path``, and whether it was created just now.

    Raises :class:`~avm.core.errors.UsageError` (and writes nothing) for a file of the
    wrong size or one that group or others may access.
    """
    p = Path(path)
    created = False
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(SEED_BYTES))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            p.unlink(missing_ok=True)
            raise
        created = True
    st = p.stat()
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{p}: the identity file is not a regular file")
    if st.st_mode & 0o077:
        raise UsageError(f"{p}: the identity file is accessible to others (mode "
                         f"{stat.S_IMODE(st.st_mode):o}); it must be 0600 (chmod 600 {p})")
    seed = p.read_bytes()
    if len(seed) != SEED_BYTES:
        raise UsageError(f"{p}: an identity file holds exactly {SEED_BYTES} bytes, "
                         f"not {len(seed)}")
    return HostIdentity(IdentityKey.from_seed(seed)), created


def host_name(identity: HostIdentity) -> str:
    """The name a new store's own host gets inside its network: unique per identity.

    Services' channels carry their host's name (``("~", "feedback", NAME)``), so two
    hosts that peer must not both be ``h0``."""
    from ..core.caps import address_text

    return "h." + address_text(identity.address)[:16]
