"""LoRA: a low-rank weight update fine-tuned on the discovery prompts (Hu et al. 2022,
"LoRA: Low-Rank Adaptation of Large Language Models"), the fine-tuning baseline AxBench
(Wu et al. 2025, "AxBench: Steering LLMs? Even Simple Baselines Outperform Sparse
Autoencoders") compares steering methods against.

Fit: every positive prompt gets a target completion (default: one fixed refusal sentence,
``positive_target``) and every negative prompt the model's own greedy answer (up to
``answer_tokens`` tokens; ``negative_target`` sets a fixed text instead), so the adapter
learns "behave so on the positive prompts and as before on the negative ones", not "always
behave so" (for refusal: refuse harmful requests, still answer benign ones). A peft LoRA
adapter (rank r, alpha; default all seven attention and MLP projections of layers
floor(0.6 L) .. L-1) is trained for a fixed number of AdamW steps on the chat-formatted
prompt + target, with the loss on the target tokens only (the prompt is masked), float32
adapter weights, a seeded initialisation and a seeded data order: a given seed gives a
bit-identical adapter on CPU.

``fit`` sees prompts only, so completions that come with a dataset (JBB's affirmative
``Target`` column) do not reach it: ``completions`` maps prompts to their own targets (they
override the side's rule), and ``completions: jbb`` reads JBB-Behaviors' Goal -> Target
pairs, the remove-refusal adapter (harmful prompts -> "Sure, here is ...", benign prompts
-> the model's own answers).

Steering with strength s folds s times the update into each adapted Linear,
W' = W + s (alpha / r) B A: exact and free per token, the originals restored bit for bit
on exit. s = 1 is peft's merged model, 0 the unchanged model, -1 the opposite update.
Strength convention: +1 moves toward the targets it was trained on (with the defaults:
adds refusal); negative strengths reverse the update, an extrapolation no loss trained for
(a fine-tuned update, unlike a mean difference, has no reason to be symmetric), and the
reverse of "answer benign prompts as before" is not "answer them better".

How it differs from the closest methods: CAA and the other vector methods read activations
and add a direction; directional ablation also edits weights, but with a projection
computed from activations. LoRA is the only one trained by gradient descent on a
language-modelling loss over target text: it needs target completions, not only
contrasting prompts, and fitting it costs a training run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from steerbench.errors import SteerbenchError
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod
from steerbench.model.adapter import ModelAdapter, default_steering_layer
from steerbench.model.chat import format_prompts, prompt_token_ids
from steerbench.model.generation import GenerationSettings, generate_tokens
from steerbench.options import NonNegative, Positive, PositiveFloat

log = logging.getLogger(__name__)

REFUSAL = "I'm sorry, but I can't help with that."
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
JBB_HARMFUL = "jbb/harmful-behaviors.csv"
ADAPTER = "default"
REFIT = "fit it again with `steerbench discover`"

Example = tuple[list[int], list[int]]
"""One training sequence: the rendered prompt's token ids and the target's."""


def adapted_modules(model: nn.Module, layers: list[int], projections: Sequence[str]) -> list[str]:
    """Full names of the ``nn.Linear`` modules of ``layers`` whose own name is one of
    ``projections``, in model order."""
    adapter = ModelAdapter.from_model(model)
    names = {id(module): name for name, module in model.named_modules()}
    found = []
    for layer in layers:
        block = adapter.block(layer)
        for sub, module in block.named_modules():
            if isinstance(module, nn.Linear) and sub.rpartition(".")[2] in projections:
                found.append(f"{names[id(block)]}.{sub}")
    if not found:
        raise SteerbenchError(
            f"lora: layers {layers} have no Linear module named {', '.join(projections)}; "
            f"name the model's projections in `projections`"
        )
    return found


def jbb_completions() -> dict[str, str]:
    """JBB-Behaviors' harmful goals mapped to their affirmative ``Target`` completions."""
    from steerbench.run.prompt_files import read_rows
    from steerbench.run.prompt_sets import verified_path

    rows = read_rows(verified_path(JBB_HARMFUL))
    return {row["Goal"].strip(): row["Target"].strip() for row in rows}


