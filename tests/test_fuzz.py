"""Property-based fuzzing: random and mutated files never raise anything but ``UserError``.

Targets: the flow readers (``.flo``, PFM, KITTI 16-bit PNG, ``read_flow``), ``read_image``, and
the recipe loader (``load_recipe`` on random text, mutated packaged recipes, random typed
documents and random ``--set`` overrides). Mutations start from small valid files and flip,
overwrite, insert, delete, duplicate or truncate bytes, biased towards the header; for PNG a
second variant recomputes the chunk CRCs so the damage reaches the header checks and the
decoder instead of stopping at the checksum.
"""

from __future__ import annotations

import struct
import zlib
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcjepa_cli.errors import UserError

EXAMPLES = 250  # per fuzz test; 10 tests -> 2,500 examples
# The same examples every run, so that CI is reproducible; MCJEPA_FUZZ_RANDOM=1 draws new ones.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("MCJEPA_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ mutations
@st.composite
def mutated(draw, seed: bytes, header: int = 32) -> bytes:
    """``seed`` with 1-6 random byte-level edits (half of the positions within ``header``)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        hi = len(data) - 1
        i = draw(st.one_of(st.integers(0, min(header, hi)), st.integers(0, hi)))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup", "int32"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
        else:  # an extreme 32-bit integer, as a header field would hold
            value = draw(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 2**16, 46341, 65536]))
            data[i:i + 4] = struct.pack(draw(st.sampled_from(["<i", ">i"])), value)
    return bytes(data)


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every complete chunk, so mutated chunks pass the checksum."""
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, pos)
        end = pos + 12 + length
        if end > len(out):
            break
        crc = zlib.crc32(bytes(out[pos + 4:pos + 8 + length]))
        out[pos + 8 + length:end] = struct.pack(">I", crc)
        pos = end
    return bytes(out)


def _expect_user_error_only(fn, path: Path) -> None:
    try:
        fn(path)
    except UserError as e:
        assert e.culprit and "\n" not in str(e)  # one line, culprit included


