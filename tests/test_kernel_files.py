"""Kernel files (io.save_kernel / io.load_kernel): size and value caps, and a
``ValueError`` naming the file and the field for every malformed file."""
import copy
import json

import pytest
import torch

from tg_rapidalign import GaussianKernel, MultiBandGaussianKernel, io, kernel_mmd
from tg_rapidalign.io import MAX_DEPTH, MAX_FILE_BANDS, MAX_FILE_BYTES, _digest, load_kernel, save_kernel
from tg_rapidalign.kernels import LOG_SCALE_LIMIT, LOG_SIGMA_LIMIT, LOGIT_LIMIT


def saved_doc(tmp_path, kernel=None):
    path = tmp_path / "kernel.json"
    save_kernel(kernel if kernel is not None else
                MultiBandGaussianKernel([0.3, 0.9], learnable_scale=True, cross_type_weight=0.2),
                path, metadata={"loss": "kernel_mmd", "levels": [0, 0.5]})
    return path, json.loads(path.read_text())


def write(path, doc, rehash=True):
    """Writes ``doc`` with a consistent checksum: a valid checksum lets nothing through."""
    if rehash and isinstance(doc.get("kernel"), dict) and isinstance(doc.get("metadata", {}), dict):
        doc["sha256"] = _digest(doc["kernel"], doc.get("metadata", {}))
    path.write_text(json.dumps(doc))


def refused(path, *words):
    with pytest.raises(ValueError) as info:
        load_kernel(path)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


# ---------------------------------------------------------------- size caps

def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    path, doc = saved_doc(tmp_path)
    doc["metadata"]["padding"] = "x" * MAX_FILE_BYTES
    path.write_text(json.dumps(doc))

    def never(*args, **kwargs):
        raise AssertionError("a file over the size cap was parsed")

    monkeypatch.setattr(json, "loads", never)
    monkeypatch.setattr(json, "load", never)
    refused(path, "bytes", str(MAX_FILE_BYTES))


def test_too_many_bands_are_refused(tmp_path):
    path, doc = saved_doc(tmp_path)
    n = MAX_FILE_BANDS + 1
    doc["kernel"]["log_sigma"] = [0.0] * n
    doc["kernel"]["logits"] = [0.0] * n
    write(path, doc)
    refused(path, "kernel.log_sigma", str(MAX_FILE_BANDS))
    # Millions of bands: refused by the size cap at once (28 s and 2.5 GB before).
    big = "[" + ",".join(["0.0"] * 400_000) + "]"
    path.write_text(json.dumps({**doc, "kernel": "K"}).replace('"K"', '{"log_sigma": %s}' % big))
    refused(path, "bytes")
    # At the cap, a file loads.
    doc["kernel"]["log_sigma"] = [0.1 * i - 3 for i in range(MAX_FILE_BANDS)]
    doc["kernel"]["logits"] = [0.0] * MAX_FILE_BANDS
    write(path, doc)
    assert load_kernel(path).log_sigma.numel() == MAX_FILE_BANDS
    with pytest.raises(ValueError, match="log_sigma"):
        save_kernel(MultiBandGaussianKernel([1.0] * (MAX_FILE_BANDS + 1)), tmp_path / "many.json")


# ---------------------------------------------------------------- value ranges

@pytest.mark.parametrize("field,value", [
    ("log_sigma", [LOG_SIGMA_LIMIT + 0.01, 0.0]),
    ("log_sigma", [0.0, -50.0]),
    ("log_sigma", [1e6, 0.0]),
    ("log_scale", 700.0),
    ("log_scale", -LOG_SCALE_LIMIT - 0.01),
    ("logits", [1e6, 0.0]),
    ("logits", [0.0, -LOGIT_LIMIT - 0.5]),
    ("type_logit", 1e6),
    ("type_logit", -41.0),
])
def test_values_outside_the_safe_range_are_refused(tmp_path, field, value):
    path, doc = saved_doc(tmp_path)
    doc["kernel"][field] = value
    write(path, doc)
    refused(path, f"kernel.{field}", "safe range")


