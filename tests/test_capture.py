"""Namespace analysis: a table of cells and the names they read and bind."""

from __future__ import annotations

import sys
import textwrap

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from jupyter_flame.values.capture import (
    IGNORED_NAMES,
    CellNames,
    analyze,
    is_ignored,
    names_to_ship,
)

_TRANSFORM = TransformerManager()  # type: ignore[no-untyped-call]

# (id, cell source as typed in the notebook, expected reads, expected binds)
# Reads leave out ``get_ipython`` (the transformed magics call it; it is never shipped).
CASES: list[tuple[str, str, str, str]] = [
    ("plain-read", "y = x + 1", "x", "y"),
    ("read-before-bind", "x = x + 1", "x", "x"),
    ("bound-then-read", "x = 1\ny = x", "", "x y"),
    ("augassign", "n += 1", "n", "n"),
    ("augassign-attr", "obj.n += k", "obj k", ""),
    ("tuple-unpack", "a, (b, *c) = pair", "pair", "a b c"),
    ("star-unpack-order", "first, *rest = items\nprint(rest)", "items print", "first rest"),
    ("subscript-store", "d['k'] = v", "v d", ""),
    ("attr-store", "df.col = values", "values df", ""),
    ("walrus-top", "if (n := len(data)) > 3:\n    print(n)", "len data print", "n"),
    ("walrus-in-comp", "ys = [z for x in xs if (z := f(x))]", "xs f", "z ys"),
    ("comp-scope", "out = [i * k for i in range(n)]", "range n k", "out"),
    ("comp-target-not-leaked", "s = {x for x in xs}\nt = x", "xs x", "s t"),
    ("nested-comp", "m = {a: [b for b in bs[a]] for a in keys}", "keys bs", "m"),
    ("genexp", "total = sum(w * v for v in vals)", "sum vals w", "total"),
    ("def-free-globals", "def f(a):\n    return a + g(b)", "g b", "f"),
    (
        "def-later-bound",
        "def f():\n    return helper()\ndef helper():\n    return 1",
        "",
        "f helper",
    ),
    ("def-recursive", "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)", "", "fact"),
    (
        "def-defaults-decorators",
        "@cache\ndef f(a=default, *, b=kw):\n    pass",
        "cache default kw",
        "f",
    ),
    ("def-annotations", "def f(a: Tensor) -> Out2:\n    x: Local = 1", "Tensor Out2", "f"),
    (
        "future-annotations",
        "from __future__ import annotations\ndef f(a: T): pass",
        "",
        "annotations f",
    ),
    ("async-def", "async def fetch():\n    return await client.get(url)", "client url", "fetch"),
    ("lambda", "key = lambda item, d=dflt: item[col] or d", "dflt col", "key"),
    ("lambda-nested-args", "f = lambda x: (lambda y: x + y + z)", "z", "f"),
    (
        "closure-nonlocal",
        "def outer():\n    c = 0\n    def inc():\n        nonlocal c\n        c += step\n    return inc",
        "step",
        "outer",
    ),
    ("global-decl", "def bump():\n    global counter\n    counter += 1", "counter", "bump counter"),
    (
        "global-decl-bound",
        "counter = 0\ndef bump():\n    global counter\n    counter += 1",
        "",
        "counter bump",
    ),
    (
        "class-body",
        "class C(Base, metaclass=Meta):\n    size = default_size\n    twice = size * 2\n    def m(self):\n        return helper(self.size)",
        "Base Meta default_size helper",
        "C",
    ),
    ("class-body-comp", "class C:\n    k = 2\n    vals = [k * i for i in src]", "src k", "C"),
    ("class-decorator", "@dataclass\nclass P:\n    x: int = 0", "dataclass int", "P"),
    (
        "import",
        "import numpy as np\nimport os.path\nfrom math import pi as PI, e",
        "",
        "np os PI e",
    ),
    ("import-then-use", "import json\njson.dumps(obj)", "obj", "json"),
    ("star-import", "from pylab import *", "", ""),
    (
        "for-targets",
        "for i, (a, b) in enumerate(pairs):\n    acc = acc + a",
        "enumerate pairs acc",
        "i a b acc",
    ),
    (
        "for-else",
        "for x in xs:\n    break\nelse:\n    found = None\nprint(found)",
        "xs print found",
        "x found",
    ),
    ("while", "while cond():\n    k = 1\nprint(k)", "cond print k", "k"),
    (
        "async-for-with",
        "async for row in stream():\n    pass\nasync with lock:\n    v = await get()",
        "stream lock get",
        "row v",
    ),
    (
        "with-as",
        "with open(path) as fh, ctx() as (a, b):\n    text = fh.read()",
        "open path ctx",
        "fh a b text",
    ),
    ("if-one-branch", "if flag:\n    x = 1\nprint(x)", "flag print x", "x"),
    ("if-both-branches", "if flag:\n    x = 1\nelse:\n    x = 2\nprint(x)", "flag print", "x"),
    (
        "try-except-as",
        "try:\n    r = risky()\nexcept ValueError as err:\n    log(err)\nprint(err)",
        "risky ValueError log print err",
        "r",
    ),
    (
        "try-finally",
        "try:\n    a = 1\nexcept Exception:\n    a = 2\nfinally:\n    b = a",
        "Exception",
        "a b",
    ),
    ("del-read", "del big", "big", ""),
    ("del-after-bind", "tmp = make()\ndel tmp\nprint(tmp)", "make print tmp", "tmp"),
    (
        "match",
        "match cmd:\n    case Point(x=px, y=0):\n        r = px\n    case [first, *others]:\n        r = first\n    case {'k': kv, **extra}:\n        r = kv\n    case CONST.value:\n        r = 0\n    case _:\n        r = fallback",
        "cmd Point CONST fallback",
        "px r first others kv extra",
    ),
    (
        "match-not-exhaustive",
        "match v:\n    case 1:\n        out = 1\nprint(out)",
        "v print out",
        "out",
    ),
    ("fstring", "msg = f'{name!r}: {value:{width}}'", "name value width", "msg"),
    ("top-level-await", "res = await fetch(url)", "fetch url", "res"),
    ("annassign-module", "x: Alias = compute()", "Alias compute", "x"),
    ("annassign-no-value", "x: int", "int", ""),
    ("shadow-builtin", "list = [1]\nlen(list)", "len", "list"),
    ("magic-line-time", "%time y = f(x)", "f x", "y"),
    ("magic-line-timeit-options", "%timeit -n 10 -r 3 model.predict(X)", "model X", ""),
    ("magic-line-prun", "%prun -s cumulative train(df)", "train df", ""),
    ("magic-cell-timeit", "%%timeit -n 3 s = setup(cfg)\nwork(s, data)", "setup cfg work data", ""),
    ("magic-cell-time", "%%time\nres = run(arr)", "run arr", "res"),
    ("magic-cell-capture", "%%capture cap --no-stderr\nprint(a)", "print a", "cap"),
    ("magic-cell-other", "%%writefile {fname}\nnot python $here", "fname", ""),
    ("system-interp", "!ls {path} $pattern $$HOME '$quoted'", "path pattern", ""),
    ("getoutput", "files = !find {root.name} -name '*.py'", "root", "files"),
    ("magic-no-expand", "%matplotlib inline", "", ""),
    ("magic-expand", "%cd {workdir}", "workdir", ""),
    ("pinfo", "obj?", "obj", ""),
    ("decorator-call", "@register(name=tag)\ndef h(): pass", "register tag", "h"),
    ("default-read-now", "def f(a=x): pass\nx = 1", "x", "f x"),
]


