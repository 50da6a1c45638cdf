"""Argument checks of the native ops (``csrc/ops/<op>.cpp``), their fake kernels
(``tg_rapidalign/ops/native_meta.py``) and the capability constants of ``_C``.

Bad arguments go to the ops directly (``torch.ops.tg_rapidalign.*``), all in one
subprocess, so that a crash fails the tests instead of killing pytest; the
subprocess reports one JSON line per case.
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tg_rapidalign.ops import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="native extension not built")

CUDA = torch.cuda.is_available()

# Valid arguments of each op, as Python source run in the subprocess; every case
# below calls one op with some of them replaced (a keyword of the helper).
PRELUDE = textwrap.dedent("""
    import json, sys
    import torch
    from tg_rapidalign import _C
    from tg_rapidalign.ops import native  # noqa: F401  (registers the fake kernels)

    torch.manual_seed(0)
    ops = torch.ops.tg_rapidalign
    f64, f32, i64 = torch.float64, torch.float32, torch.int64
    a, b = torch.rand(6, 3, dtype=f64), torch.rand(5, 3, dtype=f64)
    cb, grad = torch.rand(5, 2, dtype=f64), torch.rand(6, 2, dtype=f64)
    ba, bb = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 1, 1])
    s, c = torch.tensor([0.3, 0.5], dtype=f64), torch.tensor([1.0, 0.5], dtype=f64)
    q, p = torch.rand(6, dtype=f64), torch.rand(5, dtype=f64)
    R, t = torch.eye(3, dtype=f64).repeat(2, 1, 1), torch.zeros(2, 3, dtype=f64)
    S = torch.rand(4, 3, 3, dtype=f64)
    E3 = torch.empty(0, 3, dtype=f64)
    E = torch.empty(0, dtype=i64)
    many = _C.MAX_BANDS + 1

    def call(op, defaults, kw):
        args = dict(defaults)
        for key in kw:
            if key not in args:
                raise KeyError(key)
        args.update(kw)
        return getattr(ops, op)(*args.values())

    def rs(**kw):
        return call("kernel_row_sums", dict(a=a, b=b, cb=cb, batch_a=ba, batch_b=bb, sigmas=s, coefs=c,
                                            cutoff=0.5, num_graphs=2), kw)

    def rsb(**kw):
        return call("kernel_row_sums_backward", dict(grad=grad, a=a, b=b, cb=cb, batch_a=ba, batch_b=bb,
                                                     sigmas=s, coefs=c, cutoff=0.5, num_graphs=2, need_a=True,
                                                     need_b=True), kw)

    def rp(**kw):
        return call("radius_pairs", dict(x=a, y=b, r=0.5, batch_x=ba, batch_y=bb, num_graphs=2), kw)

    def es(**kw):
        return call("estep_moments", dict(x=a, y=b, q=q, p=p, batch_x=ba, batch_y=bb, R=R, t=t,
                                          sigmas=s[:1], coefs=c[:1], cutoff=0.5, num_graphs=2), kw)

    def pol(**kw):
        return call("special_polar3", dict(S=S), kw)

    # On CUDA ids are not scanned: rows with ids outside [0, num_graphs) come out
    # zero (no pairs) and sources with such ids are never read.
    def cuda_bad_ids_rows():
        bad_a, bad_b = torch.tensor([0, 0, 0, 1, 1, 7]), torch.tensor([0, -3, 1, 1, 9])
        got = rs(a=a.cuda(), b=b.cuda(), cb=cb.cuda(), batch_a=bad_a.cuda(), batch_b=bad_b.cuda(),
                 sigmas=s.cuda(), coefs=c.cuda()).cpu()
        keep = torch.tensor([0, 2, 3])
        want = rs(b=b[keep], cb=cb[keep], batch_b=bb[keep])
        want[5] = 0
        return bool(torch.allclose(got, want, rtol=1e-12, atol=1e-14))

    def cuda_bad_ids_pairs():
        bad_x, bad_y = torch.tensor([-1, 0, 0, 1, 1, 5]), torch.tensor([0, 0, 1, 1, 2])
        got = rp(x=a.cuda(), y=b.cuda(), r=2.0, batch_x=bad_x.cuda(), batch_y=bad_y.cuda()).cpu()
        want = rp(r=2.0)
        want = want[:, (want[0] > 0) & (want[0] < 5) & (want[1] < 4)]
        return sorted(map(tuple, got.t().tolist())) == sorted(map(tuple, want.t().tolist()))

    def shapes(out):
        if isinstance(out, (tuple, list)):
            return [list(o.shape) for o in out]
        return list(out.shape)
