"""A cost model of one SELLER training step on many GPUs: predicted tokens/s per frozen-LLM layout
(zero3, hpz, node, replicated), from the compute, gather, all-to-all and gradient terms that
docs/scaling.md states; and of `seller-dist prep` with engine=ray on many nodes. It exists because
the multi-node runs that matter (8B and 70B frozen LLMs on 8 to 64 GPUs, 1B events) cannot be
measured here: it says which term dominates and what a layout change buys, and its arithmetic is
checked against what `seller-dist bench train` and `seller-dist bench prep` measure on one machine."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from seller_dist.train.metrics import flops_per_step, mfu

LAYOUTS = ("zero3", "hpz", "node", "replicated")


@dataclass(frozen=True)
class LLMSpec:
    name: str
    params: float  # frozen parameters N_f
    layers: int
    hidden: int


LLAMA_8B = LLMSpec("llama-8b", 8.03e9, 32, 4096)
LLAMA_70B = LLMSpec("llama-70b", 70.6e9, 80, 8192)


@dataclass(frozen=True)
class Workload:
    seq_len: float = 1024  # tokens per sequence (a mean where the lengths vary)
    micro_batch: int = 8  # sequences per GPU per micro-batch
    grad_accum: int = 1
    trainable_params: float = 30e6  # N_t: encoders + fusion + router + experts (SELLER adapter)
    routed_tokens: int = 3  # A: adapter positions through the experts (num_soft_tokens 8 - pointer_tokens 5)
    top_k: int = 2
    adapter_dim: int = 256  # d_model of the adapter (the MoE input)
    ep_size: int = 8
    param_bytes: int = 2  # frozen weights in bf16
    attention: bool = True  # count attention score FLOPs (not in the 4N/6N MFU accounting)


@dataclass(frozen=True)
class ClusterSpec:
    gpus: int
    gpus_per_node: int = 8
    peak_tflops: float = 989.0  # H100/H200 dense bf16
    efficiency: float = 0.45  # fraction of peak the matmuls reach (the compute-only MFU)
    intra_node_gbs: float = 300.0  # GB/s per GPU achieved by NVLink collectives
    inter_node_gbs: float = 40.0  # GB/s per GPU across nodes (400 Gb/s NIC per GPU, ~80 % used)
    overlap: float = 0.5  # fraction of the shorter of compute / communication hidden under the other
    gpu_memory_gb: float = 80.0


def flops_per_token(llm: LLMSpec, w: Workload) -> float:
    """4 N_f per token through the frozen LLM (forward 2N + activation gradients 2N), the trainable
    modules' 6 N_t once per sample, plus causal attention scores (forward 2*L*s*H, x3 with backward)
    when `w.attention`."""
    f = flops_per_step(llm.params, w.trainable_params, 1, 1 / w.seq_len)
    if w.attention:
        f += 6.0 * llm.layers * w.seq_len * llm.hidden  # causal: 2*s*H per layer forward, x3
    return f


def gather_bytes_per_micro(llm: LLMSpec, w: Workload, gpus: int) -> float:
    """Bytes each GPU receives to gather the frozen LLM once per pass, two passes per micro-batch."""
    if gpus <= 1:
        return 0.0
    return 2.0 * llm.params * w.param_bytes * (gpus - 1) / gpus


def step_cost(llm: LLMSpec, w: Workload, c: ClusterSpec, layout: str = "zero3") -> dict[str, Any]:
    """Seconds per optimizer step by term, and the predicted tokens/s of the whole job."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    g, node = c.gpus, min(c.gpus, c.gpus_per_node)
    multi_node = g > c.gpus_per_node
    slow_bw = (c.inter_node_gbs if multi_node else c.intra_node_gbs) * 1e9
    fast_bw = c.intra_node_gbs * 1e9
    tokens = w.micro_batch * w.seq_len * w.grad_accum  # per GPU per step
    compute = tokens * flops_per_token(llm, w) / (c.peak_tflops * 1e12 * c.efficiency)

    one_pass = llm.params * w.param_bytes
    if layout == "zero3":
        gather_b = gather_bytes_per_micro(llm, w, g) * w.grad_accum
        gather_s = gather_b / slow_bw
    elif layout == "hpz":
        fwd = one_pass * (g - 1) / g * w.grad_accum
        bwd = one_pass * (node - 1) / node * w.grad_accum
        gather_b, gather_s = fwd + bwd, fwd / slow_bw + bwd / fast_bw
    elif layout == "node":
        gather_b = gather_bytes_per_micro(llm, w, node) * w.grad_accum
        gather_s = gather_b / fast_bw
    else:
        gather_b = gather_s = 0.0
    frozen_gb = {
        "zero3": one_pass / g,
        "hpz": one_pass / g + one_pass / node,
        "node": one_pass / node,
        "replicated": one_pass,
    }[layout] / 1e9

    ep = min(w.ep_size, g)
    rows = w.micro_batch * w.routed_tokens * w.top_k * w.grad_accum
    # 2 (dispatch + combine) x 2 (forward + backward) x 4 bytes (fp32)
    a2a_b = 2 * 2 * rows * (w.adapter_dim + llm.hidden) * 4 * (ep - 1) / ep if ep > 1 else 0.0
    a2a_bw = fast_bw if ep <= c.gpus_per_node else slow_bw
    grad_b = 2.0 * w.trainable_params * 4 * (g - 1) / g if g > 1 else 0.0
    comm = gather_s + a2a_b / a2a_bw + grad_b / slow_bw
    step = compute + comm - c.overlap * min(compute, comm)
    return {
        "llm": llm.name,
        "gpus": g,
        "layout": layout,
        "compute_s": compute,
        "gather_bytes": gather_b,
        "gather_s": gather_s,
        "all_to_all_bytes": a2a_b,
        "all_to_all_s": a2a_b / a2a_bw,
        "grad_bytes": grad_b,
        "grad_s": grad_b / slow_bw,
        "comm_s": comm,
        "step_s": step,
        "tokens_per_s": g * tokens / step,
        "tokens_per_s_per_gpu": tokens / step,
        "mfu": mfu(
            flops_per_step(llm.params, w.trainable_params, tokens, tokens / w.seq_len), step, c.peak_tflops
        ),
        "frozen_weights_gb_per_gpu": frozen_gb,
        "fits": frozen_gb < 0.6 * c.gpu_memory_gb,
    }


