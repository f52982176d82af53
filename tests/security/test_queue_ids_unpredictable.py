"""Finding 9 (issue 11), queue: queue ids and segment names came from a seeded Mersenne Twister.

The 32 random bits of each id (shown to every client in ``250 ... queued as
<ID>``, and naming files in the spool) were ``random.Random.getrandbits(32)``:
one raw MT19937 output each. Any 624 consecutive ids give away the generator's
whole state, and with it every later id and segment name. This test is that
attack: it untempers 624 ids, clones the generator and predicts the next ids.
Ids now take their random bits from ``os.urandom`` (drawn in 4 KiB blocks), and
the prediction fails.
"""

from __future__ import annotations

import base64
import random
import re
import threading

from buzon.spool import new_queue_id

_N = 624


def _random_bits(queue_id: str) -> int:
    raw = base64.b32decode(queue_id)
    return int.from_bytes(raw[6:10], "big")


def _untemper(y: int) -> int:
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    result = y
    for _ in range(5):  # y ^= (y << 7) & 0x9D2C5680, undone 7 bits at a time
        result = y ^ ((result << 7) & 0x9D2C5680)
    y = result & 0xFFFFFFFF
    result = y
    for _ in range(3):  # y ^= y >> 11, undone 11 bits at a time
        result = y ^ (result >> 11)
    return result & 0xFFFFFFFF


def _clone(outputs: list[int]) -> random.Random:
    state = tuple(_untemper(o) for o in outputs) + (_N,)
    clone = random.Random()
    clone.setstate((3, state, None))
    return clone


def test_the_attack_works_on_a_mersenne_twister() -> None:
    """The attack itself is sound: it clones a random.Random from 624 outputs."""
    victim = random.Random(1234)
    clone = _clone([victim.getrandbits(32) for _ in range(_N)])
    assert [clone.getrandbits(32) for _ in range(10)] == [victim.getrandbits(32) for _ in range(10)]


def test_624_queue_ids_do_not_predict_the_next() -> None:
    ids = [new_queue_id() for _ in range(_N + 10)]
    assert all(re.fullmatch(r"[A-Z2-7]{16}", i) for i in ids)
    clone = _clone([_random_bits(i) for i in ids[:_N]])
    predicted = [clone.getrandbits(32) for _ in range(10)]
    actual = [_random_bits(i) for i in ids[_N:]]
    assert predicted != actual, "the next queue ids were predicted from the last 624"


def test_ids_drawn_on_many_threads_are_distinct() -> None:
    seen: list[list[str]] = []

    def draw() -> None:
        seen.append([new_queue_id(0) for _ in range(3000)])  # same clock: random bits only

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [i for ids in seen for i in ids]
    assert len(flat) == 12000 and len(set(flat)) == 12000