""")

DRIVER = textwrap.dedent("""
    for name, expr in CASES:
        print(json.dumps({"name": name, "status": "start"}), flush=True)
        try:
            value = eval(expr)
        except Exception as err:  # noqa: BLE001
            msg = str(err).splitlines()[0] if str(err) else ""
            print(json.dumps({"name": name, "status": "raised", "type": type(err).__name__,
                              "mro": [k.__name__ for k in type(err).__mro__], "message": msg}), flush=True)
        else:
            print(json.dumps({"name": name, "status": "ok", "value": value}), flush=True)
""")

# (name, expression, the start of the expected message: "<op>: <argument>").
BAD = [
    # kernel_row_sums
    ("rs_batch_a_short", "rs(batch_a=ba[:5])", "kernel_row_sums: batch_a"),
    ("rs_batch_b_long", "rs(batch_b=torch.zeros(6, dtype=i64))", "kernel_row_sums: batch_b"),
    ("rs_batch_a_2d", "rs(batch_a=ba.view(2, 3))", "kernel_row_sums: batch_a"),
    ("rs_batch_int32", "rs(batch_a=ba.int())", "kernel_row_sums: batch_a"),
    ("rs_batch_float", "rs(batch_b=bb.double())", "kernel_row_sums: batch_b"),
    ("rs_no_graphs", "rs(num_graphs=0)", "kernel_row_sums: num_graphs"),
    ("rs_negative_graphs", "rs(num_graphs=-1)", "kernel_row_sums: num_graphs"),
    ("rs_id_too_large", "rs(batch_a=ba + 1)", "kernel_row_sums: batch_a"),
    ("rs_id_huge", "rs(batch_a=torch.full((6,), 2**40))", "kernel_row_sums: batch_a"),
    ("rs_id_negative", "rs(batch_b=bb - 1)", "kernel_row_sums: batch_b"),
    ("rs_unsorted", "rs(batch_a=ba.flip(0))", "kernel_row_sums: batch_a"),
    ("rs_a_2d_points", "rs(a=a[:, :2].contiguous())", "kernel_row_sums: a"),
    ("rs_a_4d_points", "rs(a=torch.rand(6, _C.MAX_DIM + 1, dtype=f64))", "kernel_row_sums: a"),
    ("rs_a_1d", "rs(a=a.flatten())", "kernel_row_sums: a"),
    ("rs_a_int", "rs(a=a.long())", "kernel_row_sums: a"),
    ("rs_a_half", "rs(a=a.half())", "kernel_row_sums: a"),
    ("rs_b_dtype", "rs(b=b.float())", "kernel_row_sums: b"),
    ("rs_cb_rows", "rs(cb=cb[:4])", "kernel_row_sums: cb"),
    ("rs_cb_1d", "rs(cb=cb[:, 0].contiguous())", "kernel_row_sums: cb"),
    ("rs_cb_dtype", "rs(cb=cb.float())", "kernel_row_sums: cb"),
    ("rs_coefs_length", "rs(coefs=c[:1])", "kernel_row_sums: coefs"),
    ("rs_sigmas_2d", "rs(sigmas=s.view(1, 2), coefs=c.view(1, 2))", "kernel_row_sums: sigmas"),
    ("rs_no_bands", "rs(sigmas=s[:0], coefs=c[:0])", "kernel_row_sums: sigmas"),
    ("rs_too_many_bands", "rs(sigmas=torch.rand(many, dtype=f64), coefs=torch.rand(many, dtype=f64))",
     "kernel_row_sums: sigmas"),
    ("rs_sigmas_dtype", "rs(sigmas=s.float())", "kernel_row_sums: sigmas"),
    ("rs_coefs_dtype", "rs(coefs=c.float())", "kernel_row_sums: sigmas and coefs"),
    ("rs_cutoff_nan", "rs(cutoff=float('nan'))", "kernel_row_sums: cutoff"),
    # kernel_row_sums_backward: its own argument, and the shared ones
    ("rsb_grad_rows", "rsb(grad=grad[:5])", "kernel_row_sums_backward: grad"),
    ("rsb_grad_channels", "rsb(grad=torch.rand(6, 3, dtype=f64))", "kernel_row_sums_backward: grad"),
    ("rsb_grad_1d", "rsb(grad=grad[:, 0].contiguous())", "kernel_row_sums_backward: grad"),
    ("rsb_grad_dtype", "rsb(grad=grad.float())", "kernel_row_sums_backward: grad"),
    ("rsb_batch_b_short", "rsb(batch_b=bb[:4])", "kernel_row_sums_backward: batch_b"),
    ("rsb_id_too_large", "rsb(batch_b=bb + 5)", "kernel_row_sums_backward: batch_b"),
    ("rsb_unsorted", "rsb(batch_b=bb.flip(0))", "kernel_row_sums_backward: batch_b"),
    ("rsb_no_graphs", "rsb(num_graphs=0)", "kernel_row_sums_backward: num_graphs"),
    ("rsb_too_many_bands", "rsb(sigmas=torch.rand(many, dtype=f64), coefs=torch.rand(many, dtype=f64))",
     "kernel_row_sums_backward: sigmas"),
    ("rsb_cb_rows", "rsb(cb=cb[:3])", "kernel_row_sums_backward: cb"),
    ("rsb_b_dims", "rsb(b=b[:, :2].contiguous())", "kernel_row_sums_backward: b"),
    # radius_pairs
    ("rp_x_dims", "rp(x=a[:, :2].contiguous())", "radius_pairs: x"),
    ("rp_y_dtype", "rp(y=b.float())", "radius_pairs: y"),
    ("rp_x_int", "rp(x=a.long(), y=b.long())", "radius_pairs: x"),
    ("rp_batch_x_short", "rp(batch_x=ba[:2])", "radius_pairs: batch_x"),
    ("rp_batch_y_dtype", "rp(batch_y=bb.int())", "radius_pairs: batch_y"),
    ("rp_no_graphs", "rp(num_graphs=0)", "radius_pairs: num_graphs"),
    ("rp_id_too_large", "rp(batch_y=bb + 2)", "radius_pairs: batch_y"),
    ("rp_id_negative", "rp(batch_x=ba - 3)", "radius_pairs: batch_x"),
    ("rp_unsorted", "rp(batch_x=ba.flip(0))", "radius_pairs: batch_x"),
    ("rp_r_negative", "rp(r=-1.0)", "radius_pairs: r"),
    ("rp_r_nan", "rp(r=float('nan'))", "radius_pairs: r"),
    # estep_moments
    ("es_x_dims", "es(x=a[:, :2].contiguous())", "estep_moments: x"),
    ("es_y_dtype", "es(y=b.float())", "estep_moments: y"),
    ("es_q_length", "es(q=q[:5])", "estep_moments: q"),
    ("es_p_2d", "es(p=p.view(5, 1))", "estep_moments: p"),
    ("es_q_dtype", "es(q=q.float())", "estep_moments: q"),
    ("es_R_2d", "es(R=R[:, 0].contiguous())", "estep_moments: R"),
    ("es_R_graphs", "es(R=R[:1])", "estep_moments: R"),
    ("es_R_dtype", "es(R=R.float())", "estep_moments: R"),
    ("es_t_graphs", "es(t=torch.zeros(3, 3, dtype=f64))", "estep_moments: t"),
    ("es_t_width", "es(t=torch.zeros(2, 2, dtype=f64))", "estep_moments: t"),
    ("es_two_bands", "es(sigmas=s, coefs=c)", "estep_moments: sigmas"),
    ("es_coefs_length", "es(coefs=c)", "estep_moments: coefs"),
    ("es_batch_x_short", "es(batch_x=ba[:5])", "estep_moments: batch_x"),
    ("es_unsorted", "es(batch_x=ba.flip(0))", "estep_moments: batch_x"),
    ("es_id_too_large", "es(batch_y=bb + 1)", "estep_moments: batch_y"),
    ("es_no_graphs", "es(num_graphs=0, R=R[:0], t=t[:0])", "estep_moments: num_graphs"),
    ("es_negative_graphs", "es(num_graphs=-1)", "estep_moments: num_graphs"),
    # special_polar3
    ("pol_2d", "pol(S=S[:, 0].contiguous())", "special_polar3: S"),
    ("pol_3x4", "pol(S=torch.rand(4, 3, 4, dtype=f64))", "special_polar3: S"),
    ("pol_int", "pol(S=S.long())", "special_polar3: S"),
]
if CUDA:
    BAD += [
        ("rs_device", "rs(b=b.cuda())", "kernel_row_sums: b"),
        ("rs_device_batch", "rs(a=a.cuda(), b=b.cuda(), cb=cb.cuda(), sigmas=s.cuda(), coefs=c.cuda())",
         "kernel_row_sums: batch_a"),
        ("rsb_device", "rsb(grad=grad.cuda(), a=a.cuda(), b=b.cuda(), cb=cb.cuda(), batch_a=ba.cuda(), "
                       "batch_b=bb.cuda(), sigmas=s.cuda())", "kernel_row_sums_backward: coefs"),
        ("rp_device", "rp(x=a.cuda(), y=b.cuda(), batch_x=ba.cuda())", "radius_pairs: batch_y"),
        ("rp_cuda_batch_short", "rp(x=a.cuda(), y=b.cuda(), batch_x=ba[:5].cuda(), batch_y=bb.cuda())",
         "radius_pairs: batch_x"),
        # No CUDA kernel: the dispatcher refuses (see csrc/ops/estep_moments.cpp).
        ("es_cuda", "es(x=a.cuda(), y=b.cuda(), q=q.cuda(), p=p.cuda(), batch_x=ba.cuda(), "
                    "batch_y=bb.cuda(), R=R.cuda(), t=t.cuda(), sigmas=s[:1].cuda(), coefs=c[:1].cuda())",
         "estep_moments"),
    ]

# Valid calls, empty ones included: (name, expression, expected value).
GOOD = [
    ("rs_valid", "shapes(rs())", [6, 2]),
    ("rs_all_empty", "shapes(rs(a=E3, b=E3, cb=cb[:0], batch_a=E, batch_b=E, num_graphs=0))", [0, 2]),
    ("rs_no_rows", "shapes(rs(a=E3, batch_a=E))", [0, 2]),
    ("rs_no_sources_zero", "bool((rs(b=E3, cb=cb[:0], batch_b=E) == 0).all())", True),
    ("rs_no_channels", "shapes(rs(cb=cb[:, :0]))", [6, 0]),
    ("rs_empty_graph", "shapes(rs(batch_a=ba + 1, batch_b=bb + 1, num_graphs=3))", [6, 2]),
    ("rs_max_bands", "shapes(rs(sigmas=torch.rand(_C.MAX_BANDS, dtype=f64) + 0.1, "
                     "coefs=torch.rand(_C.MAX_BANDS, dtype=f64)))", [6, 2]),
    ("rs_no_cutoff", "shapes(rs(cutoff=-1.0))", [6, 2]),
    ("rsb_all_empty", "shapes(rsb(grad=grad[:0], a=E3, b=E3, cb=cb[:0], batch_a=E, batch_b=E, num_graphs=0))",
     [[0, 3], [0, 3], [0, 2], [2], [2]]),
    ("rsb_no_rows", "shapes(rsb(grad=grad[:0], a=E3, batch_a=E))", [[0, 3], [5, 3], [5, 2], [2], [2]]),
    ("rp_all_empty", "shapes(rp(x=E3, y=E3, batch_x=E, batch_y=E, num_graphs=0))", [2, 0]),
    ("rp_no_queries", "shapes(rp(x=E3, batch_x=E))", [2, 0]),
    ("rp_r_zero", "rp(r=0.0).shape[0]", 2),
    ("es_all_empty", "shapes(es(x=E3, y=E3, q=q[:0], p=p[:0], batch_x=E, batch_y=E, R=R[:0], t=t[:0], "
                     "num_graphs=0))", [0, 18]),
    ("es_empty_side_zero", "bool((es(y=E3, p=p[:0], batch_y=E) == 0).all())", True),
    ("es_empty_graph", "shapes(es(batch_x=ba + 1, batch_y=bb + 1, R=R[:1].repeat(3, 1, 1), "
                       "t=t[:1].repeat(3, 1), num_graphs=3))", [3, 18]),
    ("pol_empty", "shapes(pol(S=S[:0]))", [0, 3, 3]),
    ("pol_float32", "pol(S=S.float()).dtype == torch.float32", True),
    # Strided (non-contiguous) inputs are taken, with the same results.
    ("rs_strided", "bool(torch.equal(rs(a=torch.cat([a, a], 1)[:, 3:], cb=torch.cat([cb, cb], 1)[:, 2:], "
                   "batch_a=torch.stack([ba, ba], 1)[:, 0]), rs()))", True),
    ("rsb_expanded_grad", "all(bool(torch.equal(u, v)) for u, v in zip(rsb(grad=torch.ones(1, 1, dtype=f64)"
                          ".expand(6, 2)), rsb(grad=torch.ones(6, 2, dtype=f64))))", True),
    ("rp_strided", "bool(torch.equal(rp(x=torch.cat([a, a], 1)[:, 3:]), rp()))", True),
    ("pol_strided", "bool(torch.equal(pol(S=S.transpose(1, 2)), pol(S=S.transpose(1, 2).contiguous())))",
     True),
]
if CUDA:
    GOOD += [
        ("rs_cuda_bad_ids", "cuda_bad_ids_rows()", True),
        ("rp_cuda_bad_ids", "cuda_bad_ids_pairs()", True),
        ("rs_cuda_all_empty", "shapes(rs(a=E3.cuda(), b=E3.cuda(), cb=cb[:0].cuda(), batch_a=E.cuda(), "
                              "batch_b=E.cuda(), sigmas=s.cuda(), coefs=c.cuda(), num_graphs=0))", [0, 2]),
    ]


@pytest.fixture(scope="module")
def results():
    cases = [(name, expr) for name, expr, _ in BAD + GOOD]
    script = PRELUDE + f"\nCASES = {json.dumps(cases)}\n" + DRIVER
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    out, last = {}, None
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        last = rec["name"]
        if rec["status"] != "start":
            out[rec["name"]] = rec
    if proc.returncode != 0:
        pytest.fail(f"the subprocess died (exit code {proc.returncode}) in case {last!r}:\n"
                    f"{proc.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("name,expr,expect", BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_raise_naming_the_argument(results, name, expr, expect):
    rec = results[name]
    assert rec["status"] == "raised", f"{expr} did not raise"
    assert {"RuntimeError", "ValueError"} & set(rec["mro"]), rec
    assert rec["message"].startswith(expect) or expect in rec["message"], rec["message"]


@pytest.mark.parametrize("name,expr,want", GOOD, ids=[c[0] for c in GOOD])
def test_valid_and_empty_arguments_work(results, name, expr, want):
    rec = results[name]
    assert rec["status"] == "ok", rec
    assert rec["value"] == want


def test_extension_constants():
    from tg_rapidalign import _C

    names = ("MAX_BANDS", "MAX_DIM", "GRAPH_SCAN_POINTS", "ESTEP_GRAPH_POINTS", "WITH_CUDA", "ESTEP_CUDA")
    values = {name: getattr(_C, name) for name in names}
    assert all(type(v) is int for v in values.values()), values
    assert values["MAX_DIM"] == 3 and values["MAX_BANDS"] >= 1
    assert values["GRAPH_SCAN_POINTS"] >= 1 and values["ESTEP_GRAPH_POINTS"] >= 1
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("tg_rapidalign::kernel_row_sums", "CUDA")
    assert values["WITH_CUDA"] == int(has_cuda)
    # estep_moments is CPU-only, and says so both ways.
    assert values["ESTEP_CUDA"] == 0
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("tg_rapidalign::estep_moments", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("tg_rapidalign::estep_moments", "CPU")


def _dense_row_sums(a, b, cb, ba, bb, sigmas, coefs, r):
    d2 = (a[:, None] - b[None]).pow(2).sum(-1)
    k = (coefs * torch.exp(-d2[..., None] / (2 * sigmas**2))).sum(-1)
    k = k * ((ba[:, None] == bb[None]) & (d2 <= r * r))
    return k @ cb


def test_bands_up_to_max_bands_agree_with_dense():
    from tg_rapidalign import _C

    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(30, 3, dtype=torch.float64, generator=gen), torch.rand(20, 3, dtype=torch.float64,
                                                                             generator=gen)
    ba, bb = torch.arange(30) // 15, torch.arange(20) // 10
    cb = torch.rand(20, 2, dtype=torch.float64, generator=gen)
    sigmas = torch.linspace(0.1, 0.8, _C.MAX_BANDS, dtype=torch.float64)
    coefs = torch.rand(_C.MAX_BANDS, dtype=torch.float64, generator=gen)
    out = torch.ops.tg_rapidalign.kernel_row_sums(a, b, cb, ba, bb, sigmas, coefs, 0.75, 2)
    r = 0.75 * float(sigmas.max())  # the op's radius: the cutoff in units of the widest band
    assert torch.allclose(out, _dense_row_sums(a, b, cb, ba, bb, sigmas, coefs, r), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("channels", [1, 2, 4, 5])
def test_row_sums_agree_across_the_graph_scan_limit(channels):
    """Graphs of GRAPH_SCAN_POINTS points take the per-graph scan (tiles), one more
    point the grid; both agree with the dense sums, for specialised and generic
    channel counts."""
    from tg_rapidalign import _C

    gen = torch.Generator().manual_seed(channels)
    n = _C.GRAPH_SCAN_POINTS
    for sizes in ([n, n - 3], [n + 1, 7]):
        a = torch.rand(sum(sizes), 3, dtype=torch.float64, generator=gen) * 4
        batch = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes))
        w = torch.rand(len(a), channels, dtype=torch.float64, generator=gen)
        s, c = torch.tensor([0.4], dtype=torch.float64), torch.tensor([1.3], dtype=torch.float64)
        out = torch.ops.tg_rapidalign.kernel_row_sums(a, a, w, batch, batch, s, c, 2.25, 2)
        r = 2.25 * float(s.max())  # the op's radius
        assert torch.allclose(out, _dense_row_sums(a, a, w, batch, batch, s, c, r), rtol=1e-12, atol=1e-13)


def _fake_inputs():
    f64 = torch.float64
    return dict(a=torch.empty(6, 3, dtype=f64), b=torch.empty(5, 3, dtype=f64),
                cb=torch.empty(5, 2, dtype=f64), ba=torch.zeros(6, dtype=torch.long),
                bb=torch.zeros(5, dtype=torch.long), s=torch.ones(2, dtype=f64), c=torch.ones(2, dtype=f64),
                grad=torch.empty(6, 2, dtype=f64), q=torch.empty(6, dtype=f64), p=torch.empty(5, dtype=f64),
                R=torch.empty(1, 3, 3, dtype=f64), t=torch.empty(1, 3, dtype=f64))


def _rs(v, ops, **kw):
    args = dict(a=v["a"], b=v["b"], cb=v["cb"], batch_a=v["ba"], batch_b=v["bb"], sigmas=v["s"],
                coefs=v["c"], cutoff=0.5, num_graphs=1)
    args.update(kw)
    return ops.kernel_row_sums(*args.values())


def _es(v, ops, **kw):
    args = dict(x=v["a"], y=v["b"], q=v["q"], p=v["p"], batch_x=v["ba"], batch_y=v["bb"], R=v["R"], t=v["t"],
                sigmas=v["s"][:1], coefs=v["c"][:1], cutoff=0.5, num_graphs=1)
    args.update(kw)
    return ops.estep_moments(*args.values())


FAKE_BAD = [
    ("kernel_row_sums: batch_a", lambda v, ops: _rs(v, ops, batch_a=v["ba"][:5])),
    ("kernel_row_sums: cb", lambda v, ops: _rs(v, ops, cb=v["cb"][:4])),
    ("kernel_row_sums: coefs", lambda v, ops: _rs(v, ops, coefs=v["c"][:1])),
    ("kernel_row_sums: b", lambda v, ops: _rs(v, ops, b=v["b"].float())),
    ("kernel_row_sums: num_graphs", lambda v, ops: _rs(v, ops, num_graphs=0)),
    ("kernel_row_sums: sigmas", lambda v, ops: _rs(v, ops, sigmas=v["s"][:0], coefs=v["c"][:0])),
    ("kernel_row_sums_backward: grad", lambda v, ops: ops.kernel_row_sums_backward(
        v["grad"][:, :1], v["a"], v["b"], v["cb"], v["ba"], v["bb"], v["s"], v["c"], 0.5, 1, True, True)),
    ("radius_pairs: y", lambda v, ops: ops.radius_pairs(v["a"], v["b"][:, :2], 0.5, v["ba"], v["bb"], 1)),
    ("radius_pairs: batch_y",
     lambda v, ops: ops.radius_pairs(v["a"], v["b"], 0.5, v["ba"], v["bb"].int(), 1)),
    ("estep_moments: R", lambda v, ops: _es(v, ops, num_graphs=2)),
    ("estep_moments: sigmas", lambda v, ops: _es(v, ops, sigmas=v["s"], coefs=v["c"])),
    ("estep_moments: q", lambda v, ops: _es(v, ops, q=v["p"])),
    ("special_polar3: S", lambda v, ops: ops.special_polar3(v["R"][:, :2])),
]


@pytest.mark.parametrize("expect,call", FAKE_BAD, ids=[c[0] for c in FAKE_BAD])
def test_fake_kernels_check_shapes(expect, call):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        v = _fake_inputs()
        with pytest.raises((RuntimeError, ValueError), match=expect):
            call(v, torch.ops.tg_rapidalign)


def test_fake_kernels_accept_what_the_ops_take():
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = torch.ops.tg_rapidalign
    with FakeTensorMode():
        v = _fake_inputs()
        assert _rs(v, ops).shape == (6, 2)
        assert _es(v, ops, cutoff=-1.0).shape == (1, 18)
        empty, none = torch.empty(0, 3, dtype=torch.float64), torch.empty(0, dtype=torch.long)
        assert _rs(v, ops, a=empty, b=empty, cb=v["cb"][:0], batch_a=none, batch_b=none,
                   num_graphs=0).shape == (0, 2)


def test_opcheck_on_good_inputs():
    gen = torch.Generator().manual_seed(2)
    f64 = torch.float64
    a, b = torch.rand(7, 3, dtype=f64, generator=gen), torch.rand(6, 3, dtype=f64, generator=gen)
    ba, bb = torch.tensor([0, 0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 1, 1, 1, 2])
    cb, grad = torch.rand(6, 4, dtype=f64, generator=gen), torch.rand(7, 4, dtype=f64, generator=gen)
    s, c = torch.tensor([0.4], dtype=f64), torch.tensor([1.2], dtype=f64)
    q, p = torch.rand(7, dtype=f64, generator=gen), torch.rand(6, dtype=f64, generator=gen)
    R, t = torch.eye(3, dtype=f64).repeat(3, 1, 1), torch.zeros(3, 3, dtype=f64)
    ops = torch.ops.tg_rapidalign
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(ops.kernel_row_sums, (a, b, cb, ba, bb, s, c, 0.5, 3), test_utils=utils)
    torch.library.opcheck(ops.kernel_row_sums_backward, (grad, a, b, cb, ba, bb, s, c, 0.5, 3, True, True),
                          test_utils=utils)
    torch.library.opcheck(ops.radius_pairs, (a, b, 0.5, ba, bb, 3), test_utils=utils)
    torch.library.opcheck(ops.estep_moments, (a, b, q, p, ba, bb, R, t, s, c, 0.5, 3), test_utils=utils)
    S = torch.rand(5, 3, 3, dtype=f64, generator=gen)
    torch.library.opcheck(ops.special_polar3, (S,), test_utils=utils)
