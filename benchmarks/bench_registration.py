"""Unpaired rigid registration: tg_rapidalign's AlignToReference against the
peers that are installed, on drug-like molecules and ~2,000-point surface
clouds, four tasks each, seeded.

    OMP_NUM_THREADS=1 python benchmarks/bench_registration.py             # 20 instances per cell
    python benchmarks/bench_registration.py --instances 5 --methods tg_rapidalign,icp
    python benchmarks/bench_registration.py --json results.json

Data (all seeded, one thread):

* molecules: RDKit ETKDG conformers (hydrogens included) of 30 drug-like SMILES
  with 20-49 atoms (needs rdkit); the moved copy holds the same atoms, shuffled;
* clouds: 2,000 points sampled on random asymmetric surfaces (star-shaped
  surfaces with random low-order bumps, anisotropically scaled and sheared);
  the moved cloud is an independent sample of the same surface.

Tasks: ``clean`` (any rotation), ``noisy`` (Gaussian noise of 5 % of the RMS
radius on the moved copy, any rotation), ``crop`` (30 % of the moved copy cut
off by a random plane plus uniform outliers, 10 % of the kept count, in the
kept part's bounding box; any rotation) and ``crop_small`` (the same with a
rotation angle below 30 degrees). Success: rotation error < 2 degrees.

Peers (each only when installed, the optional ``[bench]`` extra): pycpd rigid
CPD, probreg CPD and FilterReg, Open3D point-to-point ICP (from the centroid
alignment) and RANSAC on FPFH features followed by ICP. Figures vary between
runs and machines.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

SMILES = [
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "CC(=O)Nc1ccc(O)cc1", "CN1CCC[C@H]1c1cccnc1",
    "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "COc1ccc2[nH]cc(CCN(C)C)c2c1",
    "CCN(CC)CC(=O)Nc1c(C)cccc1C", "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1", "OC(=O)Cc1ccccc1Nc1c(Cl)cccc1Cl",
    "CC(C)NCC(O)COc1cccc2ccccc12", "CN(C)CCCN1c2ccccc2CCc2ccccc12", "O=C(O)c1ccccc1O",
    "NC(=O)c1cccnc1", "CC1=C(C(=O)OC)C(c2cccc(c2)[N+](=O)[O-])C(C(=O)OC)=C1C",
    "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1", "Cc1ccccc1NC(=O)C(C)N1CCCC1", "COc1ccc(CC(C)N)cc1",
    "OCC1OC(O)C(O)C(O)C1O", "CCOC(=O)C1=C(C)NC(C)=C(C1c1ccccc1Cl)C(=O)OC", "c1ccc2c(c1)ccc1ccccc12",
    "CC(=O)OCC[N+](C)(C)C", "CN1CCN(CC1)C(=O)c1ccc(F)cc1", "Oc1ccc(cc1)C1(c2ccccc2)CCCC1",
    "FC(F)(F)c1ccc(OC2CCNCC2)cc1", "CC(C)Oc1ccc(cc1)C(=O)N1CCOCC1", "Cc1cc(NC(=O)c2ccco2)no1",
    "O=C1CCCN1Cc1ccc(Cl)cc1", "CSc1ccc(cc1)C(=O)CCN1CCCCC1", "NS(=O)(=O)c1ccc(cc1)C(=O)O",
    "COC(=O)c1ccc(NC(=O)C2CC2)cc1",
]
TASKS = ("clean", "noisy", "crop", "crop_small")
METHODS = ("tg_rapidalign", "tg_rapidalign_em", "pycpd", "probreg_cpd", "probreg_filterreg", "icp",
           "ransac_fpfh_icp")


def molecules(count: int, seed: int):
    """Up to ``count`` conformers ``[n, 3]`` (float64) of 20-49 atoms, or [] without rdkit."""
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        return []
    out = []
    for smi in SMILES:
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        if not 20 <= mol.GetNumAtoms() <= 49:
            continue
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        if AllChem.EmbedMolecule(mol, params) != 0:
            continue
        out.append(torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64))
        if len(out) == count:
            break
    return out


def surface(gen: torch.Generator, n: int, shape: dict) -> torch.Tensor:
    """``n`` points on the star-shaped surface ``shape`` (area-weighted by rejection)."""
    pts = []
    while sum(len(p) for p in pts) < n:
        d = torch.randn(4 * n, 3, generator=gen, dtype=torch.float64)
        d = d / d.norm(dim=1, keepdim=True)
        r = 1 + (torch.sin(d @ shape["freq"].T + shape["phase"]) * shape["amp"]).sum(1)
        p = (d * r.unsqueeze(1)) @ shape["mix"].T
        accept = torch.rand(len(p), generator=gen, dtype=torch.float64) < (r / r.max()) ** 2
        pts.append(p[accept])
    return torch.cat(pts)[:n]


def random_shape(gen: torch.Generator) -> dict:
    k = 8
    return {"freq": torch.randn(k, 3, generator=gen, dtype=torch.float64) * 1.8,
            "phase": torch.rand(k, generator=gen, dtype=torch.float64) * 2 * math.pi,
            "amp": 0.1 + 0.15 * torch.rand(k, generator=gen, dtype=torch.float64),
            "mix": torch.diag(torch.tensor([1.4, 1.0, 0.7], dtype=torch.float64))
            + 0.25 * torch.randn(3, 3, generator=gen, dtype=torch.float64)}


def rotation(gen: torch.Generator, max_angle: float = None) -> torch.Tensor:
    from tg_rapidalign.transforms import random_rotation
    if max_angle is None:
        return random_rotation(1, gen)[0]
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm()
    angle = float(torch.rand(1, generator=gen, dtype=torch.float64)) * math.radians(max_angle)
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
                     dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def rms(pos: torch.Tensor) -> float:
    return float((pos - pos.mean(0)).pow(2).sum(1).mean().sqrt())


def corrupt(src: torch.Tensor, task: str, gen: torch.Generator) -> torch.Tensor:
    """The moved copy's points before the motion: noise, or crop and outliers."""
    if task == "noisy":
        return src + 0.05 * rms(src) * torch.randn(src.shape, generator=gen, dtype=torch.float64)
    if task in ("crop", "crop_small"):
        normal = torch.randn(3, generator=gen, dtype=torch.float64)
        order = ((src - src.mean(0)) @ normal).argsort()
        kept = src[order[: int(round(0.7 * len(src)))]]
        lo, hi = kept.min(0).values, kept.max(0).values
        out = lo + (hi - lo) * torch.rand(max(1, len(kept) // 10), 3, generator=gen, dtype=torch.float64)
        return torch.cat([kept, out])
    return src


def instances(kind: str, task: str, count: int, seed: int):
    """``(reference [N, 3], moved [M, 3], R_true)`` with ``reference ~ R_true moved + t`` on the kept part."""
    gen = torch.Generator().manual_seed(seed * 1000 + TASKS.index(task) * 100 + (kind == "clouds"))
    mols = molecules(count, seed) if kind == "molecules" else None
    for k in range(count):
        if kind == "molecules":
            if not mols:
                return
            ref = mols[k % len(mols)]
            src = ref[torch.randperm(len(ref), generator=gen)]
        else:
            shape = random_shape(gen)
            ref, src = surface(gen, 2000, shape), surface(gen, 2000, shape)
        src = corrupt(src, task, gen)
        R = rotation(gen, 30.0 if task == "crop_small" else None)
        t = (torch.rand(3, generator=gen, dtype=torch.float64) * 2 - 1) * rms(ref)
        moved = (src - t) @ R  # ref = R moved + t
        yield ref, moved[torch.randperm(len(moved), generator=gen)], R


def rotation_error(R: np.ndarray, R_true: torch.Tensor) -> float:
    c = (np.trace(np.asarray(R).T @ R_true.numpy()) - 1) / 2
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _tg(ref, moved, method):
    from torch_geometric.data import Data

    from tg_rapidalign.transforms import AlignToReference
    if method == "tg_rapidalign":
        R, _ = AlignToReference(ref, paired=False).pose(Data(pos=moved))
    else:  # the previous default: robust EM from the principal-axes starts
        R, _ = AlignToReference(ref, paired=False, method="em").pose(Data(pos=moved))
    return R.numpy()


def _pycpd(ref, moved):
    from pycpd import RigidRegistration
    reg = RigidRegistration(X=ref.numpy(), Y=moved.numpy(), w=0.1)
    _, (s, R, t) = reg.register()
    return np.asarray(R).T  # pycpd moves Y by Y R + t


def _probreg(ref, moved, kind):
    from probreg import cpd, filterreg
    src, tgt = moved.numpy(), ref.numpy()
    if kind == "cpd":
        res = cpd.registration_cpd(src, tgt, tf_type_name="rigid", w=0.1, update_scale=False)
    else:
        res = filterreg.registration_filterreg(src, tgt, sigma2=None)
    return np.asarray(res.transformation.rot)


def _o3d_cloud(pts):
    import open3d as o3d
    pc = o3d.geometry.PointCloud()
    pc.points = o3d.utility.Vector3dVector(pts.numpy())
    return pc


def _icp(ref, moved, init=None):
    import open3d as o3d
    src, tgt = _o3d_cloud(moved), _o3d_cloud(ref)
    if init is None:
        init = np.eye(4)
        init[:3, 3] = (ref.mean(0) - moved.mean(0)).numpy()
    dist = 0.5 * rms(ref)
    res = o3d.pipelines.registration.registration_icp(
        src, tgt, dist, init, o3d.pipelines.registration.TransformationEstimationPointToPoint(),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=60))
    return res.transformation


def _ransac_fpfh_icp(ref, moved):
    import open3d as o3d
    reg = o3d.pipelines.registration
    voxel = 0.08 * rms(ref)
    clouds = []
    for pts in (moved, ref):
        pc = _o3d_cloud(pts)
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * voxel, max_nn=30))
        search = o3d.geometry.KDTreeSearchParamHybrid(radius=10 * voxel, max_nn=100)
        feat = reg.compute_fpfh_feature(pc, search)
        clouds.append((pc, feat))
    (src, fs), (tgt, ft) = clouds
    o3d.utility.random.seed(0)
    res = reg.registration_ransac_based_on_feature_matching(
        src, tgt, fs, ft, True, 3 * voxel, reg.TransformationEstimationPointToPoint(False), 3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9),
         reg.CorrespondenceCheckerBasedOnDistance(3 * voxel)],
        reg.RANSACConvergenceCriteria(100000, 0.999))
    return _icp(ref, moved, res.transformation)


