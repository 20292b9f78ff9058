"""The epoch loop compiled: every update of an epoch in one call of native code (numba).

At the sizes this package trains on a CPU (the default 64-100-10 network, batches of 1 to a few
hundred examples) an update is ~16 tensor operations of a few thousand multiply-adds each, and an
eager PyTorch operation costs 3-7 us of fixed overhead: the overhead is the update. This file is
the same epoch as :meth:`mlp_torch.train.module.MLPModule.training_step`'s loop, written as
explicit loops over the examples, layers and parameters and compiled by numba (``cache=True``:
later processes load the machine code):

=====================================================  ==========================================
the notes (:mod:`mlp_torch.model.backprop`)            here
=====================================================  ==========================================
``z_l = W_l a_{l-1} + b_l``, ``a_l = f(z_l)``            :func:`_forward`, :func:`_sigmoid`
``delta_L = grad_a C * f'(z_L)``, times the scale ``s``  :func:`_output_error`
``dJ/dW_l = delta_l^T a_{l-1}``, ``dJ/db_l = sum delta``  :func:`_gradient`
``delta_l = (delta_{l+1} W_{l+1}) * a_l (1 - a_l)``      :func:`_back`
``l1 sign(w) + 2 l2 w``; the optimizer's rule           :func:`_step`, one pass over the parameters
each update's ``sum_i C_i`` at its weights (train/J)    :func:`_update_costs`, once per epoch
=====================================================  ==========================================

Each update's examples are read from the stored split in the epoch's shuffle order (``order``), so
no shuffled copy is made before the call; ``z_L`` of every example is kept, and the costs of the
whole epoch are computed at its end in one pass (SIMD: ``exp`` and ``log1p`` written out here as
the sigmoid's ``exp`` is, a unit in the last place).

It reads and writes the module's own tensors (the flat parameters, their gradient, the optimizer's
state) through zero-copy numpy views, member after member (members are independent).

Two ways to the matrix products. An update on fewer than :data:`BLAS_ROWS` examples (stochastic
descent, small mini-batches) runs the loops above; a larger one calls BLAS for its three products
per layer (``np.dot`` in numba: scipy's OpenBLAS, on the threads the module's rule chooses, one at
these sizes), examples :data:`BLAS_BLOCK` at a time, the rest (biases, sigmoid, output error,
slopes, penalties, the rule) in the loops. BLAS's kernels may give two equal units different last
bits (OpenBLAS's edge kernels sum in another order than its main ones): a member with two equal
hidden units (the same weights in, bias and weights out, :func:`_units_distinct`, checked at each
epoch's start: ``init="zeros"``) never uses them.

:mod:`mlp_torch.model.backprop` stays THE readable implementation: ``tests/test_native.py`` checks
this loop against it and the optimizers' own ``step()`` for every combination covered, on both
ways. The sums
over a layer's inputs may be reassociated (numba's ``fastmath`` flags ``reassoc``, ``nsz``,
``arcp``, so that they run as SIMD; never ``nnan``/``ninf``: a NaN or an inf stays one and a
diverging run is still caught); the loops whose SIMD lanes are a layer's units (the gradients and
the deltas, :func:`_gradient`, :func:`_back`) are not, so that every unit's arithmetic is the same
whatever lane it falls in, and units started equal stay equal bit for bit (the notes' symmetry:
``init="zeros"``). The sum over a batch's examples is taken in another order
than PyTorch's: a float64 weight differs from the readable equations' by a few units in the last
place per update, which the tests bound at 1e-12 relative after several epochs. The penalties and
the optimizer's rule are computed element by element with the very operations of
:mod:`mlp_torch.model.optim`, unreordered.

What it covers: any depth, both costs, L1 and L2, both reductions, batch 1, mini-batches and the
full batch (in chunks or not: the sum over the examples is the same), ``GradientDescent``,
``Momentum`` and ``HeavyBall`` (and Nesterov's variant), float32 and float64, K >= 1 members. The
module uses it on the CPU for updates whose largest matrix product is a one-thread one (a member's
below :data:`NATIVE_PRODUCT`, the threads' rule's line) when nothing needs the torch loop:
autograd as the gradient source, the cross-check, another optimizer or a step hook, several
processes (DDP's collective per update), CUDA. ``--model.native false`` turns it off.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "FIGURES", "NATIVE_PRODUCT", "RULES", "available", "epoch", "evaluate", "figures", "warm",
    "why_unavailable",
]  # fmt: skip

RULES = {"GradientDescent": 0, "Momentum": 1, "HeavyBall": 2, "Nesterov": 3}
COSTS = {"quadratic": 0, "cross_entropy": 1}
FASTMATH = {"reassoc", "nsz", "arcp"}  # sums may be reordered; NaN and inf stay IEEE
BLAS_ROWS = 8  # updates on at least this many examples: the products by BLAS (see _epoch)
BLAS_BLOCK = 1024  # ... in blocks of at most this many (the activations of a block stay small)
BLOCK = 128  # examples of a batch processed together (the activations of a block stay in cache)
# A member's largest matrix product per update below which this loop trains: the same line as the
# threads' (mlp_torch.train.threads.SMALL_PRODUCT, one thread below it): above it the torch loop's
# products run on every core.
NATIVE_PRODUCT = 1 << 26

try:
    import numba
    import numba.extending
except ImportError as err:  # the torch loop trains then
    numba, _import_error = None, err
else:
    _import_error = None


def available() -> bool:
    """Whether the native loop can run here (numba imports)."""
    return numba is not None


def why_unavailable() -> str:
    return "" if _import_error is None else f"numba is not installed ({_import_error})"


def _compiled(fastmath):
    def decorate(fn):
        if numba is None:
            return fn
        # error_model numpy: x / 0 is inf, unchecked (a check per division keeps a loop from SIMD)
        return numba.njit(cache=True, fastmath=fastmath, nogil=True, error_model="numpy")(fn)

    return decorate


_sums_may_reorder = _compiled(FASTMATH)
_exact = _compiled(False)


# Constants of the exponential in the sigmoids: exp(x) = 2^k exp(t), k = round(x / ln 2), |t| <= ln(2)/2
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 = LN2_HI + LN2_LO
ROUND = 6755399441055744.0  # 1.5 * 2^52: x + ROUND rounds x to an integer held in the low bits ...
ROUND_BITS = 4843621399236968448  # ... of this bit pattern (ROUND's)
# the same in float32 (Cephes' expf): ln 2 = LN2_HI32 + LN2_LO32, ROUND32 = 1.5 * 2^23
LOG2E32, LN2_HI32, LN2_LO32 = np.float32(LOG2E), np.float32(0.693359375), np.float32(-2.12194440e-4)
ROUND32, ROUND_BITS32 = np.float32(12582912.0), np.int32(1262485504)
LOW32, HIGH32, ONE32 = np.float32(-87.0), np.float32(88.0), np.float32(1.0)
TAYLOR32 = [np.float32(1 / math.factorial(i)) for i in range(8)]  # 1/i!, i <= 7
C2, C3, C4, C5, C6, C7 = TAYLOR32[2:]


@_sums_may_reorder
def _forward(W, b, A, Z, zero):
    """``Z = A W^T + b`` for a block of examples, ``A`` ``(B, n_in)``, ``Z`` ``(B, n_out)``."""
    n_out, n_in = W.shape
    for r in range(A.shape[0]):
        for j in range(n_out):
            z = zero
            for c in range(n_in):
                z += W[j, c] * A[r, c]
            Z[r, j] = z + b[j]


def _sigmoid(Z, A, power):
    """``A = f(Z) = 1 / (1 + exp(-Z))`` (in native code: :func:`_sigmoid64` or :func:`_sigmoid32`
    by the dtype; ``power`` a scratch buffer of the same dtype, of any length)."""
    raise NotImplementedError("only in native code")


@_exact
def _sigmoid64(Z, A, power):
    """``A = f(Z) = 1 / (1 + exp(-Z))`` in float64, the exponential computed here so that it runs
    as SIMD (a call of the C library's ``exp`` per value cost twice the rest of a layer): Cody and
    Waite's reduction ``exp(x) = 2^k exp(t)`` and ``exp(t)`` by its Taylor series to ``t^13``
    (1 unit in the last place, as the library's), ``2^k`` built from its bits in ``power``. ``x`` is
    kept within [-708, 709], where ``f`` is 1 or below 1e-307 whatever ``x`` beyond; a NaN stays a
    NaN (through ``t``, whatever ``2^k``'s bits). No reordering here: the rounding trick needs the
    additions as written."""
    z, a = Z.reshape(Z.size), A.reshape(A.size)  # the block's values as one row, len(power) at a time
    bits = power.view(np.int64)
    for lo in range(0, len(z), len(power)):
        n = min(len(power), len(z) - lo)
        zc, ac = z[lo : lo + n], a[lo : lo + n]
        for j in range(n):
            x = -zc[j]
            x = -708.0 if x < -708.0 else x  # (comparisons: a NaN stays one)
            x = 709.0 if x > 709.0 else x
            m = x * LOG2E + ROUND
            k = m - ROUND  # round(x / ln 2)
            t = (x - k * LN2_HI) - k * LN2_LO
            ac[j] = 1.0 + t * (1.0 + t * (1 / 2 + t * (1 / 6 + t * (1 / 24 + t * (1 / 120 + t * (
                1 / 720 + t * (1 / 5040 + t * (1 / 40320 + t * (1 / 362880 + t * (1 / 3628800 + t * (
                    1 / 39916800 + t * (1 / 479001600 + t * (1 / 6227020800)))))))))))))  # fmt: skip
            power[j] = m
        for j in range(n):
            bits[j] = (bits[j] - ROUND_BITS + 1023) << 52  # 2^k
        for j in range(n):
            ac[j] = 1.0 / (1.0 + ac[j] * power[j])  # NaN where z is: x and t were


@_exact
def _sigmoid32(Z, A, power):
    """:func:`_sigmoid64` in float32 arithmetic, twice the SIMD lanes: ``exp(t)`` to ``t^7`` (its
    remainder below 5e-9, a tenth of float32's unit in the last place), ``x`` within [-87, 88]."""
    z, a = Z.reshape(Z.size), A.reshape(A.size)  # the block's values as one row, len(power) at a time
    bits = power.view(np.int32)
    for lo in range(0, len(z), len(power)):
        n = min(len(power), len(z) - lo)
        zc, ac = z[lo : lo + n], a[lo : lo + n]
        for j in range(n):
            x = -zc[j]
            x = LOW32 if x < LOW32 else x
            x = HIGH32 if x > HIGH32 else x
            m = x * LOG2E32 + ROUND32
            k = m - ROUND32  # round(x / ln 2)
            t = (x - k * LN2_HI32) - k * LN2_LO32
            ac[j] = ONE32 + t * (ONE32 + t * (C2 + t * (C3 + t * (C4 + t * (C5 + t * (C6 + t * C7))))))
            power[j] = m
        for j in range(n):
            bits[j] = (bits[j] - ROUND_BITS32 + np.int32(127)) << np.int32(23)  # 2^k
        for j in range(n):
            ac[j] = ONE32 / (ONE32 + ac[j] * power[j])


if numba is not None:

    @numba.extending.overload(_sigmoid)
    def _sigmoid_by_dtype(Z, A, power):
        return (lambda Z, A, power: _sigmoid32(Z, A, power)) if Z.dtype == numba.types.float32 else (
            lambda Z, A, power: _sigmoid64(Z, A, power))  # fmt: skip


# log1p(e) for e in [0, 1] as 2 atanh(s) (+ ln 2): s = e / (2 + e) for e <= sqrt(2) - 1, else
# s = (e - 1) / (e + 3) and ln 2 added; |s| <= 0.1716, so s^2 <= 0.0295 and the series converges fast
SQRT2_M1, LN2 = 0.41421356237309503, 0.6931471805599453
SQRT2_M1_32, LN2_32 = np.float32(SQRT2_M1), np.float32(LN2)
ZERO32, TWO32, THREE32 = np.float32(0.0), np.float32(2.0), np.float32(3.0)
ATANH32 = [np.float32(1 / (2 * i + 1)) for i in range(6)]  # 1, 1/3, ..., 1/11: to s^11
T1, T3, T5, T7, T9, T11 = ATANH32


def _cross_entropy(Z, Y, C, power):
    """``C = softplus(z) - y z`` value by value (:class:`mlp_torch.model.costs.CrossEntropyCost`),
    ``Z``, ``Y``, ``C`` of one shape (in native code: :func:`_cross_entropy64` or
    :func:`_cross_entropy32` by the dtype; ``power`` a scratch buffer as :func:`_sigmoid`'s)."""
    raise NotImplementedError("only in native code")


@_exact
def _cross_entropy64(Z, Y, C, power):
    """``C = softplus(z) - y z`` in float64, ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` (finite
    where the sigmoid saturates) as SIMD: ``exp`` as in :func:`_sigmoid64`, ``log1p`` by its
    ``atanh`` series to ``s^21`` (within a unit in the last place). A NaN or an inf in ``z`` gives
    a NaN or an inf, as torch's would."""
    z, y, c = Z.reshape(Z.size), Y.reshape(Y.size), C.reshape(C.size)
    bits = power.view(np.int64)
    for lo in range(0, len(z), len(power)):
        n = min(len(power), len(z) - lo)
        zc, yc, cc = z[lo : lo + n], y[lo : lo + n], c[lo : lo + n]
        for j in range(n):
            x = -abs(zc[j])
            x = -708.0 if x < -708.0 else x
            m = x * LOG2E + ROUND
            k = m - ROUND
            t = (x - k * LN2_HI) - k * LN2_LO
            cc[j] = 1.0 + t * (1.0 + t * (1 / 2 + t * (1 / 6 + t * (1 / 24 + t * (1 / 120 + t * (
                1 / 720 + t * (1 / 5040 + t * (1 / 40320 + t * (1 / 362880 + t * (1 / 3628800 + t * (
                    1 / 39916800 + t * (1 / 479001600 + t * (1 / 6227020800)))))))))))))  # fmt: skip
            power[j] = m
        for j in range(n):
            bits[j] = (bits[j] - ROUND_BITS + 1023) << 52  # 2^k
        for j in range(n):
            e = cc[j] * power[j]  # exp(-|z|), in (0, 1]
            big = e > SQRT2_M1
            q = (e - 1.0) / (e + 3.0) if big else e / (e + 2.0)
            q2 = q * q
            log1p = (LN2 if big else 0.0) + 2.0 * q * (1.0 + q2 * (1 / 3 + q2 * (1 / 5 + q2 * (1 / 7 + q2 * (
                1 / 9 + q2 * (1 / 11 + q2 * (1 / 13 + q2 * (1 / 15 + q2 * (1 / 17 + q2 * (
                    1 / 19 + q2 * (1 / 21)))))))))))  # fmt: skip
            v = zc[j]
            cc[j] = (v if v > 0.0 else 0.0) + log1p - yc[j] * v


@_exact
def _cross_entropy32(Z, Y, C, power):
    """:func:`_cross_entropy64` in float32 arithmetic: ``exp`` as in :func:`_sigmoid32`,
    ``log1p``'s series to ``s^11``."""
    z, y, c = Z.reshape(Z.size), Y.reshape(Y.size), C.reshape(C.size)
    bits = power.view(np.int32)
    for lo in range(0, len(z), len(power)):
        n = min(len(power), len(z) - lo)
        zc, yc, cc = z[lo : lo + n], y[lo : lo + n], c[lo : lo + n]
        for j in range(n):
            x = -abs(zc[j])
            x = LOW32 if x < LOW32 else x
            m = x * LOG2E32 + ROUND32
            k = m - ROUND32
            t = (x - k * LN2_HI32) - k * LN2_LO32
            cc[j] = ONE32 + t * (ONE32 + t * (C2 + t * (C3 + t * (C4 + t * (C5 + t * (C6 + t * C7))))))
            power[j] = m
        for j in range(n):
            bits[j] = (bits[j] - ROUND_BITS32 + np.int32(127)) << np.int32(23)  # 2^k
        for j in range(n):
            e = cc[j] * power[j]
            big = e > SQRT2_M1_32
            q = (e - ONE32) / (e + THREE32) if big else e / (e + TWO32)
            q2 = q * q
            log1p = (LN2_32 if big else ZERO32) + TWO32 * q * (
                T1 + q2 * (T3 + q2 * (T5 + q2 * (T7 + q2 * (T9 + q2 * T11)))))  # fmt: skip
            v = zc[j]
            cc[j] = (v if v > ZERO32 else ZERO32) + log1p - yc[j] * v


if numba is not None:

    @numba.extending.overload(_cross_entropy)
    def _cross_entropy_by_dtype(Z, Y, C, power):
        if Z.dtype == numba.types.float32:
            return lambda Z, Y, C, power: _cross_entropy32(Z, Y, C, power)
        return lambda Z, Y, C, power: _cross_entropy64(Z, Y, C, power)


@_exact
def _update_costs(Z, Y, C, starts, cost, power, out):
    """Each update's cost sum ``sum_i C_i`` into ``out`` ``(U,)`` from its examples' ``z_L`` ``Z``
    and targets ``Y`` (``(n, n_L)``, update ``u`` rows ``starts[u]:starts[u + 1]``), once per epoch
    over all its examples (SIMD), ``C`` ``(n, n_L)`` a scratch buffer: cross-entropy
    (:func:`_cross_entropy`) or quadratic ``1/2 (f(z) - y)^2`` (``f`` by :func:`_sigmoid`); the
    sums in float64."""
    if cost == 0:
        _sigmoid(Z, C, power)
        for r in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                d = C[r, j] - Y[r, j]
                C[r, j] = 0.5 * d * d
    else:
        _cross_entropy(Z, Y, C, power)
    for u in range(len(starts) - 1):
        total = 0.0
        for r in range(starts[u], starts[u + 1]):
            for j in range(C.shape[1]):
                total += C[r, j]
        out[u] = total


@_sums_may_reorder
def _output_error(A, Y, D, cost, s, one):
    """``delta_L = s (a - y) a (1 - a)`` (quadratic cost) or ``s (a - y)`` (cross-entropy)."""
    for r in range(A.shape[0]):
        for j in range(A.shape[1]):
            a = A[r, j]
            d = a - Y[r, j]
            if cost == 0:
                d = d * (a * (one - a))
            D[r, j] = d * s


@_exact
def _gradient(gW, gb, D, A, first):
    """``dJ/dW = delta^T a``, ``dJ/db = sum delta`` over a block (added to what is there unless
    ``first``, the batch's first block); four examples per pass over a row of ``dJ/dW``. Not
    reordered: a lane's sum of four must be the same in the SIMD body and in its remainder."""
    n_out, n_in = gW.shape
    B = D.shape[0]
    for j in range(n_out):
        d0 = D[0, j]
        total = d0 if first else gb[j] + d0
        if first:
            for c in range(n_in):
                gW[j, c] = d0 * A[0, c]
        else:
            for c in range(n_in):
                gW[j, c] += d0 * A[0, c]
        r = 1
        while r + 3 < B:
            d0, d1, d2, d3 = D[r, j], D[r + 1, j], D[r + 2, j], D[r + 3, j]
            total += d0 + d1 + d2 + d3
            for c in range(n_in):
                gW[j, c] += d0 * A[r, c] + d1 * A[r + 1, c] + d2 * A[r + 2, c] + d3 * A[r + 3, c]
            r += 4
        while r < B:
            d0 = D[r, j]
            total += d0
            for c in range(n_in):
                gW[j, c] += d0 * A[r, c]
            r += 1
        gb[j] = total


@_exact
def _back(W, D, A, D_prev, zero, one):
    """``delta_{l-1} = (delta_l W_l) * a (1 - a)``, ``a`` the layer's inputs ``(B, n_in)``."""
    n_out, n_in = W.shape
    for r in range(D.shape[0]):
        for c in range(n_in):
            D_prev[r, c] = zero
        for j in range(n_out):
            d = D[r, j]
            for c in range(n_in):
                D_prev[r, c] += W[j, c] * d
        for c in range(n_in):
            a = A[r, c]
            D_prev[r, c] = D_prev[r, c] * (a * (one - a))


@_sums_may_reorder
def _penalty_sums(w, n_weights, out, zero):
    """``sum |w|`` and ``sum w^2`` over the weights into ``out`` ``(2,)``."""
    s1, s2 = zero, zero
    for p in range(n_weights):
        v = w[p]
        s1 += abs(v)
        s2 += v * v
    out[0], out[1] = s1, s2


@_exact
def _step(w, g, state, rule, l1, l2, lr, alpha, n_weights, zero, one):
    """The penalties' gradient (weights only), then the optimizer's rule, in one pass over the
    parameters with the operations of :mod:`mlp_torch.model.optim` in their order, element by
    element: ``g += l1 sign(w)``, ``g += 2 l2 w``; gradient descent ``w += -lr g``; the notes'
    momentum ``dw = alpha dw + ((alpha - 1) lr) g``, ``w += dw``; heavy ball ``v = alpha v + g``,
    ``w += -lr v`` (Nesterov: ``-lr (g + alpha v)``)."""
    two_l2 = (one + one) * l2
    _rule(w[:n_weights], g[:n_weights], state[:n_weights], rule, l1, two_l2, lr, alpha, zero, one)
    _rule(w[n_weights:], g[n_weights:], state[n_weights:], rule, zero, zero, lr, alpha, zero, one)


@_exact
def _rule(w, g, state, rule, l1, two_l2, lr, alpha, zero, one):
    m, c = -lr, (alpha - one) * lr
    for p in range(len(w)):
        v, gp = w[p], g[p]
        if l1 != zero:
            gp += l1 * ((v > zero) * one - (v < zero) * one)
        if two_l2 != zero:
            gp += two_l2 * v
        g[p] = gp
        if rule == 0:
            w[p] = v + m * gp
        elif rule == 1:
            dw = state[p] * alpha + gp * c
            state[p] = dw
            w[p] = v + dw
        elif rule == 2:
            u = state[p] * alpha + gp
            state[p] = u
            w[p] = v + m * u
        else:
            u = state[p] * alpha + gp
            state[p] = u
            w[p] = v + m * (gp + alpha * u)


@_exact
def _views(flat, at, shapes, k):
    """Member ``k``'s parameters ``[W_1, ..., W_L]`` as 2-D views of its row of ``flat``."""
    return [flat[k, at[i] : at[i] + shapes[i, 0] * shapes[i, 1]].reshape(shapes[i, 0], shapes[i, 1])
            for i in range(len(at))]  # fmt: skip


@_exact
def _units_distinct(w, w_at, b_at, shapes):
    """Whether no two hidden units of a layer are equal: the same weights in, bias and weights out.
    Each unit gets a fingerprint (a fixed weighted sum of its numbers, the same operations for every
    unit, so equal units get equal ones); units whose fingerprints tie are compared in full."""
    for i in range(len(w_at) - 1):
        n, n_in, n_next = shapes[i, 0], shapes[i, 1], shapes[i + 1, 0]
        W = w[w_at[i] : w_at[i] + n * n_in].reshape(n, n_in)  # (n, n_in): into the units
        V = w[w_at[i + 1] : w_at[i + 1] + n_next * n].reshape(n_next, n)  # (n_next, n): out of them
        b = w[b_at[i] : b_at[i] + n]
        into = np.array([1.0 + ((c + 1) * 0.6180339887498949) % 1.0 for c in range(n_in)])
        out = np.array([2.0 + ((q + 1) * 0.4142135623730951) % 1.0 for q in range(n_next)])
        keys = np.empty(n)
        for j in range(n):
            key = 0.7548776662466927 * b[j]
            for c in range(n_in):
                key += into[c] * W[j, c]
            for q in range(n_next):
                key += out[q] * V[q, j]
            keys[j] = key
        order = np.argsort(keys)
        for t in range(n - 1):
            j, h = order[t], order[t + 1]
            if keys[j] == keys[h] and b[j] == b[h] and (W[j] == W[h]).all() and (V[:, j] == V[:, h]).all():
                return False
    return True


@_exact
def _gather(a, rows, out):
    """``out[r] = a[rows[r]]``."""
    for r in range(len(rows)):
        i = rows[r]
        for c in range(a.shape[1]):
            out[r, c] = a[i, c]


@_exact
def _layer(W, b, A, Z, A_out, power, blas, zero):
    """One layer forward for a block: ``Z = A W^T + b`` (by BLAS or :func:`_forward`), ``A_out = f(Z)``."""
    if blas:
        np.dot(A, W.T, Z)  # (B, n_out)
        _add_bias(Z, b)
    else:
        _forward(W, b, A, Z, zero)
    _sigmoid(Z, A_out, power)


@_exact
def _add_bias(Z, b):
    for r in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[r, j] += b[j]


@_exact
def _bias_gradient(gb, D, first):
    """``dJ/db = sum delta`` over the examples, in their order (added to ``gb`` unless ``first``)."""
    for j in range(D.shape[1]):
        gb[j] = D[0, j] if first else gb[j] + D[0, j]
    for r in range(1, D.shape[0]):
        for j in range(D.shape[1]):
            gb[j] += D[r, j]


@_exact
def _add_to(G, H):
    for j in range(G.shape[0]):
        for c in range(G.shape[1]):
            G[j, c] += H[j, c]


@_exact
def _times_slope(D, A, one):
    """``delta *= a (1 - a)``, the sigmoid's derivative at the layer's inputs ``a``."""
    for r in range(D.shape[0]):
        for c in range(D.shape[1]):
            a = A[r, c]
            D[r, c] = D[r, c] * (a * (one - a))


@_exact
def _layout(sizes):
    """Where each layer's ``W`` (``w_at``, its shape in ``shapes``) and ``b`` (``b_at``) start in
    a member's flat parameters, and how many weights there are (they come first)."""
    L = len(sizes) - 1
    w_at = np.zeros(L, np.int64)
    b_at = np.zeros(L, np.int64)
    shapes = np.zeros((L, 2), np.int64)
    offset = 0
    for i in range(L):
        w_at[i] = offset
        shapes[i, 0], shapes[i, 1] = sizes[i + 1], sizes[i]
        offset += sizes[i] * sizes[i + 1]
    n_weights = offset
    for i in range(L):
        b_at[i] = offset
        offset += sizes[i + 1]
    return w_at, b_at, shapes, n_weights


@_exact
def _epoch(flat, grad, state, x, y, order, costs, sums, sizes, starts, scales, cost, rule, l1, l2, lr, alpha,
           active, blas_block, zero, one):  # fmt: skip
    L = len(sizes) - 1
    w_at, b_at, shapes, n_weights = _layout(sizes)
    block, largest = 1, 1  # examples per block of the loops; most examples of one update
    for u in range(len(starts) - 1):
        block = max(block, min(starts[u + 1] - starts[u], BLOCK))
        largest = max(largest, starts[u + 1] - starts[u])
    rows = max(block, min(largest, blas_block)) if largest >= BLAS_ROWS else block  # of the buffers
    dtype = flat.dtype
    acts = [np.empty((rows, sizes[i + 1]), dtype=dtype) for i in range(L)]  # a_1, ..., a_L of a block
    zs = [np.empty((rows, sizes[i + 1]), dtype=dtype) for i in range(L - 1)]  # z_1, ..., z_{L-1}
    z_out = np.empty((starts[-1], sizes[L]), dtype=dtype)  # each example's z_L: its cost
    cost_values = np.empty_like(z_out)
    x_block = np.empty((rows, sizes[0]), dtype=dtype)  # a block's examples, gathered in use order ...
    y_used = np.empty((starts[-1], sizes[L]), dtype=dtype)  # ... and their targets
    deltas = [np.empty((rows, sizes[i + 1]), dtype=dtype) for i in range(L)]  # delta_1, ..., delta_L
    power = np.empty(max(sizes.max(), 256), dtype=dtype)  # _sigmoid's 2^k
    pair = np.zeros(2, dtype=dtype)
    more = [np.empty((sizes[i + 1], sizes[i]), dtype=dtype) for i in range(L if largest > blas_block else 0)]
    for k in range(flat.shape[0]):
        if not active[k]:
            continue
        w, g, buffer = flat[k], grad[k], state[k]
        Ws, gWs = _views(flat, w_at, shapes, k), _views(grad, w_at, shapes, k)
        xk, yk = x[min(k, x.shape[0] - 1)], y[min(k, y.shape[0] - 1)]
        use = order[min(k, order.shape[0] - 1)]  # the rows of xk, yk in use order (none: as stored)
        stored = len(use) == 0
        blas_ok = largest >= BLAS_ROWS and _units_distinct(w, w_at, b_at, shapes)
        for u in range(len(starts) - 1):
            if l1[k] != zero or l2[k] != zero:
                _penalty_sums(w, n_weights, pair, zero)
                sums[0, k, u], sums[1, k, u] = pair[0], pair[1]
            r0, r1 = starts[u], starts[u + 1]
            blas = blas_ok and r1 - r0 >= BLAS_ROWS  # this update's matrix products by BLAS
            step = blas_block if blas else block
            for b0 in range(r0, r1, step):
                b1 = min(b0 + step, r1)
                B, first = b1 - b0, b0 == r0
                if stored:
                    X, Y = xk[b0:b1], yk[b0:b1]
                else:
                    _gather(xk, use[b0:b1], x_block[:B])
                    _gather(yk, use[b0:b1], y_used[b0:b1])
                    X, Y = x_block[:B], y_used[b0:b1]
                A = X
                for i in range(L):  # _layer written out: as a call, 10-15% slower at batch 1
                    Z = z_out[b0:b1] if i == L - 1 else zs[i][:B]
                    b = w[b_at[i] : b_at[i] + sizes[i + 1]]
                    if blas:
                        np.dot(A, Ws[i].T, Z)  # (B, n_out)
                        _add_bias(Z, b)
                    else:
                        _forward(Ws[i], b, A, Z, zero)
                    _sigmoid(Z, acts[i][:B], power)
                    A = acts[i][:B]
                _output_error(A, Y, deltas[L - 1][:B], cost, scales[u], one)
                for i in range(L - 1, -1, -1):
                    A_in, D = (acts[i - 1][:B] if i else X), deltas[i][:B]
                    gb = g[b_at[i] : b_at[i] + sizes[i + 1]]
                    if not blas:
                        _gradient(gWs[i], gb, D, A_in, first)
                        if i:
                            _back(Ws[i], D, A_in, deltas[i - 1][:B], zero, one)
                        continue
                    if first:
                        np.dot(D.T, A_in, gWs[i])  # (n_out, n_in)
                    else:  # a later block of a large update: added to the earlier blocks'
                        np.dot(D.T, A_in, more[i])
                        _add_to(gWs[i], more[i])
                    _bias_gradient(gb, D, first)
                    if i:
                        np.dot(D, Ws[i], deltas[i - 1][:B])  # (B, n_in)
                        _times_slope(deltas[i - 1][:B], A_in, one)
            _step(w, g, buffer, rule, l1[k], l2[k], lr[k], alpha[k], n_weights, zero, one)
        _update_costs(z_out, yk if stored else y_used, cost_values, starts, cost, power, costs[k])


def epoch(
    flat,
    grad,
    state,
    x,
    y,
    costs,
    sums,
    sizes,
    starts,
    scales,
    *,
    cost: str,
    rule: int,
    l1,
    l2,
    lr,
    alpha,
    active,
    order=None,
    threads: int = 1,
    workers: int = 1,
    blas_block: int = BLAS_BLOCK,
) -> None:
    """Every update of one epoch, in place. ``flat``, ``grad`` and ``state`` ``(K, P)``: numpy views
    of the module's parameters, gradient (left holding each member's last update's) and the
    optimizer's buffer (``None`` for gradient descent); ``x``, ``y`` ``(N, ...)`` shared by all
    members or ``(K, N, ...)`` one each, their rows in use order ``order`` (``(n,)`` for all
    members, ``(K, n)`` one each; ``None``: as stored); ``costs`` ``(K, U)`` gets each update's cost
    sum ``sum_i C_i`` (unscaled) at the weights it used, ``sums`` ``(2, K, U)`` the penalties' sums
    there (where a penalty is on); ``sizes`` the layer sizes; update ``u`` uses rows
    ``starts[u]:starts[u + 1]`` of the use order, weighted by ``scales[u]``; ``l1``, ``l2``, ``lr``,
    ``alpha``, ``active`` one per member (inactive members are left as they are, their costs too);
    ``threads`` the BLAS threads of updates on :data:`BLAS_ROWS` examples or more, which take their
    examples ``blas_block`` at a time; ``workers`` the threads among which the active members are
    shared, in contiguous groups of (nearly) equal counts, each group's epoch one compiled call
    (which holds no GIL). Members are independent: every member's numbers are the same bit for bit
    whatever ``workers``."""
    dtype = flat.dtype
    starts = np.asarray(starts, np.int64)
    blas = len(starts) > 1 and int((starts[1:] - starts[:-1]).max()) >= BLAS_ROWS
    # C-contiguous arrays only (one compiled signature per dtype; numba's np.dot needs them): the
    # inputs copied where they are views with gaps (a sweep's chunk of a streamed epoch), the
    # outputs written through contiguous copies
    for a in (flat, grad, state):
        if a is not None and not a.flags.c_contiguous:
            raise ValueError("the parameters, gradient and state must be C-contiguous")
    x, y, c, s = (np.ascontiguousarray(a) for a in (x, y, costs, sums))
    x, y = (a if a.ndim == 3 else a[None] for a in (x, y))  # (1 or K, N, ...)
    order = _NO_ORDER if order is None else np.ascontiguousarray(order, np.int64).reshape(-1, order.shape[-1])
    state = flat if state is None else state  # (gradient descent keeps none: not read)
    per_member = [np.asarray(v, dtype) for v in (l1, l2, lr, alpha)]
    active = np.asarray(active, np.bool_)
    settings = (np.asarray(sizes, np.int64), starts, np.asarray(scales, dtype), COSTS[cost], rule)
    tail = (blas_block, dtype.type(0), dtype.type(1))

    def members(k0: int, k1: int) -> None:  # members k0 ... k1 - 1
        def rows(a):  # their rows of a per-member array, or the array all members share
            return a if a.shape[0] == 1 else a[k0:k1]

        s_k = s if (k0, k1) == (0, len(flat)) else np.ascontiguousarray(s[:, k0:k1])
        _epoch(flat[k0:k1], grad[k0:k1], state[k0:k1], rows(x), rows(y), rows(order), c[k0:k1], s_k,
               *settings, *(v[k0:k1] for v in per_member), active[k0:k1], *tail)  # fmt: skip
        if s_k is not s:
            s[:, k0:k1] = s_k

    _in_groups(members, _groups(active, workers), threads if blas else None)
    if c is not costs:
        costs[...] = c
    if s is not sums:
        sums[...] = s


def _groups(active: np.ndarray, workers: int) -> list[tuple[int, int]]:
    """The members of each worker, ``(first, last + 1)``: the active members in ``workers`` (at
    most) contiguous groups of (nearly) equal counts; one group of all when one worker would do."""
    on = np.flatnonzero(active)
    if workers <= 1 or len(on) <= 1:
        return [(0, len(active))]
    return [(int(part[0]), int(part[-1]) + 1) for part in np.array_split(on, min(workers, len(on)))]


def _in_groups(members, groups: list[tuple[int, int]], threads) -> None:
    """``members(k0, k1)`` for each group, on threads of their own when there are several, with
    BLAS on ``threads`` threads (``None``: left alone)."""
    changed = _set_blas_threads(threads)
    try:
        if len(groups) == 1:
            members(*groups[0])
        else:
            for done in [_pool(len(groups)).submit(members, *g) for g in groups]:
                done.result()
    finally:
        _restore_blas_threads(changed)


_executor, _executor_size = None, 0  # the threads of parallel members (made when first needed)


def _pool(workers: int):
    """A pool of at least ``workers`` threads (the last one, or a larger one in its place)."""
    global _executor, _executor_size
    if _executor_size < workers:
        from concurrent.futures import ThreadPoolExecutor

        if _executor is not None:
            _executor.shutdown(wait=True)
        _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlp_torch-members")
        _executor_size = workers
    return _executor


_NO_ORDER = np.zeros((1, 0), np.int64)  # the rows as stored

FIGURES = (
    "J",
    "cost",
    "l1",
    "l2",
    "first_nonfinite",
)  # figures()'s first columns; then each layer's sparsity


def figures(costs, sums, counts, l1, l2, flat, sizes, *, mean: bool, near_zero: float):
    """Each member's figures of the epoch just trained, ``(K, 5 + L)`` float64: its ``J``, cost,
    L1 and L2 terms (the cost reduced over the split, ``mean`` or summed; the penalties averaged
    over the updates, as :func:`mlp_torch.train.loop.epoch_objective`), its first update whose
    ``J`` was inf or NaN (-1: none), and each layer's fraction of weights below ``near_zero`` in
    size (the module's ``sparsity/``), from each update's cost sum ``costs`` ``(K, U)``, the
    penalties' sums ``sums`` ``(2, K, U)``, the batch sizes ``counts`` ``(U,)``, ``l1``, ``l2`` one
    per member, and the parameters ``flat`` ``(K, P)`` of layer sizes ``sizes``. One compiled
    call: the same figures by tensor operations cost more than an epoch of small updates."""
    out = np.empty((len(costs), len(FIGURES) + len(sizes) - 1))
    l1, l2, counts = (np.asarray(v, np.float64) for v in (l1, l2, counts))
    _figures(costs, sums, counts, l1, l2, flat, np.asarray(sizes, np.int64), mean, near_zero, out)
    return out


@_exact
def _figures(costs, sums, counts, l1, l2, flat, sizes, mean, near_zero, out):
    K, U = costs.shape
    n = counts.sum()
    for k in range(K):
        cost, p1, p2, first = 0.0, 0.0, 0.0, -1
        for u in range(U):
            c, a, b = float(costs[k, u]), l1[k] * sums[0, k, u], l2[k] * sums[1, k, u]
            if first < 0 and not np.isfinite((c / counts[u] if mean else c) + a + b):
                first = u
            cost += c
            p1 += a
            p2 += b
        cost = cost / n if mean else cost
        out[k, 0], out[k, 1], out[k, 2], out[k, 3], out[k, 4] = (
            cost + p1 / U + p2 / U,
            cost,
            p1 / U,
            p2 / U,
            first,
        )
        at = 0
        for i in range(len(sizes) - 1):
            size = sizes[i] * sizes[i + 1]
            small = 0
            for p in range(at, at + size):
                small += abs(flat[k, p]) < near_zero
            out[k, 5 + i] = small / size
            at += size


def evaluate(flat, x, y, sizes, *, cost: str, l1, l2, mean: bool, active=None, threads: int = 1,
             workers: int = 1):  # fmt: skip
    """Each member's ``J`` and accuracy on a whole split of a classification (a fit's validation),
    ``(K, 2)`` float64: the forward pass of every example (BLAS's products from :data:`BLAS_ROWS`
    examples, :data:`BLAS_BLOCK` at a time), the cost summed as :func:`_update_costs` sums an
    update's (``mean``: divided by the examples), plus ``l1 sum |w| + l2 sum w^2``; the accuracy the
    fraction of examples whose largest output (the first, where several tie) is their target's.
    ``flat`` ``(K, P)``, ``x``, ``y`` ``(N, ...)`` shared or ``(K, N, ...)`` one each, ``l1``, ``l2``
    one per member; ``active`` one per member (``None``: all): the others are not evaluated, their
    row NaN; ``threads``, ``workers`` as :func:`epoch`'s. As
    :meth:`mlp_torch.train.module.MLPModule.evaluate` by tensor operations, which cost more than the
    epoch's updates on small data."""
    dtype = flat.dtype
    x, y = (np.ascontiguousarray(a) for a in (x, y))
    x, y = (a if a.ndim == 3 else a[None] for a in (x, y))  # (1 or K, N, ...)
    l1, l2 = (np.asarray(v, dtype) for v in (l1, l2))
    sizes = np.asarray(sizes, np.int64)
    active = np.ones(len(flat), np.bool_) if active is None else np.asarray(active, np.bool_)
    out = np.full((len(flat), 2), np.nan)

    def members(k0: int, k1: int) -> None:
        def rows(a):
            return a if a.shape[0] == 1 else a[k0:k1]

        _evaluate(flat[k0:k1], rows(x), rows(y), sizes, COSTS[cost], l1[k0:k1], l2[k0:k1], mean,
                  active[k0:k1], out[k0:k1], BLAS_BLOCK, dtype.type(0))  # fmt: skip

    if active.any():
        blas = x.shape[1] >= BLAS_ROWS
        _in_groups(members, _groups(active, workers), threads if blas else None)
    return out


@_exact
def _evaluate(flat, x, y, sizes, cost, l1, l2, mean, active, out, blas_block, zero):
    L = len(sizes) - 1
    w_at, b_at, shapes, n_weights = _layout(sizes)
    n, n_out = x.shape[1], sizes[L]
    rows = max(1, min(n, blas_block))
    dtype = flat.dtype
    acts = [np.empty((rows, sizes[i + 1]), dtype=dtype) for i in range(L)]
    zs = [np.empty((rows, sizes[i + 1]), dtype=dtype) for i in range(L)]
    cost_values = np.empty((rows, n_out), dtype=dtype)
    power = np.empty(max(sizes.max(), 256), dtype=dtype)
    pair = np.zeros(2, dtype=dtype)
    block_cost = np.zeros(1)
    starts = np.zeros(2, np.int64)
    for k in range(flat.shape[0]):
        if not active[k]:
            continue
        w = flat[k]
        Ws = _views(flat, w_at, shapes, k)
        xk, yk = x[min(k, x.shape[0] - 1)], y[min(k, y.shape[0] - 1)]
        total, right = 0.0, 0
        for b0 in range(0, n, rows):
            b1 = min(b0 + rows, n)
            B = b1 - b0
            A = xk[b0:b1]
            for i in range(L):
                b = w[b_at[i] : b_at[i] + sizes[i + 1]]
                _layer(Ws[i], b, A, zs[i][:B], acts[i][:B], power, B >= BLAS_ROWS, zero)
                A = acts[i][:B]
            starts[1] = B
            _update_costs(zs[L - 1][:B], yk[b0:b1], cost_values[:B], starts, cost, power, block_cost)
            total += block_cost[0]
            for r in range(B):
                guess, label = 0, 0
                for j in range(1, n_out):
                    if A[r, j] > A[r, guess]:
                        guess = j
                    if yk[b0 + r, j] > yk[b0 + r, label]:
                        label = j
                right += guess == label
        _penalty_sums(w, n_weights, pair, zero)
        out[k, 0] = (total / n if mean else total) + l1[k] * pair[0] + l2[k] * pair[1]
        out[k, 1] = right / n


_blas_libraries = None  # threadpoolctl's controllers of the BLAS libraries loaded (found once)


def _set_blas_threads(threads) -> list[tuple[object, int]]:
    """BLAS's libraries on ``threads`` threads for the epoch (OpenBLAS would split a product of a
    few hundred thousand multiply-adds over every core; :mod:`mlp_torch.train.threads`' rule is one
    thread at the sizes this loop trains); returns those changed, with their threads before
    (:func:`_restore_blas_threads` puts them back); ``None``: left alone."""
    global _blas_libraries
    if threads is None:
        return []
    if _blas_libraries is None:
        import scipy.linalg.cython_blas  # noqa: F401 (the BLAS numba's products call: loaded before looking)
        from threadpoolctl import ThreadpoolController

        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    changed = []
    for lib in _blas_libraries:
        before = lib.get_num_threads()
        if before != threads:
            lib.set_num_threads(threads)
            changed.append((lib, before))
    return changed


def _restore_blas_threads(changed: list[tuple[object, int]]) -> None:
    for lib, before in changed:
        lib.set_num_threads(before)


def warm(dtypes=(np.float32, np.float64)) -> None:
    """Load the compiled loop (:func:`epoch`, :func:`figures`, :func:`evaluate`) for ``dtypes`` now:
    numba's machine code from its cache, or compiled, for seconds, where there is none
    (``scripts/setup`` calls this once, for both dtypes, so that no run compiles)."""
    if numba is None:
        return
    for dtype in dtypes:
        sizes = [2, 3, 2]
        flat = np.zeros((1, 17), dtype)
        x, y = np.zeros((1, 4, 2), dtype), np.zeros((1, 4, 2), dtype)
        costs, sums = np.zeros((1, 2), dtype), np.zeros((2, 1, 2), dtype)
        epoch(flat, np.zeros_like(flat), np.zeros_like(flat), x, y, costs, sums, sizes, [0, 2, 4], [0.5, 0.5],
              cost="quadratic", rule=1, l1=[0.0], l2=[0.0], lr=[0.1], alpha=[0.5], active=[True])  # fmt: skip
        figures(costs, sums, [2, 2], [0.0], [0.0], flat, sizes, mean=True, near_zero=1e-3)
        evaluate(flat, x, y, sizes, cost="quadratic", l1=[0.0], l2=[0.0], mean=True)