# ------------------------------------------------------------------------------ seeds
@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    from mcjepa_cli.io.flow_io import write_flo, write_kitti_png, write_pfm

    d = tmp_path_factory.mktemp("fuzz_seeds")
    rng = np.random.default_rng(0)
    flow = rng.normal(scale=5, size=(3, 4, 2)).astype(np.float32)
    write_flo(d / "a.flo", flow)
    write_kitti_png(d / "a.png", flow, rng.random((3, 4)) > 0.3)
    write_pfm(d / "a.pfm", flow)
    write_pfm(d / "g.pfm", flow[..., 0])
    rgb = np.concatenate([flow, np.zeros((3, 4, 1), np.float32)], -1)  # (3, 4, 3)
    big_endian = b"PF\n4 3\n1.0\n" + rgb[::-1].astype(">f4").tobytes()  # positive scale
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(d / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(d / "rgb.jpg", quality=80)
    return {"flo": (d / "a.flo").read_bytes(), "kitti": (d / "a.png").read_bytes(),
            "pfm": (d / "a.pfm").read_bytes(), "pfm_grey": (d / "g.pfm").read_bytes(),
            "pfm_be": big_endian, "png8": (d / "rgb.png").read_bytes(),
            "jpg": (d / "rgb.jpg").read_bytes()}


def test_seeds_are_valid(seeds, tmp_path):
    """Control: the unmutated seeds read back, so the mutations start from real files."""
    from mcjepa_cli.io.flow_io import read_flow, read_pfm
    from mcjepa_cli.io.images import read_image

    for name, ext in (("flo", ".flo"), ("kitti", ".png"), ("pfm", ".pfm"), ("pfm_be", ".pfm")):
        p = tmp_path / f"x{ext}"
        p.write_bytes(seeds[name])
        flow, valid = read_flow(p)
        assert flow.shape == (3, 4, 2) and valid.shape == (3, 4)
    p = tmp_path / "g.pfm"
    p.write_bytes(seeds["pfm_grey"])
    assert read_pfm(p).shape == (3, 4, 1)
    for name in ("png8", "jpg"):
        p = tmp_path / f"i.{name}"
        p.write_bytes(seeds[name])
        assert tuple(read_image(p).shape) == (3, 6, 5)


# ------------------------------------------------------------------------------ flow files
@FUZZ
@given(data=st.data())
def test_flo_reader_fuzz(seeds, tmp_path, data):
    from mcjepa_cli.io.flow_io import read_flo

    blob = data.draw(st.one_of(st.binary(max_size=200), mutated(seeds["flo"], header=12)))
    p = tmp_path / "f.flo"
    p.write_bytes(blob)
    _expect_user_error_only(read_flo, p)


@FUZZ
@given(data=st.data())
def test_pfm_reader_fuzz(seeds, tmp_path, data):
    from mcjepa_cli.io.flow_io import read_pfm

    header = st.builds(lambda k, w, h, s, sep: f"{k}{sep}{w} {h}{sep}{s}{sep}".encode(),
                       st.sampled_from(["PF", "Pf", "pf", "P"]),
                       st.integers(-2, 2**31), st.integers(-2, 2**31),
                       st.sampled_from(["-1.0", "1", "0", "-0.0", "1e999", "nan", "-inf", "x"]),
                       st.sampled_from(["\n", " ", "\r\n", "\t"]))
    blob = data.draw(st.one_of(
        st.binary(max_size=200),
        mutated(seeds["pfm"]), mutated(seeds["pfm_grey"]), mutated(seeds["pfm_be"]),
        st.tuples(header, st.binary(max_size=120)).map(lambda t: t[0] + t[1]),
    ))
    p = tmp_path / "f.pfm"
    p.write_bytes(blob)
    _expect_user_error_only(read_pfm, p)


@FUZZ
@given(data=st.data())
def test_kitti_png_reader_fuzz(seeds, tmp_path, data):
    from mcjepa_cli.io.flow_io import read_kitti_png

    seed = seeds["kitti"]
    blob = data.draw(st.one_of(
        st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
        mutated(seed, header=40),
        mutated(seed, header=40).map(_fix_png_crcs),
        mutated(seeds["png8"], header=40).map(_fix_png_crcs),  # 8-bit RGB: refused
    ))
    p = tmp_path / "f.png"
    p.write_bytes(blob)
    _expect_user_error_only(read_kitti_png, p)


@FUZZ
@given(data=st.data())
def test_kitti_png_random_scanlines(tmp_path, data):
    """Well-formed 16-bit PNGs with random dimensions and filter bytes: decoded or refused."""
    from mcjepa_cli.io.flow_io import read_kitti_png

    w, h = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    depth, colour = data.draw(st.sampled_from([(16, 2), (16, 2), (16, 2), (8, 2), (16, 6),
                                               (16, 0)]))
    channels = {2: 3, 6: 4, 0: 1}[colour]
    stride = 1 + channels * (depth // 8) * w
    rows = bytearray()
    for _ in range(h):
        rows.append(data.draw(st.integers(0, 6)))  # filter type; 5 and 6 are invalid
        rows += data.draw(st.binary(min_size=stride - 1, max_size=stride - 1))
    if data.draw(st.booleans()):
        rows = rows[: data.draw(st.integers(0, len(rows)))]  # short image data

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    blob = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b""))
    p = tmp_path / "s.png"
    p.write_bytes(blob)
    try:
        flow, valid = read_kitti_png(p)
    except UserError:
        return
    assert flow.shape == (h, w, 2) and valid.shape == (h, w) and np.isfinite(flow).all()


@FUZZ
@given(data=st.data())
def test_read_flow_dispatch_fuzz(seeds, tmp_path, data):
    from mcjepa_cli.io.flow_io import read_flow

    ext = data.draw(st.sampled_from([".flo", ".png", ".pfm", ".PFM", ".FLO", ".txt", ""]))
    seed = data.draw(st.sampled_from([seeds[k] for k in ("flo", "kitti", "pfm", "pfm_grey")]))
    blob = data.draw(st.one_of(st.just(seed), mutated(seed)))
    p = tmp_path / f"f{ext}"
    p.write_bytes(blob)
    _expect_user_error_only(read_flow, p)


