"""Independent dense float64 references used by the tests."""
import torch


def ref_kernel(d2, sigmas, coefs):
    return sum(c * torch.exp(-d2 / (2 * s * s)) for s, c in zip(sigmas, coefs))


def ref_sums(x, y, bx, by, wx, wy, sigmas, coefs=None, r=None, num_graphs=None, tx=None, ty=None,
             beta=0.0):
    """Per-graph (K_XX, K_YY, K_XY) by explicit per-graph loops, in float64; with
    node types ``tx``, ``ty`` the kernel is multiplied by ``beta + (1 - beta) [a = b]``."""
    x, y = x.double(), y.double()
    sigmas = [float(s) for s in sigmas]
    coefs = [1.0] * len(sigmas) if coefs is None else [float(c) for c in coefs]
    bx = torch.zeros(len(x), dtype=torch.long) if bx is None else bx
    by = torch.zeros(len(y), dtype=torch.long) if by is None else by
    wx = torch.ones(len(x), dtype=torch.float64) if wx is None else wx.double()
    wy = torch.ones(len(y), dtype=torch.float64) if wy is None else wy.double()
    if num_graphs is None:
        num_graphs = int(max(bx.max() if len(bx) else -1, by.max() if len(by) else -1)) + 1
    out = torch.zeros(num_graphs, 3, dtype=torch.float64)
    for g in range(num_graphs):
        X, Y = x[bx == g], y[by == g]
        a, b = wx[bx == g], wy[by == g]
        TX = None if tx is None else tx[bx == g]
        TY = None if ty is None else ty[by == g]
        a = a / a.sum() if a.sum() > 0 else a * 0
        b = b / b.sum() if b.sum() > 0 else b * 0

        def K(P, wp, Q, wq, tp, tq):
            if len(P) == 0 or len(Q) == 0:
                return torch.zeros((), dtype=torch.float64)
            d2 = ((P[:, None, :] - Q[None, :, :]) ** 2).sum(-1)
            k = ref_kernel(d2, sigmas, coefs)
            if r is not None:
                k = torch.where(d2 <= r * r, k, torch.zeros_like(k))
            if tp is not None:
                k = k * (beta + (1 - beta) * (tp[:, None] == tq[None, :]).double())
            return wp @ k @ wq

        out[g, 0] = K(X, a, X, a, TX, TX)
        out[g, 1] = K(Y, b, Y, b, TY, TY)
        out[g, 2] = K(X, a, Y, b, TX, TY)
    return out


def ref_mmd(*args, **kwargs):
    s = ref_sums(*args, **kwargs)
    return s[:, 0] + s[:, 1] - 2 * s[:, 2]


def ref_unbiased_mmd(x, y, sigma):
    """Textbook U-statistic for one graph with uniform weights."""
    x, y = x.double(), y.double()
    n, m = len(x), len(y)

    def k(P, Q):
        return torch.exp(-((P[:, None] - Q[None]) ** 2).sum(-1) / (2 * sigma**2))

    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * k(x, y).mean())


def ref_cosine(*args, **kwargs):
    s = ref_sums(*args, **kwargs)
    return s[:, 2] / torch.sqrt(s[:, 0] * s[:, 1])


def brute_pairs(x, y, r, bx=None, by=None):
    bx = torch.zeros(len(x), dtype=torch.long) if bx is None else bx
    by = torch.zeros(len(y), dtype=torch.long) if by is None else by
    out = set()
    for i in range(len(x)):
        for j in range(len(y)):
            if bx[i] == by[j] and float(((x[i] - y[j]) ** 2).sum()) <= r * r:
                out.add((i, j))
    return out


def horn_rotation(S):
    """Horn's quaternion method: the rotation R maximising tr(R^T M) for
    ``S = M^T = sum w (y - ybar)(x - xbar)^T`` (an independent Procrustes solver)."""
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = S.tolist()
    N = torch.tensor([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz]], dtype=torch.float64)
    a, b, c, d = torch.linalg.eigh(N).eigenvectors[:, -1].tolist()
    return torch.tensor([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]], dtype=torch.float64)


def ref_alignment(x, y, wx, wy, sigmas, coefs, r, R, t, iterations, eps=1e-8):
    """One graph, float64, explicit matrices: kernel EM from the pose (R, t) in the
    centred frame. Returns (R, t in the input frame, kappa history, loss)."""
    x, y = x.double(), y.double()
    q, p = wx.double() / wx.sum(), wy.double() / wy.sum()
    mx, my = q @ x, p @ y
    xc, yc = x - mx, y - my

    def matrices(R, t):
        d2 = ((xc[:, None, :] - (yc @ R.T + t)[None, :, :]) ** 2).sum(-1)
        keep = torch.ones_like(d2, dtype=torch.bool) if r is None else d2 <= r * r
        k = ref_kernel(d2, sigmas, coefs) * keep
        mm = ref_kernel(d2, sigmas, [c / s**2 for s, c in zip(sigmas, coefs)]) * keep
        return q[:, None] * k * p[None, :], q[:, None] * mm * p[None, :]

    history = []
    for _ in range(iterations):
        w, mm = matrices(R, t)
        history.append(float(w.sum()))
        mm = mm / mm.sum()
        xbar, ybar = mm.sum(1) @ xc, mm.sum(0) @ yc
        S = sum(mm[i, j] * torch.outer(yc[j] - ybar, xc[i] - xbar)
                for i in range(len(xc)) for j in range(len(yc)))
        R = horn_rotation(S)
        t = xbar - R @ ybar
    w, _ = matrices(R, t)
    kappa = float(w.sum())
    history.append(kappa)

    def self_sum(a, wa):
        d2 = ((a[:, None] - a[None]) ** 2).sum(-1)
        k = ref_kernel(d2, sigmas, coefs) * (torch.ones_like(d2) if r is None else (d2 <= r * r))
        return float(wa @ k @ wa)

    cos = kappa / (self_sum(xc, q) * self_sum(yc, p)) ** 0.5
    loss = -(torch.log(torch.tensor(cos + eps, dtype=torch.float64)) - torch.log1p(torch.tensor(eps)))
    return R, mx + t - R @ my, torch.tensor(history, dtype=torch.float64), float(loss)


def dense_row_sums(a, b, cb, ba, bb, sigmas, coefs, r):
    """Float64 reference: the full kernel matrix, masked to same-graph pairs within r."""
    a, b, cb = a.double().cpu(), b.double().cpu(), cb.double().cpu()
    ba, bb = ba.cpu(), bb.cpu()
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
    k = ref_kernel(d2, [float(s) for s in sigmas], [float(c) for c in coefs])
    keep = ba[:, None] == bb[None]
    if r is not None:
        keep = keep & (d2 <= r * r)
    return (k * keep) @ cb