def _ids() -> list[str]:
    return [c[0] for c in CASES]


@pytest.mark.parametrize(("source", "reads", "binds"), [c[1:] for c in CASES], ids=_ids())
def test_analyze_table(source: str, reads: str, binds: str) -> None:
    cell = analyze(_TRANSFORM.transform_cell(source + "\n"))
    assert [r for r in cell.reads if r != "get_ipython"] == reads.split()
    assert list(cell.binds) == binds.split()


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len(set(_ids())) == len(CASES)


def test_deletes_and_star_imports() -> None:
    cell = analyze("a = 1\ndel a, b\nfrom os import *\ndef f():\n    del local\n")
    assert cell.deletes == ("a", "b")
    assert cell.star_imports
    assert cell.reads == ("b",)
    assert not analyze("class K:\n    from os import *\n").star_imports


def test_syntax_error_propagates() -> None:
    with pytest.raises(SyntaxError):
        analyze("def broken(:\n")


def test_bad_magic_code_is_ignored() -> None:
    cell = analyze("get_ipython().run_line_magic('time', 'not valid python (')\n")
    assert cell.reads == ("get_ipython",)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 syntax")
def test_type_alias_and_type_params() -> None:
    cell = analyze("type Vec = list[Scalar]\ndef first[T](xs: list[T]) -> T:\n    return xs[0]\n")
    assert cell.reads == ("Scalar", "list")
    assert cell.binds == ("Vec", "first")


def test_nested_function_in_class_in_function() -> None:
    source = textwrap.dedent(
        """
        def factory(base):
            class K(base):
                attr = base
                def m(self):
                    return (attr, base, glob)
            return K
        """
    )
    assert analyze(source).reads == ("attr", "glob")


# -- names_to_ship ------------------------------------------------------------------------------


class _BigArrayStandIn:
    """Stands for a 2 GB array: shipping it by mistake would be costly."""

    nbytes = 2 * 1024**3


def test_names_to_ship_only_what_the_cell_reads() -> None:
    user_ns = {"big": _BigArrayStandIn(), "small": [1, 2], "f": len, "np": object()}
    cell = analyze("y = f(small) + np.size\n")
    assert names_to_ship(cell, user_ns) == ["f", "small", "np"]


def test_names_to_ship_filters_ipython_internals_builtins_and_skip() -> None:
    user_ns = {
        "In": [], "Out": {}, "_": 1, "_i3": "", "_12": 1, "get_ipython": None, "exit": None,
        "list": [1], "fh": object(), "data": object(),
    }  # fmt: skip
    cell = analyze("print(In, Out, _, _i3, _12, list, len, fh, data, exit)\n")
    assert names_to_ship(cell, user_ns, skip=["fh"]) == ["list", "data"]


def test_names_to_ship_does_not_ship_names_the_cell_binds_first() -> None:
    cell = analyze("arr = load()\narr.sum()\n")
    assert names_to_ship(cell, {"arr": _BigArrayStandIn(), "load": print}) == ["load"]


@pytest.mark.parametrize("name", ["In", "_", "__", "___", "_i", "_ii", "_i7", "_42", "_oh"])
def test_is_ignored(name: str) -> None:
    assert is_ignored(name)
    assert not is_ignored("_private") and not is_ignored("x_1")
    assert "get_ipython" in IGNORED_NAMES


def test_cellnames_is_frozen() -> None:
    cell = CellNames(reads=("a",))
    with pytest.raises(AttributeError):
        cell.reads = ()  # type: ignore[misc]