def test_values_at_the_bounds_load_and_evaluate(tmp_path):
    path, doc = saved_doc(tmp_path)
    doc["kernel"].update(log_sigma=[-LOG_SIGMA_LIMIT, LOG_SIGMA_LIMIT], log_scale=LOG_SCALE_LIMIT,
                         logits=[LOGIT_LIMIT, -LOGIT_LIMIT], type_logit=-LOGIT_LIMIT)
    write(path, doc)
    kern = load_kernel(path)
    x, y = torch.randn(6, 3), torch.randn(5, 3)
    assert torch.isfinite(kernel_mmd(x, y, sigma=kern)).all()


def test_parameters_trained_beyond_the_range_save_at_the_bound(tmp_path):
    kern = MultiBandGaussianKernel([0.2, 0.8], learnable_scale=True)
    with torch.no_grad():
        kern.log_sigma[0] = -60.0
        kern.log_scale.fill_(700.0)
        kern.logits[1] = 1e4
    path = tmp_path / "k.json"
    save_kernel(kern, path)
    loaded = load_kernel(path)
    for a, b in zip(kern.bands(), loaded.bands()):
        assert torch.equal(a.detach(), b.detach())
    with torch.no_grad():
        kern.log_sigma[0] = float("nan")
    with pytest.raises(ValueError, match="log_sigma"):
        save_kernel(kern, path)


# ---------------------------------------------------------------- malformed files

def _mutations():
    """``(id, change(doc) -> doc or text, field named in the message)``."""
    def kernel(**fields):
        def change(doc):
            doc["kernel"].update(fields)
            return doc
        return change

    def drop(field, where="kernel"):
        def change(doc):
            (doc[where] if where else doc).pop(field)
            return doc
        return change

    def top(**fields):
        def change(doc):
            doc.update(fields)
            return doc
        return change

    def text(old, new):
        return lambda doc: json.dumps(doc).replace(old, new, 1)

    def nested(depth):
        def change(doc):
            value = 0
            for _ in range(depth):
                value = {"a": value}
            doc["metadata"]["deep"] = value
            return doc
        return change

    return [
        ("log_sigma-string", kernel(log_sigma=["1"]), "kernel.log_sigma[0]"),
        ("log_sigma-bool", kernel(log_sigma=[True, 0.0]), "kernel.log_sigma[0]"),
        ("log_sigma-object", kernel(log_sigma={"a": 1}), "kernel.log_sigma"),
        ("log_sigma-empty", kernel(log_sigma=[], logits=[]), "kernel.log_sigma"),
        ("log_scale-list", kernel(log_scale=[1.0]), "kernel.log_scale"),
        ("log_scale-null", kernel(log_scale=None), "kernel.log_scale"),
        ("learnable-string", kernel(learnable="yes"), "kernel.learnable"),
        ("learnable_scale-int", kernel(learnable_scale=1), "kernel.learnable_scale"),
        ("type-number", kernel(type=5), "kernel.type"),
        ("type-unknown", kernel(type="os.system"), "kernel.type"),
        ("logits-null", kernel(logits=None), "kernel.logits"),
        ("logits-length", kernel(logits=[0.0, 0.0, 0.0]), "kernel.logits"),
        ("type_logit-string", kernel(type_logit="high"), "kernel.type_logit"),
        ("unknown-kernel-field", kernel(extra=1), "kernel.extra"),
        ("missing-log_sigma", drop("log_sigma"), "kernel.log_sigma"),
        ("missing-logits", drop("logits"), "kernel.logits"),
        ("missing-log_scale", drop("log_scale"), "kernel.log_scale"),
        ("missing-learnable", drop("learnable"), "kernel.learnable"),
        ("missing-type", drop("type"), "kernel.type"),
        ("missing-kernel", drop("kernel", None), "kernel"),
        ("missing-sha256", lambda doc: json.dumps(drop("sha256", None)(doc)), "sha256"),
        ("kernel-list", top(kernel=[1, 2]), "kernel"),
        ("metadata-list", top(metadata=[1]), "metadata"),
        ("sha256-number", lambda doc: json.dumps(top(sha256=5)(doc)), "sha256"),
        ("format_version-string", top(format_version="1"), "format_version"),
        ("format_version-bool", top(format_version=True), "format_version"),
        ("library_version-number", top(library_version=1), "library_version"),
        ("unknown-top-field", top(payload="x"), "payload"),
        ("log_sigma-nan", text('"log_sigma": [', '"log_sigma": [NaN, '), "kernel.log_sigma"),
        ("log_scale-inf", text('"log_scale": ', '"log_scale": Infinity, "x": '), "kernel.log_scale"),
        ("log_sigma-1e999", text('"log_sigma": [', '"log_sigma": [1e999, '), "kernel.log_sigma"),
        ("metadata--inf", text('"levels": [', '"levels": [-Infinity, '), "metadata.levels"),
        ("metadata-1e400", text('"levels": [', '"levels": [1e400, '), "metadata.levels"),
        ("metadata-huge-int", text('"levels": [', '"levels": [%s, ' % ("9" * 5000)), "metadata.levels"),
        ("metadata-int-1e400", text('"levels": [', '"levels": [1%s, ' % ("0" * 400)), "metadata.levels"),
        ("metadata-deep", nested(MAX_DEPTH + 5), "metadata.deep"),
    ]