@FUZZ
@given(data=st.data())
def test_read_image_fuzz(seeds, tmp_path, data):
    from mcjepa_cli.io.images import read_image

    kind = data.draw(st.sampled_from(["png8", "jpg", "kitti"]))
    blob = data.draw(st.one_of(mutated(seeds[kind], header=40),
                               mutated(seeds[kind], header=40).map(_fix_png_crcs)
                               if kind != "jpg" else mutated(seeds[kind])))
    p = tmp_path / ("i.jpg" if kind == "jpg" else "i.png")
    p.write_bytes(blob)
    try:
        img = read_image(p)
    except UserError:
        return
    assert img.dtype.is_floating_point is False and img.shape[0] == 3


def test_read_image_refuses_a_decompression_bomb(tmp_path):
    """A valid PNG header claiming 100000 x 100000 pixels: one UserError, not PIL's exception."""
    from mcjepa_cli.io.images import read_image

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    p = tmp_path / "bomb.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                  + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    with pytest.raises(UserError) as e:
        read_image(p)
    assert str(p) in str(e.value)


# ------------------------------------------------------------------------------ recipes
def _recipe_keys() -> list[str]:
    """Every dotted leaf key of the recipe, e.g. ``optim.lr_encoder``."""
    import dataclasses
    import typing

    from mcjepa_cli.config import Recipe

    out: list[str] = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                out.append(f"{prefix}{f.name}")

    walk(Recipe, "")
    return out


RECIPE_KEYS = _recipe_keys()
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**20),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_values = st.recursive(_scalars,
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3)),
                       max_leaves=8)
_keys = st.one_of(st.sampled_from(RECIPE_KEYS), st.text(max_size=10))  # real keys and junk
_yaml_values = _values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())


def _nest(pairs: list[tuple[str, object]]) -> dict:
    doc: dict = {}
    for key, value in pairs:
        node = doc
        *parents, leaf = key.split(".")
        for p in parents:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                break
            node = nxt
        else:
            node[leaf] = value
    return doc


def _load(path: Path, overrides=()):
    from mcjepa_cli.config import load_recipe

    try:
        return load_recipe(str(path), list(overrides))
    except UserError as e:
        assert e.culprit and "\n" not in str(e)  # one line, even for a culprit quoting user text
        return None


@FUZZ
@given(text=st.text(max_size=300))
def test_recipe_loader_random_text(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_bytes(text.encode("utf-8", errors="surrogatepass"))  # lone surrogates: bad UTF-8
    _load(p)


@FUZZ
@given(data=st.data())
def test_recipe_loader_mutated_packaged_recipes(tmp_path, data):
    from mcjepa_cli.config import find_recipe

    name = data.draw(st.sampled_from(["quickstart", "mcjepa_convnext_tiny", "mjepa_flow_only"]))
    seed = find_recipe(name).read_bytes()
    blob = data.draw(mutated(seed, header=len(seed)))
    p = tmp_path / "r.yaml"
    p.write_bytes(blob)
    _load(p)


@FUZZ
@given(pairs=st.lists(st.tuples(_keys, _values), max_size=5),
       base=st.sampled_from([None, "quickstart", "mjepa_flow_only"]))
def test_recipe_loader_random_typed_documents(tmp_path, pairs, base):
    doc = _nest(pairs)
    if base:
        doc["base"] = base
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    recipe = _load(p)
    if recipe is not None:  # accepted: every number in the resolved recipe is finite
        from mcjepa_cli.config import to_dict

        def leaves(x):
            if isinstance(x, dict):
                for v in x.values():
                    yield from leaves(v)
            elif isinstance(x, list):
                for v in x:
                    yield from leaves(v)
            else:
                yield x

        assert all(np.isfinite(v) for v in leaves(to_dict(recipe)) if isinstance(v, float))


@FUZZ
@given(overrides=st.lists(
    st.tuples(_keys, st.one_of(_yaml_values, st.text(max_size=20))).map("=".join)
    | st.text(max_size=20), max_size=4))
def test_recipe_overrides_fuzz(overrides):
    from mcjepa_cli.config import find_recipe

    _load(find_recipe("quickstart"), overrides)