def end_of_answer(model: nn.Module, tokenizer: Any) -> int:
    """The token a fixed target ends with: the tokenizer's end token if generation stops
    on it, else the first token it stops on (the model learns to stop there)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    if tokenizer.eos_token_id is not None and (not stops or tokenizer.eos_token_id in stops):
        return int(tokenizer.eos_token_id)
    if not stops:
        raise SteerbenchError("lora: the tokenizer and model name no end-of-answer token")
    return int(stops[0])


def batch_schedule(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Which examples each step trains on: seeded permutations of all examples, one after
    another (a new one each epoch), cut into batches; the same for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += torch.randperm(n, generator=generator).tolist()
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def collate(
    examples: Sequence[Example], pad_id: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """Left-padded prompt + target rows (every target ends at the last column, as in
    generation), their labels (-100 but on target tokens) and how many final positions'
    logits the loss needs, so that the output head runs on those only."""
    width = max(len(p) + len(t) for p, t in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (prompt, target) in enumerate(examples):
        sequence = prompt + target
        ids[row, width - len(sequence) :] = torch.tensor(sequence)
        mask[row, width - len(sequence) :] = 1
        labels[row, width - len(target) :] = torch.tensor(target)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    keep = max(len(t) for _, t in examples) + 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}, labels, keep


def target_loss(model: nn.Module, examples: Sequence[Example], pad_id: int) -> torch.Tensor:
    """Mean cross-entropy of the target tokens given their prompt (and earlier targets)."""
    device = next(model.parameters()).device
    batch, labels, keep = collate(examples, pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(**batch, logits_to_keep=keep, use_cache=False).logits
    predicted = logits[:, :-1].float()  # position q predicts token q + 1
    gold = labels[:, -(keep - 1) :].to(device)
    return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), gold.reshape(-1))


def _initialise(layers: dict[str, Any], seed: int) -> list[nn.Parameter]:
    """float32 master weights, A by peft's rule (Kaiming uniform) from a seeded generator of
    its own (neither the global RNG nor the device changes it), B zero: the update starts
    at zero. Returns the trainable parameters."""
    generator = torch.Generator().manual_seed(seed)
    params: list[nn.Parameter] = []
    for layer in layers.values():
        lora_a, lora_b = layer.lora_A[ADAPTER].float(), layer.lora_B[ADAPTER].float()
        init = torch.empty(lora_a.weight.shape)
        nn.init.kaiming_uniform_(init, a=math.sqrt(5), generator=generator)
        with torch.no_grad():
            lora_a.weight.copy_(init)
            lora_b.weight.zero_()
        params += [lora_a.weight, lora_b.weight]
    return params


def train_adapter(
    model: nn.Module, names: list[str], examples: list[Example], config: Any, pad_id: int
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Inject a peft LoRA adapter on ``names``, train it and remove it again: returns its
    tensors and the loss of every step. The model leaves as it came (modules, weights,
    ``requires_grad``), also when training fails."""
    from peft import LoraConfig, LoraModel

    lora_config = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, target_modules=names, lora_dropout=0.0
    )
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    with torch.random.fork_rng(devices=[]):  # peft's own init must not move the global RNG
        tuner = LoraModel(model, lora_config, ADAPTER)
    try:
        layers: dict[str, Any] = {name: model.get_submodule(name) for name in names}
        optimiser = torch.optim.AdamW(
            _initialise(layers, config.seed), lr=config.learning_rate, weight_decay=0.0
        )
        losses = []
        schedule = batch_schedule(len(examples), config.batch_size, config.steps, config.seed)
        with torch.inference_mode(False), torch.enable_grad():
            for step, rows in enumerate(schedule):
                loss = target_loss(model, [examples[i] for i in rows], pad_id)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
                log.debug("lora step %d/%d: loss %.4f", step + 1, len(schedule), losses[-1])
        tensors = {}
        for name, layer in layers.items():
            tensors[f"{name}.lora_A"] = layer.lora_A[ADAPTER].weight.detach().cpu().clone()
            tensors[f"{name}.lora_B"] = layer.lora_B[ADAPTER].weight.detach().cpu().clone()
    finally:
        tuner.unload()
        for name, param in model.named_parameters():
            param.requires_grad_(trainable[name])
    return tensors, losses


