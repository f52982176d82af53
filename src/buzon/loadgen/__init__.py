"""``buzon-load``: an asyncio SMTP load generator (no dependency beyond the stdlib).

Theory of operation
-------------------
*send mode*: ``--sessions`` concurrent SMTP sessions share either ``--messages``
messages (a fixed count) or ``--duration`` seconds (every session loops until
the deadline, finishing the message it is sending). A message has ``--size``
bytes, or a size drawn by weight from ``--mix SIZE:WEIGHT,...`` (the sequence of
sizes is fixed by ``--seed``), and goes to ``--rcpts`` recipients. A message's
latency runs from its ``MAIL`` to its final ``250``. With ``--pipelining`` the
envelope (MAIL, RCPT…, DATA) goes in one write, as RFC 2920 allows.

Every reply is checked. A ``4xx`` is a deferral, not a server error: the
message is counted as *refused* under its reply code, the transaction is
abandoned (``RSET``; after a ``421``, or a ``354`` already given to a pipelined
``DATA``, the connection is closed and a new one opened), and after
``--pause`` seconds the session goes on with the next message. Anything else
unexpected counts as an error and ends that session (with ``--messages``, the
messages nobody sent count as errors too). Accepted messages are also counted
per second since the start: the *timeline*.

*hold mode* (``--hold N``): open N sessions, keep them idle for ``--hold-for``
seconds, then send ``NOOP`` on each and count the ``250`` answers; see
:mod:`buzon.loadgen.hold`.

With ``--maildir ROOT`` the send mode then waits until the number of files
under ``ROOT/<domain>/<local>/new`` (and ``cur``) has grown by every
(message × recipient) accepted, so the figure includes delivery, not just
queueing; see :mod:`buzon.loadgen.maildir`.

Everything is bounded: a global ``--timeout`` ends the run whatever happens.
Only loopback or addresses you own are fair targets (the generator does not
check; the operator does).

Modules: ``result`` (what a run measured), ``send`` (the send mode, bodies and
the size mix), ``hold`` (the hold mode and its split over processes),
``maildir`` (counting delivered files), ``cli`` (the command line).
"""

from buzon.loadgen.cli import main
from buzon.loadgen.hold import run_hold
from buzon.loadgen.maildir import DeliveryCounter, count_delivered, wait_delivered
from buzon.loadgen.result import LoadResult
from buzon.loadgen.send import Bodies, SizePicker, parse_mix, run_send

__all__ = [
    "Bodies", "DeliveryCounter", "LoadResult", "SizePicker", "count_delivered", "main",
    "parse_mix", "run_hold", "run_send", "wait_delivered",
]
