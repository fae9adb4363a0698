"""The export report: per-layer table, totals and budget check."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BudgetError
from .validate import fmt_shape

# Defaults for --target: a mid-range Cortex-M4 (STM32F4/L4 class).
TARGET_BUDGETS_KB = {"cortex-m4": (1024, 192), "host": (None, None)}


@dataclass
class LayerRow:
    name: str
    keras_class: str
    output_shape: tuple
    params: int
    macs: int
    weight_bytes: int
    live_bytes: int


@dataclass
class Report:
    model_name: str
    prefix: str
    dtype: str
    target: str
    out_dir: str | None
    layers: list = field(default_factory=list)        # LayerRow
    infos: list = field(default_factory=list)         # validate.LayerInfo
    warnings: list = field(default_factory=list)
    arena_bytes: int = 0
    state_bytes: int = 0       # stateful recurrent layers' state, outside the arena
    weight_bytes: int = 0
    peak_tensors: list = field(default_factory=list)
    planner: list = field(default_factory=list)       # the arena planner's choices
    quantization: dict = field(default_factory=dict)  # tensor -> (scale, zero point)
    graph: object = field(default=None, repr=False)    # the IR, for layer_metrics

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    def table(self) -> str:
        head = ("layer", "type", "output", "params", "MACs", "weight B", "arena live B")
        rows = [head] + [(r.name, r.keras_class, fmt_shape(r.output_shape), str(r.params),
                          str(r.macs), str(r.weight_bytes), str(r.live_bytes))
                         for r in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"total: {self.params} params, {self.macs} MACs, "
                     f"{self.weight_bytes} B weights (flash), {self.arena_bytes} B arena (RAM), "
                     + (f"{self.state_bytes} B recurrent state (RAM), " if self.state_bytes else "")
                     + f"{self.dtype}")
        if self.peak_tensors:
            lines.append("arena peak while live: " + ", ".join(self.peak_tensors))
        lines.extend("arena plan: " + note for note in self.planner)
        return "\n".join(lines)

    def explain(self) -> str:
        return "\n".join(i.explain() for i in self.infos)

    def to_dict(self) -> dict:
        return {"model": self.model_name, "prefix": self.prefix, "dtype": self.dtype,
                "target": self.target, "params": self.params, "macs": self.macs,
                "arena_bytes": self.arena_bytes, "state_bytes": self.state_bytes,
                "weight_bytes": self.weight_bytes,
                "warnings": list(self.warnings), "planner": list(self.planner),
                "layers": [r.__dict__ | {"output_shape": list(r.output_shape)} for r in self.layers]}


def check_weights_fit(graph, dtype: str, flash_kb) -> None:
    """Before calibrating a model that cannot fit anyway: its weights alone
    (1 byte each in int8, 4 in float32) against the flash budget."""
    if flash_kb is None:
        return
    per_layer: dict = {}
    for n in graph.nodes:
        size = sum(w.size for w in n.weights.values()) * (1 if dtype == "int8" else 4)
        per_layer[n.layer] = per_layer.get(n.layer, 0) + size
    total = sum(per_layer.values())
    if total > flash_kb * 1024:
        top = sorted(per_layer.items(), key=lambda kv: -kv[1])[:3]
        raise BudgetError(
            f"the model does not fit the target's budget: flash: at least {total} B of "
            f"{dtype} weights > {flash_kb} KB ({flash_kb * 1024} B); largest: "
            + ", ".join(f"{name} {size} B" for name, size in top)
            + " (raise --flash-kb if your part has more)")


def check_budget(report: Report, flash_kb, ram_kb) -> None:
    over = []
    if flash_kb is not None and report.weight_bytes > flash_kb * 1024:
        top = sorted(report.layers, key=lambda r: -r.weight_bytes)[:3]
        over.append(f"flash: {report.weight_bytes} B of weights > {flash_kb} KB "
                    f"({flash_kb * 1024} B); largest: "
                    + ", ".join(f"{r.name} {r.weight_bytes} B" for r in top))
    ram = report.arena_bytes + report.state_bytes
    if ram_kb is not None and ram > ram_kb * 1024:
        top = sorted(report.layers, key=lambda r: -r.live_bytes)[:3]
        state = f" + {report.state_bytes} B of recurrent state" if report.state_bytes else ""
        over.append(f"RAM: {report.arena_bytes} B of arena{state} > {ram_kb} KB "
                    f"({ram_kb * 1024} B); largest live sets at: "
                    + ", ".join(f"{r.name} {r.live_bytes} B" for r in top))
    if over:
        raise BudgetError("the model does not fit the target's budget: "
                          + "; ".join(over)
                          + " (raise --flash-kb/--ram-kb if your part has more)")
