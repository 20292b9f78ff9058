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
=====================================================  ==========================================

It reads and writes the module's own tensors (the flat parameters, their gradient, the optimizer's
state) through zero-copy numpy views, member after member (members are independent).

:mod:`mlp_torch.model.backprop` stays THE readable implementation: ``tests/test_native.py`` checks
this loop against it and the optimizers' own ``step()`` for every combination covered. The sums
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
module uses it on the CPU for updates whose largest matrix product is small (a member's below
:data:`NATIVE_PRODUCT`, where BLAS's blocked products stop paying) when nothing needs the torch loop:
autograd as the gradient source, the cross-check, another optimizer or a step hook, several
processes (DDP's collective per update), CUDA. ``--model.native false`` turns it off.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NATIVE_PRODUCT", "RULES", "available", "epoch", "warm", "why_unavailable"]

RULES = {"GradientDescent": 0, "Momentum": 1, "HeavyBall": 2, "Nesterov": 3}
COSTS = {"quadratic": 0, "cross_entropy": 1}
FASTMATH = {"reassoc", "nsz", "arcp"}  # sums may be reordered; NaN and inf stay IEEE
BLOCK = 128  # examples of a batch processed together (the activations of a block stay in cache)
# A member's largest matrix product per update below which this loop trains: above it BLAS's
# blocked products (the torch loop) win. Measured on the default 64-100-10 network, microseconds per
# update of the whole module, native against torch: batch 100 241 vs 270, 200 311 vs 308, 400 645
# vs 553, the full 1,078 1,706 vs 1,615; 200 x 64 x 100 = 1.3 M multiply-adds.
NATIVE_PRODUCT = 1 << 21

try:
    import numba
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
        return numba.njit(cache=True, fastmath=fastmath, nogil=True)(fn) if numba is not None else fn

    return decorate


_sums_may_reorder = _compiled(FASTMATH)
_exact = _compiled(False)


# Constants of the exponential in _sigmoid: exp(x) = 2^k exp(t), k = round(x / ln 2), |t| <= ln(2)/2
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 = LN2_HI + LN2_LO
ROUND = 6755399441055744.0  # 1.5 * 2^52: x + ROUND rounds x to an integer held in the low bits ...
ROUND_BITS = 4843621399236968448  # ... of this bit pattern (ROUND's)


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


@_exact
def _sigmoid(Z, A, power, bits):
    """``A = f(Z) = 1 / (1 + exp(-Z))``, the exponential computed here so that it runs as SIMD
    (a call of the C library's ``exp`` per value cost twice the rest of a layer): Cody and
    Waite's reduction ``exp(x) = 2^k exp(t)`` and ``exp(t)`` by its Taylor series to ``t^13``
    (1 unit in the last place, as the library's), ``2^k`` built from its bits in ``power``
    (``bits`` is the same buffer, read as integers). ``x`` is kept within [-708, 709], where
    ``f`` is 1 or below 1e-307 whatever ``x`` beyond; a NaN stays a NaN. No reordering here: the
    rounding trick needs the additions as written."""
    n = Z.shape[1]
    for r in range(Z.shape[0]):
        for j in range(n):
            x = min(max(-float(Z[r, j]), -708.0), 709.0)
            m = x * LOG2E + ROUND
            k = m - ROUND  # round(x / ln 2)
            t = (x - k * LN2_HI) - k * LN2_LO
            e = 1.0 + t * (1.0 + t * (1 / 2 + t * (1 / 6 + t * (1 / 24 + t * (1 / 120 + t * (1 / 720 + t * (
                1 / 5040 + t * (1 / 40320 + t * (1 / 362880 + t * (1 / 3628800 + t * (1 / 39916800 + t * (
                    1 / 479001600 + t * (1 / 6227020800)))))))))))))  # fmt: skip
            A[r, j] = e
            power[j] = m
        for j in range(n):
            bits[j] = (bits[j] - ROUND_BITS + 1023) << 52  # 2^k
        for j in range(n):
            z = Z[r, j]
            v = 1.0 / (1.0 + A[r, j] * power[j])
            A[r, j] = v if z == z else z


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
    """The penalties' gradient (weights only), then the optimizer's rule, with the operations of
    :mod:`mlp_torch.model.optim` in their order: ``g += l1 sign(w)``, ``g += 2 l2 w``; gradient
    descent ``w += -lr g``; the notes' momentum ``dw = alpha dw + ((alpha - 1) lr) g``,
    ``w += dw``; heavy ball ``v = alpha v + g``, ``w += -lr v`` (Nesterov: ``-lr (g + alpha v)``)."""
    if l1 != zero:
        for p in range(n_weights):
            v = w[p]
            g[p] += l1 * ((v > zero) * one - (v < zero) * one)
    if l2 != zero:
        two_l2 = (one + one) * l2
        for p in range(n_weights):
            g[p] += two_l2 * w[p]
    m = -lr
    if rule == 0:
        for p in range(len(w)):
            w[p] += m * g[p]
    elif rule == 1:
        c = (alpha - one) * lr
        for p in range(len(w)):
            dw = state[p] * alpha + g[p] * c
            state[p] = dw
            w[p] += dw
    elif rule == 2:
        for p in range(len(w)):
            u = state[p] * alpha + g[p]
            state[p] = u
            w[p] += m * u
    else:
        for p in range(len(w)):
            u = state[p] * alpha + g[p]
            state[p] = u
            w[p] += m * (g[p] + alpha * u)


@_exact
def _views(flat, at, shapes, k):
    """Member ``k``'s parameters ``[W_1, ..., W_L]`` as 2-D views of its row of ``flat``."""
    return [flat[k, at[i] : at[i] + shapes[i, 0] * shapes[i, 1]].reshape(shapes[i, 0], shapes[i, 1])
            for i in range(len(at))]  # fmt: skip


@_exact
def _epoch(flat, grad, state, x, y, z_out, sums, sizes, starts, scales, cost, rule, l1, l2, lr, alpha, active,
           zero, one):  # fmt: skip
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
    block = 1
    for u in range(len(starts) - 1):
        block = max(block, min(starts[u + 1] - starts[u], BLOCK))
    dtype = flat.dtype
    acts = [np.empty((block, sizes[i + 1]), dtype=dtype) for i in range(L)]  # a_1, ..., a_L of a block
    zs = [np.empty((block, sizes[i + 1]), dtype=dtype) for i in range(L - 1)]  # z_1, ..., z_{L-1}
    deltas = [np.empty((block, sizes[i + 1]), dtype=dtype) for i in range(L)]  # delta_1, ..., delta_L
    power = np.empty(sizes.max(), dtype=np.float64)  # _sigmoid's 2^k, and its bits:
    bits = power.view(np.int64)
    pair = np.zeros(2, dtype=dtype)
    for k in range(flat.shape[0]):
        if not active[k]:
            continue
        w, g, buffer = flat[k], grad[k], state[k]
        Ws, gWs = _views(flat, w_at, shapes, k), _views(grad, w_at, shapes, k)
        xk, yk, zk = x[min(k, x.shape[0] - 1)], y[min(k, y.shape[0] - 1)], z_out[k]
        for u in range(len(starts) - 1):
            if l1[k] != zero or l2[k] != zero:
                _penalty_sums(w, n_weights, pair, zero)
                sums[0, k, u], sums[1, k, u] = pair[0], pair[1]
            for r0 in range(starts[u], starts[u + 1], block):
                r1 = min(r0 + block, starts[u + 1])
                B = r1 - r0
                A = xk[r0:r1]
                for i in range(L):
                    Z = zk[r0:r1] if i == L - 1 else zs[i][:B]  # z_L is kept: each example's cost
                    _forward(Ws[i], w[b_at[i] : b_at[i] + sizes[i + 1]], A, Z, zero)
                    _sigmoid(Z, acts[i][:B], power, bits)
                    A = acts[i][:B]
                _output_error(A, yk[r0:r1], deltas[L - 1][:B], cost, scales[u], one)
                for i in range(L - 1, -1, -1):
                    A_in = acts[i - 1][:B] if i else xk[r0:r1]
                    gb = g[b_at[i] : b_at[i] + sizes[i + 1]]
                    _gradient(gWs[i], gb, deltas[i][:B], A_in, r0 == starts[u])
                    if i:
                        _back(Ws[i], deltas[i][:B], A_in, deltas[i - 1][:B], zero, one)
            _step(w, g, buffer, rule, l1[k], l2[k], lr[k], alpha[k], n_weights, zero, one)


def epoch(
    flat,
    grad,
    state,
    x,
    y,
    z_out,
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
) -> None:
    """Every update of one epoch, in place. ``flat``, ``grad`` and ``state`` ``(K, P)``: numpy views
    of the module's parameters, gradient (left holding each member's last update's) and the
    optimizer's buffer (``None`` for gradient descent); ``x``, ``y`` ``(1 or K, n, ...)`` in use
    order; ``z_out`` ``(K, n, n_L)`` gets each example's ``z_L``, ``sums`` ``(2, K, U)`` the
    penalties' sums at each update's weights (where a penalty is on); ``sizes`` the layer sizes;
    update ``u`` uses rows ``starts[u]:starts[u + 1]`` weighted by ``scales[u]``; ``l1``, ``l2``,
    ``lr``, ``alpha``, ``active`` one per member (inactive members are left as they are)."""
    dtype = flat.dtype
    _epoch(flat, grad, flat if state is None else state, x, y, z_out, sums, np.asarray(sizes, np.int64),
           np.asarray(starts, np.int64), np.asarray(scales, dtype), COSTS[cost], rule,
           *(np.asarray(v, dtype) for v in (l1, l2, lr, alpha)), np.asarray(active, np.bool_),
           dtype.type(0), dtype.type(1))  # fmt: skip


def warm() -> None:
    """Compile the loop for float32 and float64 now (``scripts/setup`` calls this once), so that
    the first run loads machine code from numba's cache instead of compiling for seconds."""
    if numba is None:
        return
    for dtype in (np.float32, np.float64):
        sizes = [2, 3, 2]
        flat = np.zeros((1, 17), dtype)
        x, y = np.zeros((1, 4, 2), dtype), np.zeros((1, 4, 2), dtype)
        epoch(flat, np.zeros_like(flat), np.zeros_like(flat), x, y, np.zeros((1, 4, 2), dtype),
              np.zeros((2, 1, 2), dtype), sizes, [0, 2, 4], [0.5, 0.5], cost="quadratic", rule=1, l1=[0.0],
              l2=[0.0], lr=[0.1], alpha=[0.5], active=[True])  # fmt: skip
