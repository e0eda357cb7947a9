"""What the engine's Python edge needs to know about a batch before the kernel runs it, in one pass.

Between kernel calls the engine finds the next row it must handle itself (an admin command, or the
first row at or after a pending change's effective time), grows the order pool and the account
tables when the batch could need more, and records the client order ids the batch's places use
(perp.client_ids). Done with numpy that was about a dozen whole-column operations per batch of
4,096 rows (~30-120 us, 10-15% of the batch's kernel time at 5M commands/s); these loops read each
row once.

Nothing here changes state: they read command rows (perp.layout) and write only into `keys_out`.
"""

from __future__ import annotations

from numba import njit

from perp.layout import C_ACCOUNT, C_CLID, C_KIND, C_TS, CK_ADMIN, CK_PLACE, MAX_ACCOUNT_ID, MAX_CLIENT_ORDER_ID

CLID_SHIFT = 40  # a used client order id's key: account << 40 | clid (perp.client_ids)


@njit(cache=True, _nrt=False)
def first_special(cmds, start, has_due, due_ts):
    """Index of the first row from `start` that is an admin command or, with `has_due`, has
    `ts_ns >= due_ts` (`cmds.shape[0]` if none)."""
    for i in range(start, cmds.shape[0]):
        if cmds[i, C_KIND] == CK_ADMIN or (has_due and cmds[i, C_TS] >= due_ts):
            return i
    return cmds.shape[0]


@njit(cache=True, _nrt=False)
def batch_facts(cmds, keys_out):
    """(place rows, highest account id at most MAX_ACCOUNT_ID or -1, keys written).

    `keys_out[:keys written]` gets `account << 40 | clid` of every place row with a client order id
    the kernel can accept the shape of (0 < clid <= MAX_CLIENT_ORDER_ID, 0 <= account <=
    MAX_ACCOUNT_ID), in row order; `keys_out` must have at least `cmds.shape[0]` rows."""
    places = 0
    max_account = -1
    n_keys = 0
    for i in range(cmds.shape[0]):
        acct = cmds[i, C_ACCOUNT]
        if acct <= MAX_ACCOUNT_ID and acct > max_account:
            max_account = acct
        if cmds[i, C_KIND] == CK_PLACE:
            places += 1
            clid = cmds[i, C_CLID]
            if 0 < clid <= MAX_CLIENT_ORDER_ID and 0 <= acct <= MAX_ACCOUNT_ID:
                keys_out[n_keys] = (acct << CLID_SHIFT) | clid
                n_keys += 1
    return places, max_account, n_keys
