"""Shamir sharing: reconstruction, t-1 shares reveal nothing, vectorised weights = reference."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from fractions import Fraction

import pytest

from fedge.errors import SecAggIntegrityError
from fedge.secagg import shamir


def test_prime_is_above_2_256():
    assert shamir.PRIME > 2**256
    assert pow(3, shamir.PRIME - 1, shamir.PRIME) == 1  # Fermat witness (it is prime)


def test_any_t_shares_reconstruct_a_256_bit_secret():
    rng = random.Random(1)
    secret = rng.getrandbits(256)
    xs = rng.sample(range(1, 5000), 9)
    ys = shamir.split(secret, xs, 5, rng.randbytes)
    for subset in itertools.islice(itertools.combinations(range(9), 5), 20):
        assert shamir.reconstruct([xs[i] for i in subset], [ys[i] for i in subset]) == secret
    assert shamir.reconstruct(xs[:4], ys[:4]) != secret  # t-1 shares: some other value


def test_t_minus_1_shares_are_exactly_uniform_whatever_the_secret():
    # Over GF(13) with t = 3, enumerate every polynomial: the pair of shares held by any
    # two holders takes every value exactly once, for every secret -- perfect secrecy.
    p, xs = 13, (2, 7)
    for secret in (0, 5, 12):
        counts = Counter()
        for a1, a2 in itertools.product(range(p), repeat=2):
            counts[tuple((secret + a1 * x + a2 * x * x) % p for x in xs)] += 1
        assert len(counts) == p * p and set(counts.values()) == {1}
    # and split() itself, with the small prime, draws from that distribution
    rng = random.Random(0)
    shares = [tuple(shamir.split(5, (*xs, 9), 3, rng.randbytes, prime=p)[:2]) for _ in range(2000)]
    assert len(set(shares)) > 150  # spread over the 169 possible pairs


def test_lagrange_weights_match_exact_reference():
    rng = random.Random(3)
    for size in (1, 2, 7, 40):
        xs = tuple(sorted(rng.sample(range(1, 2000), size)))
        ref = []
        for i, xi in enumerate(xs):
            w = Fraction(1)
            for j, xj in enumerate(xs):
                if i != j:
                    w *= Fraction(xj, xj - xi)
            ref.append(w.numerator * pow(w.denominator, -1, shamir.PRIME) % shamir.PRIME)
        assert list(shamir.lagrange_weights(xs)) == ref
    big = (2**40, 2**40 + 5, 3)  # coordinates too large for the int64 path
    assert shamir.reconstruct(big, shamir.split(77, big, 3)) == 77


def test_reconstruct_many_shares_weights():
    rng = random.Random(4)
    xs = [3, 9, 11, 20]
    secrets = [rng.getrandbits(256) for _ in range(5)]
    ys = [shamir.split(s, xs, 4, rng.randbytes) for s in secrets]
    assert shamir.reconstruct_many(xs, ys) == secrets


def test_bad_inputs_refused():
    with pytest.raises(SecAggIntegrityError):
        shamir.split(shamir.PRIME, [1, 2], 2)
    with pytest.raises(SecAggIntegrityError):
        shamir.split(1, [1, 1], 2)
    with pytest.raises(SecAggIntegrityError):
        shamir.split(1, [1, 2], 3)
    with pytest.raises(SecAggIntegrityError):
        shamir.reconstruct([1, 1], [5, 6])
    with pytest.raises(SecAggIntegrityError):
        shamir.share_from_bytes(b"\x00" * 32)
    with pytest.raises(SecAggIntegrityError):
        shamir.share_from_bytes(b"\xff" * 33)
    assert shamir.share_from_bytes(shamir.share_to_bytes(12345)) == 12345
