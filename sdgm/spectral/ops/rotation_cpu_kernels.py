"""The CPU rotation's kernels, compiled with numba; rotation_cpu.py has the rotation's math, the walk over the
anchors and the autograd Function that calls them.

Kernels (all parallel over threads with numba's prange, vectorized over D by LLVM):
    _anchors   (nb, K, D) fp32 sin and cos at every ANCHOR-th position of a segment, from the float64 anchor
               state, which it advances to the next segment in place
    _forward   OUT[b, t, d] = sum_k C[b, t, k] A[k, d] sin(...): a thread owns a (block of ANCHOR positions,
               D tile) output tile, kept in cache while it walks k, rotating that tile's atoms along t
    _backward  dC[b, t, k] = sum_d G A sin; Q = sum_b C G; dA += Q sin, dPc += Q cos, dFc += Q cos w_t: a thread
               owns a set of k (rows of dA, dPc, dFc and columns of dC); no two threads write one value. The three
               sums run in fp32 over one anchor stretch and are added in float64 (serial fp32 sums lost 1e-5 at
               L = 131,072)
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .base import ROTATION_ANCHOR as ANCHOR  # positions between float64 anchors: the fp32 rotation's drift

# stays at a direct fp32 sine's level
D_TILE = 64  # output columns per forward work item: an ANCHOR x 64 fp32 tile per sequence (8 KiB) stays in L1


@functools.lru_cache(maxsize=1)
def _kernels():
    """Compile (or load from numba's cache) the kernels; raises ImportError or a numba error."""
    import numba
    from numba import njit, prange

    opts = dict(parallel=True, fastmath=True, cache=True, nogil=True)

    @njit(**opts)
    def anchors(sd, cd, cj, sj, nb, out_s, out_c):
        K, D = sd.shape
        for k in prange(K):
            sdr = sd[k]
            cdr = cd[k]
            cjr = cj[k]
            sjr = sj[k]
            for j in range(nb):
                osr = out_s[j, k]
                ocr = out_c[j, k]
                for d in range(D):
                    x = sdr[d]
                    y = cdr[d]
                    osr[d] = x
                    ocr[d] = y
                    sdr[d] = x * cjr[d] + y * sjr[d]
                    cdr[d] = y * cjr[d] - x * sjr[d]

    @njit(**opts)
    def forward(c, amp, cw, sw, anc_s, anc_c, t0, n, out):
        # rows are taken as 1-D views (x[k, a:b]) so that LLVM sees unit-stride loops and vectorizes them
        B, L, K = c.shape
        D = amp.shape[1]
        nb = (n + ANCHOR - 1) // ANCHOR
        ntile = (D + D_TILE - 1) // D_TILE
        for job in prange(nb * ntile):
            j = job // ntile
            d0 = (job % ntile) * D_TILE
            d1 = min(D, d0 + D_TILE)
            w = d1 - d0
            ta = t0 + j * ANCHOR
            tb = min(t0 + n, ta + ANCHOR)
            s = np.empty(w, np.float32)  # A sin, A cos of this tile's atoms at position t
            co = np.empty(w, np.float32)
            for b in range(B):
                for t in range(ta, tb):
                    orow = out[b, t, d0:d1]
                    for i in range(w):
                        orow[i] = 0.0
            for k in range(K):
                ar = amp[k, d0:d1]
                sr = anc_s[j, k, d0:d1]
                cr = anc_c[j, k, d0:d1]
                cwr = cw[k, d0:d1]
                swr = sw[k, d0:d1]
                for i in range(w):
                    s[i] = ar[i] * sr[i]
                    co[i] = ar[i] * cr[i]
                for t in range(ta, tb):
                    if B == 1:
                        cv = c[0, t, k]
                        orow = out[0, t, d0:d1]
                        for i in range(w):
                            x = s[i]
                            y = co[i]
                            orow[i] += cv * x
                            s[i] = x * cwr[i] + y * swr[i]
                            co[i] = y * cwr[i] - x * swr[i]
                    else:
                        for b in range(B):
                            cv = c[b, t, k]
                            orow = out[b, t, d0:d1]
                            for i in range(w):
                                orow[i] += cv * s[i]
                        for i in range(w):
                            x = s[i]
                            y = co[i]
                            s[i] = x * cwr[i] + y * swr[i]
                            co[i] = y * cwr[i] - x * swr[i]

    @njit(**opts)
    def backward(c, g, amp, cw, sw, anc_s, anc_c, wpos, t0, n, dc, da, dpc, dfc, need_c, need_p):
        # da, dpc, dfc are float64: each anchor stretch (at most ANCHOR positions) is summed in fp32, then added there
        B, L, K = c.shape
        D = amp.shape[1]
        nb = (n + ANCHOR - 1) // ANCHOR
        for k in prange(K):
            ar = amp[k]
            cwr = cw[k]
            swr = sw[k]
            dar = da[k]
            dpr = dpc[k]
            dfr = dfc[k]
            s = np.empty(D, np.float32)  # sin, cos of row k's atoms at position t (without A)
            co = np.empty(D, np.float32)
            q = np.empty(D, np.float32)  # Q[t, k, :] = sum_b C[b, t, k] G[b, t, :]
            sa = np.empty(D, np.float32)  # this stretch's sums of Q sin, Q cos, Q cos w
            sp = np.empty(D, np.float32)
            sf = np.empty(D, np.float32)
            for j in range(nb):
                ta = t0 + j * ANCHOR
                tb = min(t0 + n, ta + ANCHOR)
                sr = anc_s[j, k]
                cr = anc_c[j, k]
                for d in range(D):
                    s[d] = sr[d]
                    co[d] = cr[d]
                    sa[d] = 0.0
                    sp[d] = 0.0
                    sf[d] = 0.0
                for t in range(ta, tb):
                    wt = wpos[t]
                    if B == 1 and need_p:  # one pass: dC, Q and the three sums, then the rotation
                        cv = c[0, t, k]
                        grow = g[0, t]
                        acc = np.float32(0.0)
                        for d in range(D):
                            x = s[d]
                            y = co[d]
                            gd = grow[d]
                            acc += gd * ar[d] * x
                            qd = cv * gd
                            sa[d] += qd * x
                            qc = qd * y
                            sp[d] += qc
                            sf[d] += qc * wt
                            s[d] = x * cwr[d] + y * swr[d]
                            co[d] = y * cwr[d] - x * swr[d]
                        if need_c:
                            dc[0, t, k] = acc
                        continue
                    if need_c:
                        for b in range(B):
                            grow = g[b, t]
                            acc = np.float32(0.0)
                            for d in range(D):
                                acc += grow[d] * ar[d] * s[d]
                            dc[b, t, k] = acc
                    if need_p:
                        cv = c[0, t, k]
                        grow = g[0, t]
                        for d in range(D):
                            q[d] = cv * grow[d]
                        for b in range(1, B):
                            cv = c[b, t, k]
                            grow = g[b, t]
                            for d in range(D):
                                q[d] += cv * grow[d]
                        for d in range(D):
                            x = s[d]
                            y = co[d]
                            sa[d] += q[d] * x
                            qc = q[d] * y
                            sp[d] += qc
                            sf[d] += qc * wt
                            s[d] = x * cwr[d] + y * swr[d]
                            co[d] = y * cwr[d] - x * swr[d]
                    else:
                        for d in range(D):
                            x = s[d]
                            y = co[d]
                            s[d] = x * cwr[d] + y * swr[d]
                            co[d] = y * cwr[d] - x * swr[d]
                if need_p:
                    for d in range(D):
                        dar[d] += sa[d]
                        dpr[d] += sp[d]
                        dfr[d] += sf[d]

    @njit(**opts)
    def rotate_block(s, co, amp, cw, sw, n, out_s):
        # out_s[t, k, :] = A sin at the state's position + t, for t < n; the state (s, co) ends n steps on
        K, D = s.shape
        for k in prange(K):
            sr = s[k]
            cr = co[k]
            ar = amp[k]
            cwr = cw[k]
            swr = sw[k]
            for t in range(n):
                orow = out_s[t, k]
                for d in range(D):
                    x = sr[d]
                    y = cr[d]
                    orow[d] = ar[d] * x
                    sr[d] = x * cwr[d] + y * swr[d]
                    cr[d] = y * cwr[d] - x * swr[d]

    @njit(**opts)
    def param_sums(q, s, co, cw, sw, wpos, t0, da, dpc, dfc):
        # da += sum_t Q sin, dpc += sum_t Q cos, dfc += sum_t Q cos w_t over q (n, K, D), n within one anchor stretch:
        # summed in fp32, added to the float64 da, dpc, dfc; the state ends n steps on
        n, K, D = q.shape
        for k in prange(K):
            sr = s[k]
            cr = co[k]
            cwr = cw[k]
            swr = sw[k]
            sa = np.zeros(D, np.float32)
            sp = np.zeros(D, np.float32)
            sf = np.zeros(D, np.float32)
            for t in range(n):
                qr = q[t, k]
                wt = wpos[t0 + t]
                for d in range(D):
                    x = sr[d]
                    y = cr[d]
                    qd = qr[d]
                    sa[d] += qd * x
                    qc = qd * y
                    sp[d] += qc
                    sf[d] += qc * wt
                    sr[d] = x * cwr[d] + y * swr[d]
                    cr[d] = y * cwr[d] - x * swr[d]
            dar = da[k]
            dpr = dpc[k]
            dfr = dfc[k]
            for d in range(D):
                dar[d] += sa[d]
                dpr[d] += sp[d]
                dfr[d] += sf[d]

    # numba's threading layer starts at its first set_num_threads or parallel call, and its OpenMP layer then sets
    # the OpenMP thread count of the whole process, which is torch's intra-op count too (1 became the core count,
    # with numba 0.68 and torch 2.13): a job's thread setting was lost, and a process whose first decoder call came
    # later than another's computed the rest of its run with other reduction orders. Start it here, once, and give
    # torch its count back.
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    torch.set_num_threads(threads)
    return numba, anchors, forward, backward, rotate_block, param_sums