def run_method(method: str, ref, moved):
    """The rotation ``R`` (numpy ``[3, 3]``) with ``ref ~ R moved + t``."""
    if method.startswith("tg_rapidalign"):
        return _tg(ref, moved, method)
    if method == "pycpd":
        return _pycpd(ref, moved)
    if method.startswith("probreg"):
        return _probreg(ref, moved, method.split("_")[1])
    if method == "icp":
        return np.asarray(_icp(ref, moved))[:3, :3]
    return np.asarray(_ransac_fpfh_icp(ref, moved))[:3, :3]


def available(method: str) -> bool:
    import importlib.util
    need = {"pycpd": "pycpd", "probreg_cpd": "probreg", "probreg_filterreg": "probreg", "icp": "open3d",
            "ransac_fpfh_icp": "open3d"}.get(method)
    return need is None or importlib.util.find_spec(need) is not None


def summarise(errors, times):
    errs = sorted(errors)
    return {"n": len(errs), "success": sum(e < 2.0 for e in errs) / max(len(errs), 1),
            "median_deg": statistics.median(errs) if errs else float("nan"),
            "p90_deg": errs[max(0, int(math.ceil(0.9 * len(errs))) - 1)] if errs else float("nan"),
            "median_s": statistics.median(times) if times else float("nan")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=20, help="instances per (data, task) cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="molecules,clouds")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    skipped = [m for m in methods if not available(m)]
    methods = [m for m in methods if m not in skipped]
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    rows = []
    print(f"{'data':<10} {'task':<11} {'method':<18} {'success':>8} {'median':>8} {'p90':>8} {'time/s':>8}")
    for kind in args.data.split(","):
        for task in args.tasks.split(","):
            cases = list(instances(kind, task, args.instances, args.seed))
            if not cases:
                print(f"{kind:<10} {task:<11} (no data: rdkit missing)")
                continue
            for method in methods:
                errors, times = [], []
                for ref, moved, R_true in cases:
                    start = time.perf_counter()
                    try:
                        R = run_method(method, ref, moved)
                        errors.append(rotation_error(R, R_true))
                    except Exception as exc:  # a peer failing on an input counts as a failure
                        print(f"  {method} failed: {type(exc).__name__}: {exc}")
                        errors.append(180.0)
                    times.append(time.perf_counter() - start)
                row = {"data": kind, "task": task, "method": method, **summarise(errors, times)}
                rows.append(row)
                print(f"{kind:<10} {task:<11} {method:<18} {row['success']:>7.0%} {row['median_deg']:>8.2f} "
                      f"{row['p90_deg']:>8.2f} {row['median_s']:>8.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
