"""Worst-case stack use of an emitted model on Cortex-M4.

stack_usage(out_dir) compiles every .c of an emitted folder with
arm-none-eabi-gcc (the firmware flags, -O2) plus -fstack-usage and
-fcallgraph-info=su, so gcc reports each function's frame and its call
edges, and sums the frames along the deepest call path below PREFIX_invoke
and PREFIX_predict (and the _multi entry points).

* Indirect calls (a kernel choosing a loop through a function pointer) are
  resolved to the functions whose address is taken in the same object file
  (their non-call relocations): the worst of them is charged.
* Functions outside the folder (memcpy/memset, libm's expf/tanhf for float
  models) are estimated from the disassembly of a throwaway link against
  newlib-nano: every push/vpush/stmdb/sub sp in the function is charged,
  an over-estimate, and their own calls are followed the same way.
* A gcc without -fcallgraph-info falls back to the .su frames and the
  call targets (bl/b.w and their relocations) in `objdump -dr`.

Anything that makes the bound unsound is flagged rather than guessed:
'dynamic' frames (alloca/VLA; 'dynamic,bounded' is counted at gcc's bound
but still listed), recursion, unresolved indirect calls and functions with
no known frame.  bounded is True only when none of those occur.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]
CFLAGS = ["-std=c99", "-O2", *ARM_FLAGS]
INDIRECT = "__indirect_call"
CALL_RELOCS = ("R_ARM_THM_CALL", "R_ARM_THM_JUMP24", "R_ARM_THM_JUMP19", "R_ARM_CALL",
               "R_ARM_JUMP24", "R_ARM_THM_JUMP11", "R_ARM_THM_JUMP8")


class StackError(RuntimeError):
    pass


def _tool(name: str, gcc: str | None = None) -> str:
    if gcc is not None and name != "gcc":
        candidate = Path(gcc).with_name(Path(gcc).name.replace("gcc", name))
        if candidate.exists():
            return str(candidate)
    path = shutil.which(f"arm-none-eabi-{name}")
    if path is None:
        raise StackError(f"arm-none-eabi-{name} not found: install it with "
                         f"`apt-get install gcc-arm-none-eabi`")
    return path


def _run(cmd, cwd=None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise StackError(f"{' '.join(map(str, cmd))}\n{r.stderr}")
    return r.stdout


def find_prefix(out_dir: Path) -> str:
    heads = sorted(out_dir.glob("*_weights.h"))
    if len(heads) != 1:
        raise StackError(f"cannot tell the model prefix in {out_dir}: pass prefix=")
    return heads[0].name[: -len("_weights.h")]


# ---- gcc's per-object call graph (.ci, VCG) --------------------------------

_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_FRAME = re.compile(r"(\d+) bytes \(([^)]*)\)")


def _parse_ci(text: str):
    """(defined {title: (name, location, bytes, qualifier)}, edges [(src, dst)])."""
    defined, edges = {}, []
    for m in _NODE.finditer(text):
        parts = m.group(2).split("\\n")
        f = _FRAME.search(m.group(2))
        if f:
            defined[m.group(1)] = (parts[0], parts[1] if len(parts) > 1 else "",
                                   int(f.group(1)), f.group(2))
    for m in _EDGE.finditer(text):
        edges.append((m.group(1), m.group(2)))
    return defined, edges


# ---- disassembly -------------------------------------------------------------

_FUNC = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{4}\s?)+\s+(\S+)\s*(.*)$")
_RELOC = re.compile(r"^\s*([0-9a-f]+): (R_ARM_\w+)\s+(\S+)")
_TARGET = re.compile(r"<([^>+]+)(\+0x[0-9a-f]+)?>")
_SUB_SP = re.compile(r"^sp, (?:sp, )?#(\d+)")
_PREINDEX = re.compile(r"\[sp, #-(\d+)\]!")


def _reglist_bytes(operands: str) -> int:
    """Bytes pushed by a register list such as {r4, r5, lr} or {d8-d11}."""
    m = re.search(r"\{([^}]*)\}", operands)
    if not m:
        return 0
    total = 0
    for item in m.group(1).split(","):
        item = item.strip()
        size = 8 if item.startswith("d") else 4
        if "-" in item:
            a, b = item.split("-")
            total += size * (int(re.sub(r"\D", "", b)) - int(re.sub(r"\D", "", a)) + 1)
        elif item:
            total += size
    return total


def _insn_frame(mnemonic: str, operands: str) -> int:
    base = mnemonic.split(".")[0]
    if base in ("push", "vpush"):
        return _reglist_bytes(operands)
    if base in ("stmdb", "stmfd") and operands.startswith("sp!"):
        return _reglist_bytes(operands)
    if base in ("sub", "subw"):
        m = _SUB_SP.match(operands)
        return int(m.group(1)) if m else 0
    if base.startswith("str") or base.startswith("vstr"):
        m = _PREINDEX.search(operands)
        return int(m.group(1)) if m else 0
    return 0


def _parse_disasm(text: str):
    """{function: {"frame": bytes, "calls": set, "indirect": bool}} from
    `objdump -d[r]`: the frame sums every stack allocation in the body (an
    upper bound), calls are bl/blx/b targets at another function's start or
    call relocations, and indirect is a blx/bx through a register other
    than lr."""
    funcs: dict = {}
    cur = None
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(2), {"frame": 0, "calls": set(), "indirect": False})
            continue
        if cur is None:
            continue
        r = _RELOC.match(line)
        if r:
            if r.group(2) in CALL_RELOCS:
                cur["calls"].add(r.group(3))
            continue
        i = _INSN.match(line)
        if not i:
            continue
        mnemonic, operands = i.group(2), i.group(3)
        cur["frame"] += _insn_frame(mnemonic, operands)
        base = mnemonic.split(".")[0]
        if base in ("bl", "blx", "b", "bx") or (base.startswith("b") and len(base) <= 3
                                                 and base not in ("bic", "bfi", "bfc")):
            t = _TARGET.search(operands)
            if t and t.group(2) is None:
                cur["calls"].add(t.group(1))
            elif base in ("blx", "bx") and operands.split()[0] not in ("lr",) \
                    and re.match(r"^(r\d+|ip|fp|sl|sb)\b", operands):
                cur["indirect"] = True
    for name, f in funcs.items():
        f["calls"].discard(name)
    return funcs


def _address_taken(objdump: str, obj: Path, defined_names: set) -> set:
    """Functions of this object whose address is taken (a non-call relocation
    naming them): the possible targets of its indirect calls."""
    out = _run([objdump, "-r", str(obj)])
    taken = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith("R_ARM_") and parts[1] not in CALL_RELOCS:
            if parts[2] in defined_names:
                taken.add(parts[2])
    return taken


# ---- the analysis --------------------------------------------------------------

def stack_usage(out_dir, prefix: str | None = None, gcc: str | None = None,
                extra_cflags=(), link_libraries: bool = True, callgraph: str = "auto") -> dict:
    """Worst-case stack depth (bytes) of PREFIX_invoke / PREFIX_predict.

    Returns {"prefix", "entries": {entry: {"worst": bytes, "path": [...]}},
    "invoke", "predict" (worst bytes, None if the entry does not exist),
    "functions": {key: {"frame", "qualifier", "source"}}, "dynamic",
    "recursive", "unresolved", "unknown", "external", "bounded", "method"}.
    Keys are gcc's: global functions by name, file-local ones "file:name".
    callgraph="objdump" forces the fallback (no -fcallgraph-info).
    """
    out_dir = Path(out_dir).resolve()
    prefix = prefix or find_prefix(out_dir)
    gcc = gcc or _tool("gcc")
    objdump = _tool("objdump", gcc)
    sources = sorted(p.relative_to(out_dir) for p in out_dir.rglob("*.c"))
    if not sources:
        raise StackError(f"no .c files in {out_dir}")

    with tempfile.TemporaryDirectory(prefix="k2m_stack_") as tmp:
        tmp = Path(tmp)
        objs = []
        use_ci = callgraph != "objdump"
        for k, src in enumerate(sources):
            obj = tmp / f"{k:03d}_{src.stem}.o"
            base = [gcc, *CFLAGS, *extra_cflags, "-fstack-usage", "-I", ".", "-c", str(src),
                    "-o", str(obj)]
            cmd = base[:-4] + ["-fcallgraph-info=su"] + base[-4:] if use_ci else base
            r = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True)
            if r.returncode != 0 and use_ci and "callgraph-info" in r.stderr:
                use_ci = False
                r = subprocess.run(base, cwd=out_dir, capture_output=True, text=True)
            if r.returncode != 0:
                raise StackError(f"{' '.join(cmd)}\n{r.stderr}")
            objs.append(obj)

        functions: dict = {}
        graph: dict = {}
        for obj in objs:
            local = {}
            if use_ci:
                defined, edges = _parse_ci(obj.with_suffix(".ci").read_text())
                for title, (name, loc, size, qual) in defined.items():
                    functions[title] = {"frame": size, "qualifier": qual, "source": "su",
                                        "location": loc}
                    graph.setdefault(title, set())
                    local[name] = title
                for src, dst in edges:
                    graph.setdefault(src, set()).add(dst)
            else:
                for line in obj.with_suffix(".su").read_text().splitlines():
                    loc, size, qual = line.rsplit("\t", 2)
                    name = loc.rsplit(":", 1)[1]
                    functions[name] = {"frame": int(size), "qualifier": qual, "source": "su",
                                       "location": loc.rsplit(":", 1)[0]}
                    local[name] = name
                for name, f in _parse_disasm(_run([objdump, "-dr", str(obj)])).items():
                    graph.setdefault(name, set()).update(f["calls"])
                    if f["indirect"]:
                        graph[name].add(INDIRECT)
            # indirect calls: the worst function whose address this object takes
            taken = {local[n] for n in _address_taken(objdump, obj, set(local))}
            for title in local.values():
                calls = graph.get(title, set())
                if INDIRECT in calls and taken:
                    calls.discard(INDIRECT)
                    calls.update(taken)
                # a call to a static function of this object names it by title
                graph[title] = {local.get(c, c) if c not in functions else c for c in calls}

        external = sorted({c for calls in graph.values() for c in calls
                           if c not in functions and c != INDIRECT})
        # functions outside the folder: their frames from a linked image
        if external and link_libraries:
            entry_names = [f"{prefix}_{e}" for e in ("invoke", "predict", "invoke_multi",
                                                      "predict_multi")]
            present = [e for e in entry_names if e in functions]
            elf = tmp / "model.elf"
            cmd = [gcc, *ARM_FLAGS, "--specs=nano.specs", "-nostartfiles",
                   f"-Wl,-e,{present[0]}", *[f"-Wl,--undefined={e}" for e in present[1:]],
                   *map(str, objs), "-lm", "-lc", "-lgcc", "-o", str(elf)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                lib = _parse_disasm(_run([objdump, "-d", str(elf)]))
                todo = list(external)
                while todo:
                    name = todo.pop()
                    if name in functions or name not in lib:
                        continue
                    f = lib[name]
                    functions[name] = {"frame": f["frame"], "qualifier": "static",
                                       "source": "disassembly", "location": "library"}
                    graph[name] = set(f["calls"]) | ({INDIRECT} if f["indirect"] else set())
                    todo.extend(c for c in f["calls"] if c not in functions)

    method = "fcallgraph-info" if use_ci else "objdump"
    return _worst_paths(prefix, functions, graph, external, method)


def _worst_paths(prefix, functions, graph, external, method) -> dict:
    recursive, unresolved, unknown = set(), set(), set()
    memo: dict = {}

    def worst(f, stack):
        if f in memo:
            return memo[f]
        if f == INDIRECT:
            unresolved.add(stack[-1] if stack else f)
            return 0, []
        if f not in functions:
            unknown.add(f)
            return 0, [f]
        best, path = 0, []
        for c in sorted(graph.get(f, ())):
            if c in stack or c == f:
                recursive.add(c)
                continue
            d, p = worst(c, stack + [f])
            if d > best:
                best, path = d, p
        memo[f] = (functions[f]["frame"] + best, [f] + path)
        return memo[f]

    entries = {}
    for e in ("invoke", "predict", "invoke_multi", "predict_multi"):
        name = f"{prefix}_{e}"
        if name in functions:
            depth, path = worst(name, [])
            entries[e] = {"worst": depth, "path": path}
    dynamic = sorted(k for k, v in functions.items() if v["qualifier"].startswith("dynamic"))
    unbounded = [k for k, v in functions.items()
                 if v["qualifier"].startswith("dynamic") and "bounded" not in v["qualifier"]]
    reachable = set()

    def mark(f):
        if f in reachable:
            return
        reachable.add(f)
        for c in graph.get(f, ()):
            mark(c)
    for e in entries:
        mark(f"{prefix}_{e}")
    return {
        "prefix": prefix, "method": method, "entries": entries,
        "invoke": entries.get("invoke", {}).get("worst"),
        "predict": entries.get("predict", {}).get("worst"),
        "functions": functions,
        "dynamic": [d for d in dynamic if d in reachable],
        "recursive": sorted(recursive & reachable),
        "unresolved": sorted(unresolved & reachable),
        "unknown": sorted(unknown),
        "external": [x for x in external if x in reachable],
        "bounded": not ({u for u in unbounded if u in reachable} or (recursive & reachable)
                        or (unresolved & reachable) or unknown),
    }


def format_report(result: dict) -> str:
    lines = [f"stack use of {result['prefix']} (Cortex-M4, -O2, {result['method']}):"]
    for e, v in result["entries"].items():
        lines.append(f"  {result['prefix']}_{e}: {v['worst']} bytes via {' -> '.join(v['path'])}")
    for flag in ("dynamic", "recursive", "unresolved", "unknown"):
        if result[flag]:
            lines.append(f"  {flag}: {', '.join(result[flag])}")
    if not result["bounded"]:
        lines.append("  NOT BOUNDED: the figures above are not a safe bound")
    return "\n".join(lines)
