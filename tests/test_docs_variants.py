"""The per-variant docs and model cards agree with the code and manifests they describe.

The tables between `<!-- generated -->` markers in docs/variants/<variant>.md are rendered
from `model_code.variants`, `model_code.variables`, the promotion gates of `adapters.gates`
and the checked-in training and serving manifests; a change to any of them fails here until the docs are regenerated:

    .venv/bin/python tests/test_docs_variants.py --write
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_code.variants import VARIANTS, VariantSpec, model_kwargs  # noqa: E402

BEGIN, END = "<!-- generated: do not edit; tests/test_docs_variants.py --write -->", "<!-- end generated -->"
ARCHITECTURE = ("embed_dim", "num_heads", "encoder_depths", "decoder_depths", "encoder_num_heads",
                "window_size", "latent_levels")


def class_defaults(cls) -> dict:
    """Constructor defaults of an Aurora class, subclass values over its bases'."""
    out = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            out.update({k: p.default for k, p in inspect.signature(klass.__init__).parameters.items()
                        if p.default is not inspect.Parameter.empty})
    return out


def fmt(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def facts(spec: VariantSpec) -> str:
    full = {**class_defaults(spec.model_class), **model_kwargs(spec, "full")}
    tiny = {**full, **model_kwargs(spec, "tiny")}
    h, w = spec.grid.shape
    rows = [
        ("Aurora class", f"`{spec.model_class.__name__}` (microsoft-aurora 2.0.1)"),
        ("published weights", f"`{spec.checkpoint_name}`"),
        ("native grid", f"{spec.grid.resolution}°, {h} x {w} (latitude x longitude)"),
        ("patch size", f"{spec.patch_size} x {spec.patch_size} cells"),
        ("time step", f"{spec.timestep_hours} h"),
        ("history", f"{spec.min_history} to {spec.max_history} input times, {spec.timestep_hours} h apart"),
        ("pressure levels", f"{len(spec.levels)}: {fmt(spec.levels)} hPa"),
        ("LoRA", f"{'on' if spec.use_lora else 'off'}, mode `{spec.lora_mode}`"),
        ("full profile", "; ".join(f"{k} {fmt(full[k])}" for k in ARCHITECTURE)),
        ("tiny profile", "; ".join(f"{k} {fmt(tiny[k])}" for k in ARCHITECTURE)),
        ("tiny test grid", f"{spec.tiny_grid[0]} x {spec.tiny_grid[1]}"),
    ]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def variable_table(variables, levels: int) -> str:
    rows = "".join(
        f"| {v.kind} | `{v.name}` | `{v.dataset_name}` | {v.units} | {v.long_name} | "
        f"{levels if v.kind == 'atmos' else 1} | {'NaN over land and sea ice' if v.nan_by_design else ''} |\n"
        for v in variables)
    return ("| kind | Aurora name | dataset name | units | long name | levels | notes |\n"
            "|---|---|---|---|---|--:|---|\n" + rows)


def sizes(spec: VariantSpec) -> str:
    h, w = spec.grid.shape
    cell = 4 * h * w  # float32 bytes per field
    levels = len(spec.levels)
    window = cell * (spec.max_history * (len(spec.surf_vars) + levels * len(spec.atmos_vars))
                     + len(spec.static_vars))
    h_out = h - h % spec.patch_size
    step = 4 * h_out * w * (len(spec.output_surf_vars) + levels * len(spec.output_atmos_vars))
    fields_in = spec.max_history * (len(spec.surf_vars) + levels * len(spec.atmos_vars)) + len(spec.static_vars)
    fields_out = len(spec.output_surf_vars) + levels * len(spec.output_atmos_vars)
    return ("| payload at the native grid, float32 | fields | size |\n|---|--:|--:|\n"
            f"| input window ({spec.max_history} times + statics) | {fields_in} | {window / 2**20:,.0f} MiB |\n"
            f"| one output step ({h_out} x {w}) | {fields_out} | {step / 2**20:,.0f} MiB |\n")


def training_settings(spec: VariantSpec) -> str:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "training" / f"{spec.name}.yaml").read_text()))
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["train.yaml"])
    trainer = next(d for d in docs if d["kind"] == "TrainJob")["spec"]["trainer"]
    gpus = trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
    rows = [
        ("nodes x GPUs", f"{trainer['numNodes']} x {gpus} (torchrun, {trainer['numProcPerNode']} processes per node)"),
        ("memory per node", trainer["resourcesPerNode"]["limits"]["memory"]),
        ("global batch", config["data"]["batch_size"]),
        ("steps", f"{config['train']['max_steps']} (validation every {config['train']['val_every']})"),
        ("precision", f"{config['train']['precision']}, activation checkpointing "
                      f"{'on' if config['train'].get('activation_checkpointing') else 'off'}"),
        ("data", ", ".join(f"`{p}`" for p in config["data"]["paths"])),
    ]
    return (f"From `manifests/training/{spec.name}.yaml` (the dev overlay runs 1 node x 1 GPU):\n\n"
            "| setting | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows))


def serving_resources(spec: VariantSpec) -> str:
    isvc = yaml.safe_load((ROOT / "manifests" / "serving" / spec.name / "inferenceservice.yaml").read_text())
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    resources = container["resources"]
    rows = [(k, resources["requests"].get(k, "-"), resources["limits"].get(k, "-"))
            for k in ("cpu", "memory", "nvidia.com/gpu", "ephemeral-storage")]
    return (f"From `manifests/serving/{spec.name}/inferenceservice.yaml` (`{isvc['metadata']['name']}`; "
            "prod runs 2 to 4 replicas, dev 0 to 1):\n\n"
            "| resource | request | limit |\n|---|--:|--:|\n" + "".join(f"| {k} | {r} | {l} |\n" for k, r, l in rows))


def promotion_gates(spec: VariantSpec) -> str:
    from adapters.gates import default_gates

    rows = "".join(
        f"| {g.metric} | `{g.variable}` | {'-' if g.level is None else f'{g.level:g} hPa'} | "
        f"{g.region or 'whole grid'} | "
        f"{g.lead_hours if isinstance(g.lead_hours, str) else ', '.join(f'{h:g}' for h in g.lead_hours)} | "
        f"{', '.join(g.comparators)} |\n"
        for g in default_gates(spec.name))
    return ("From `adapters/gates.py`: a challenger becomes champion only if it beats every comparator "
            "on every row ([registry.md](../registry.md#promotion-gates)).\n\n"
            "| metric | variable | level | region | lead hours | must beat |\n|---|---|---|---|---|---|\n" + rows)


def generated(spec: VariantSpec) -> str:
    levels = len(spec.levels)
    return "\n".join([
        BEGIN, "", "### At a glance", "", facts(spec),
        "### Inputs", "", variable_table(spec.inputs(), levels),
        "### Outputs", "", variable_table(spec.outputs(), levels),
        "### Payload sizes", "", sizes(spec),
        "### Training settings on a cluster", "", training_settings(spec),
        "### Promotion gates", "", promotion_gates(spec),
        "### Predictor resources", "", serving_resources(spec),
        END,
    ])


def doc_path(variant: str) -> Path:
    return ROOT / "docs" / "variants" / f"{variant}.md"


def replace_generated(text: str, block: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no generated block ({BEGIN} ... {END})")
    return pattern.sub(lambda _: block, text)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_doc_tables_match_the_code_and_manifests(variant):
    text = doc_path(variant).read_text()
    assert replace_generated(text, generated(VARIANTS[variant])) == text, (
        "regenerate with: .venv/bin/python tests/test_docs_variants.py --write")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_model_card_has_every_section_and_cites_the_benchmarks(variant):
    text = (ROOT / "docs" / "model-cards" / f"{variant}.md").read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    for wanted in ("Capabilities", "Limitations", "Training data", "Evaluation", "Intended use",
                   "Ethical considerations"):
        assert any(s.startswith(wanted) for s in sections), (variant, wanted, sections)
    assert "benchmarks.md" in text and f"variants/{variant}.md" in text


def test_every_variant_has_a_doc_and_a_card_and_nothing_else():
    docs = {p.stem for p in (ROOT / "docs" / "variants").glob("*.md")}
    cards = {p.stem for p in (ROOT / "docs" / "model-cards").glob("*.md")}
    assert docs == cards == set(VARIANTS)


def test_generated_block_changes_with_the_catalogue():
    spec = VARIANTS["medium-range"]
    changed = VariantSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, "patch_size": 8})
    assert generated(changed) != generated(spec)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_docs_variants.py --write")
    for name, spec in VARIANTS.items():
        path = doc_path(name)
        path.write_text(replace_generated(path.read_text(), generated(spec)))
        print(f"wrote {path.relative_to(ROOT)}")