def predict(
    llms: tuple[LLMSpec, ...] = (LLAMA_8B, LLAMA_70B),
    gpus: tuple[int, ...] = (8, 16, 32, 64),
    layouts: tuple[str, ...] = LAYOUTS,
    workload: Workload | None = None,
    cluster: ClusterSpec | None = None,
) -> list[dict[str, Any]]:
    """The docs/scaling.md table: every (LLM, GPU count, layout)."""
    w = workload or Workload()
    base = cluster or ClusterSpec(gpus=8)
    return [step_cost(m, w, replace(base, gpus=g), lay) for m in llms for g in gpus for lay in layouts]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| LLM | GPUs | frozen layout | compute s | gather GB | comm s | step s | tokens/s | "
        "tokens/s/GPU | MFU | frozen GB/GPU |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fits = "" if r["fits"] else " (does not fit)"
        lines.append(
            f"| {r['llm']} | {r['gpus']} | {r['layout']} | {r['compute_s']:.3f} | {r['gather_bytes'] / 1e9:.1f} | "
            f"{r['comm_s']:.3f} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_per_gpu']:.0f} | "
            f"{r['mfu']:.1%} | {r['frozen_weights_gb_per_gpu']:.1f}{fits} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class PrepCluster:
    """engine=ray `seller-dist prep` on `nodes` nodes: the CPU cost and the records per event come from
    a measured run (`fit_wall`), the byte sizes and the upload rate are assumptions."""

    nodes: int
    cpu_s_per_event: float  # CPU seconds per event: a fit's k x the CPUs it ran on
    records_per_event: float  # examples written per event
    cpus_per_node: int = 32
    partition_max_events: int = 250_000  # PrepConfig's default
    parsed_bytes_per_event: float = 80.0  # assumed: one parsed event as Arrow in the object store
    bytes_per_record: float = 3200.0  # assumed: one output record (JSON with a 20-event history)
    upload_gbs_per_node: float = 1.0  # assumed: shard upload rate of a node, GB/s
    shuffle_index_bytes: int = 32  # Ray Data's disk shuffle: 4 int64 per (map task, partition)


def fit_wall(runs: list[tuple[int, float]]) -> tuple[float, float]:
    """(T0 seconds, k seconds per event) of `wall = T0 + E * k` through two (events, wall seconds) runs."""
    (e1, w1), (e2, w2) = sorted(runs)
    if e1 == e2:
        raise ValueError(f"two different sizes are needed, got {e1} twice")
    k = (w2 - w1) / (e2 - e1)
    return w1 - e1 * k, k


def prep_cost(events: int, c: PrepCluster) -> dict[str, Any]:
    """What engine=ray does with `events` on the cluster (cut tasks as data_prep.ray_pipeline.cut_plan
    makes them, shuffle map tasks of about partition_max_events events each) and the wall time as the
    CPU term plus the output upload, no overlap."""
    from data_prep.ray_pipeline import cut_plan
    from seller_dist.config import PrepConfig

    cpus = c.nodes * c.cpus_per_node
    partitions, _ = cut_plan(events, 0, cpus, PrepConfig(partition_max_events=c.partition_max_events))
    map_tasks = -(-events // c.partition_max_events)
    cpu_s = c.cpu_s_per_event * events / cpus
    output_bytes = events * c.records_per_event * c.bytes_per_record
    upload_s = output_bytes / (c.nodes * c.upload_gbs_per_node * 1e9)
    return {
        "nodes": c.nodes,
        "cpus": cpus,
        "cut_tasks": partitions,
        "events_per_cut_task": events / partitions,
        "map_tasks": map_tasks,
        "cpu_s": cpu_s,
        "parsed_bytes_per_node": events * c.parsed_bytes_per_event / c.nodes,
        "driver_shuffle_index_bytes": map_tasks * partitions * c.shuffle_index_bytes,
        "output_bytes": output_bytes,
        "upload_s": upload_s,
        "wall_s": cpu_s + upload_s,
    }