@contextmanager
def fold_updates(
    updates: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]], scale: float
) -> Iterator[None]:
    """W <- W + scale (B A) for each (Linear, A, B), in float32, rounded once to the
    weight's dtype; the saved originals are copied back on exit (also on an exception)."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module, lora_a, lora_b in updates:
                weight = module.weight
                saved.append((weight, weight.detach().clone()))
                a = lora_a.to(device=weight.device, dtype=torch.float32)
                b = lora_b.to(device=weight.device, dtype=torch.float32)
                weight.copy_(weight.float() + (b @ a) * scale)
        yield
    finally:
        with torch.no_grad():
            for tensor, original in reversed(saved):
                tensor.copy_(original)


@METHODS.register("lora")
class LoRA(SteeringMethod):
    """Fine-tune a LoRA adapter toward the positive side's targets; fold s x its update."""

    description = "LoRA fine-tuned on the discovery prompts (AxBench's baseline); s scales it"
    neutral_strength = 0.0
    default_strengths = (1.0, -1.0)
    strength_domain = (-2.0, 2.0)

    @dataclass
    class Config:
        rank: Positive = 8
        alpha: PositiveFloat = 16.0
        """The update is scaled by alpha / rank (peft's rule)."""
        layers: list[int] | str | None = None
        """Layer indices, "all", or None: floor(0.6 L) .. L-1."""
        projections: list[str] = field(default_factory=lambda: list(PROJECTIONS))
        """Names of the Linear modules adapted in those layers."""
        steps: Positive = 32
        batch_size: Positive = 4
        learning_rate: PositiveFloat = 1e-3
        seed: NonNegative = 0
        """Seeds the adapter's initialisation and the data order."""
        positive_target: str | None = REFUSAL
        """Target of every positive prompt; None: the model's own greedy answer."""
        negative_target: str | None = None
        """Target of every negative prompt; None: the model's own greedy answer."""
        completions: dict[str, str] | Literal["jbb"] = field(default_factory=dict)
        """Per-prompt targets overriding the two above, or "jbb": JBB's Goal -> Target."""
        answer_tokens: Positive = 32
        """Length limit of the model's own answers used as targets."""

        def __post_init__(self) -> None:
            if not self.projections or not all(p.strip() for p in self.projections):
                raise SteerbenchError("lora: projections must name at least one module")

    config: Config

    def steering_layers(self, n_layers: int) -> list[int]:
        chosen = self.config.layers
        if chosen is None:
            return list(range(default_steering_layer(n_layers), n_layers))
        if chosen == "all":
            return list(range(n_layers))
        if isinstance(chosen, str) or not chosen or not all(0 <= x < n_layers for x in chosen):
            raise SteerbenchError(
                f"lora layers must be 'all' or indices in [0, {n_layers - 1}], got {chosen!r}"
            )
        return sorted(set(chosen))

    def check_model(self, adapter: Any) -> None:
        self.steering_layers(adapter.n_layers)

    def training_examples(
        self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]
    ) -> list[Example]:
        """(prompt ids, target ids) of every positive, then every negative prompt: a fixed
        target ends with the end-of-answer token; the model's own answer is its greedy
        token ids, ending where generation ended."""
        tokenizer, config = ctx.tokenizer, self.config
        completions = jbb_completions() if config.completions == "jbb" else config.completions
        completions = {k.strip(): v for k, v in completions.items()}
        prompts = [*positive, *negative]
        rules = [config.positive_target] * len(positive) + [config.negative_target] * len(negative)
        texts = [completions.get(p.strip(), rule) for p, rule in zip(prompts, rules)]
        own = [i for i, text in enumerate(texts) if text is None]
        targets: dict[int, list[int]] = {}
        if own:
            settings = GenerationSettings(
                max_new_tokens=config.answer_tokens, batch_size=ctx.batch_size
            )
            answers = generate_tokens(
                ctx.model, tokenizer, [prompts[i] for i in own], settings, ctx.fmt,
                progress=ctx.progress,
            )  # fmt: skip
            targets.update(zip(own, answers))
        end = end_of_answer(ctx.model, tokenizer)
        for i, text in enumerate(texts):
            if text is not None:
                targets[i] = tokenizer(text, add_special_tokens=False)["input_ids"] + [end]
        chat = ctx.fmt.uses_chat(tokenizer)
        rendered = format_prompts(tokenizer, prompts, ctx.fmt)
        prompt_ids = prompt_token_ids(tokenizer, rendered, chat=chat)
        return [(list(prompt_ids[i]), list(targets[i])) for i in range(len(prompts))]

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        if not positive or not negative:
            raise SteerbenchError("lora needs positive and negative prompts to train on")
        adapter = ModelAdapter.from_model(ctx.model)
        layers = self.steering_layers(adapter.n_layers)
        names = adapted_modules(ctx.model, layers, self.config.projections)
        examples = self.training_examples(ctx, positive, negative)
        pad = ctx.tokenizer.pad_token_id
        pad = ctx.tokenizer.eos_token_id if pad is None else pad
        started = time.perf_counter()
        tensors, losses = train_adapter(ctx.model, names, examples, self.config, pad)
        seconds = round(time.perf_counter() - started, 2)
        n_params = sum(t.numel() for t in tensors.values())
        log.info("lora: %d steps in %.1f s, loss %.3f -> %.3f", len(losses), seconds,
                 losses[0], losses[-1])  # fmt: skip
        summary = {
            "layers": layers,
            "modules": len(names),
            "parameters": n_params,
            "loss": f"{losses[0]:.3f} -> {losses[-1]:.3f}",
            "train_seconds": seconds,
        }
        return self.make_artifact(
            ctx, positive, negative, tensors,
            modules=names, layers=layers, rank=self.config.rank,
            scaling=self.config.alpha / self.config.rank, losses=losses,
            train_seconds=seconds, summary=summary,
        )  # fmt: skip

    def check_artifact(self, artifact: Artifact) -> None:
        """Beyond the base checks: the modules named in the metadata, each with a float
        A [r, in] and B [out, r] of one rank, and nothing else; a finite scaling."""
        super().check_artifact(artifact)
        modules, scaling = artifact.metadata.get("modules"), artifact.metadata.get("scaling")
        if not (
            isinstance(modules, list)
            and modules
            and all(isinstance(m, str) for m in modules)
            and len(set(modules)) == len(modules)
        ):
            raise SteerbenchError(f"lora artifact names no modules (metadata 'modules'); {REFIT}")
        if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
            raise SteerbenchError(f"lora artifact scaling {scaling!r} is not a number; {REFIT}")
        if not math.isfinite(scaling):
            raise SteerbenchError(f"lora artifact scaling {scaling!r} is not finite; {REFIT}")
        expected = {f"{m}.{part}" for m in modules for part in ("lora_A", "lora_B")}
        if set(artifact.tensors) != expected:
            odd = sorted(set(artifact.tensors) ^ expected)[:3]
            raise SteerbenchError(f"lora artifact tensors do not match its modules {odd}; {REFIT}")
        ranks = set()
        for name in modules:
            a, b = artifact.tensors[f"{name}.lora_A"], artifact.tensors[f"{name}.lora_B"]
            finite = all(t.is_floating_point() and bool(torch.isfinite(t).all()) for t in (a, b))
            if not finite or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise SteerbenchError(
                    f"lora artifact {name}: A {tuple(a.shape)} and B {tuple(b.shape)} are not a "
                    f"finite rank-r pair; {REFIT}"
                )
            ranks.add(a.shape[0])
        if len(ranks) != 1:
            raise SteerbenchError(f"lora artifact mixes ranks {sorted(ranks)}; {REFIT}")

    def apply(self, model, artifact: Artifact, strength: float) -> AbstractContextManager[None]:
        updates = []
        for name in artifact.metadata["modules"]:
            a, b = artifact.tensors[f"{name}.lora_A"], artifact.tensors[f"{name}.lora_B"]
            try:
                module = model.get_submodule(name)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                raise SteerbenchError(f"lora artifact adapts {name!r}, not a Linear here; {REFIT}")
            if tuple(module.weight.shape) != (b.shape[0], a.shape[1]):
                raise SteerbenchError(
                    f"lora artifact {name}: update {(b.shape[0], a.shape[1])} does not fit the "
                    f"weight {tuple(module.weight.shape)}; {REFIT}"
                )
            updates.append((module, a, b))
        return fold_updates(updates, float(artifact.metadata["scaling"]) * strength)