MUTATIONS = _mutations()


@pytest.mark.parametrize("change,field", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_malformed_fields_name_the_file_and_the_field(tmp_path, change, field):
    path, doc = saved_doc(tmp_path)
    out = change(copy.deepcopy(doc))
    if isinstance(out, str):
        path.write_text(out)
    else:
        write(path, out)
    refused(path, field)


def test_malformed_documents_name_the_file(tmp_path):
    path, doc = saved_doc(tmp_path)
    good = path.read_text()
    path.write_text(good[:40])
    refused(path, "not valid JSON")
    path.write_bytes(b'{"format": "tg_rapidalign.kernel", "x": "\xff\xfe"}')
    refused(path, "UTF-8")
    path.write_text('{"a": ' * 100_000 + "0" + "}" * 100_000)  # a RecursionError before
    refused(path, "nested")
    path.write_text("[" * 100 + "]" * 100)
    refused(path, "not a tg_rapidalign.kernel file")
    path.write_text(json.dumps({"format": "something else"}))
    refused(path, "not a tg_rapidalign.kernel file", "format")
    path.write_text("")
    refused(path, "not valid JSON")


def test_checksum_catches_accidents_and_is_documented_as_no_signature(tmp_path):
    path, doc = saved_doc(tmp_path)
    doc["kernel"]["log_sigma"][0] += 1e-9
    write(path, doc, rehash=False)
    refused(path, "sha256", "checksum")
    for text in (io.__doc__, load_kernel.__doc__):
        text = " ".join(text.split())
        assert "not a signature" in text and "corruption" in text
    assert "tampering" in io.__doc__


def test_save_refuses_what_load_would_refuse(tmp_path):
    path = tmp_path / "k.json"
    deep = 0
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    for metadata, word in (({"x": float("nan")}, "metadata"), ({"x": deep}, "nested"),
                           ({"x": 10 ** 400}, "float64"), ({"x": "y" * MAX_FILE_BYTES}, "bytes"),
                           ([1, 2], "metadata")):
        with pytest.raises(ValueError, match=word):
            save_kernel(GaussianKernel(1.0), path, metadata=metadata)
    assert not path.exists()
    save_kernel(GaussianKernel(1.0), path, metadata={"nested": {"ok": [1, 2, {"a": None}]}})
    assert load_kernel(path, return_metadata=True)[1] == {"nested": {"ok": [1, 2, {"a": None}]}}
