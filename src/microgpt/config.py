"""The two frozen configurations of a run: what the model is (ModelConfig) and how it is trained (TrainConfig).

Defaults are Karpathy's microgpt.py (Feb 2026): one layer, 16 wide, 4 heads, Adam 0.01 with linear decay.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .protocol import SPLIT_SEED

NORMS = ("rmsnorm", "rmsnorm_gain", "layernorm")
ACTIVATIONS = ("relu", "gelu", "relu2", "swiglu")
DROPOUT_SITES = {"embed": "dropout_embed", "attn": "dropout_attn", "resid": "dropout_resid"}  # site -> its own rate
INITS = ("microgpt", "scaled")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "muon")
SCHEDULES = ("constant", "linear", "cosine", "exponential", "wsd")
DTYPES = ("float32", "float64")
AUTOCASTS = ("off", "bfloat16", "auto")
MAX_SAMPLES = 10_000  # names one command generates: more is a typo, and each costs a forward pass per character
DATA_ENV = "MICROGPT_DATA"  # the dataset file when --data is not given (before the cache and the download)
# Longest example accepted, in characters. The context is sized to the longest example, so one stray 10 MB line would
# ask for a 10M-position model (160M parameters at the default width); names.txt's longest is 15.
MAX_CHARS = 64
NGRAM_ORDER = 6  # `microgpt ngram`'s order: the protocol's reference model, a character 6-gram (Kneser-Ney)


class UsageError(ValueError):
    """A user's input is wrong; the message says what, with the value, and what to do. The CLI exits 2 on it."""


class SystemFailure(RuntimeError):
    """The machine failed the run (a full disk, a second Ctrl-C while saving); the message says what survived and
    what to do. The CLI prints it as one line and exits 1."""


def setting(default: Any, help: str, *, short: str | None = None, choices: tuple[str, ...] | None = None,
            group: str | None = None, metavar: str | None = None, default_text: str | None = None) -> Any:
    """A config field and its `microgpt train` flag, written once: --the-field-name (and short, e.g. "-s"), typed by
    the default, help ending with "(default X)" (default_text where the default is not a plain value), in --help's
    group (default: "model" for ModelConfig, "training" for TrainConfig)."""
    metadata = {"help": help, "short": short, "choices": choices, "group": group, "metavar": metavar,
                "default_text": default_text}
    return field(default=default, metadata={k: v for k, v in metadata.items() if v is not None})


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 27  # tokens: the dataset's characters + 1 BOS (27 for names.txt); set from the data, no flag
    block_size: int = setting(16, "positions the model has embeddings for; >= longest example + 1", short="-c",
                              default_text="the longest example + 1: 16 for names.txt")
    n_layer: int = setting(1, "transformer blocks", short="-y")
    n_head: int = setting(4, "attention heads; must divide n_embd")
    n_embd: int = setting(16, "residual stream width", short="-e")
    dropout: float = setting(0.0, "probability, on embeddings, attention weights, attention and MLP outputs; [0, 1)")
    dropout_embed: float = setting(-1.0, "dropout on the embeddings alone; -1: --dropout's",
                                   default_text="-1, --dropout's")
    dropout_attn: float = setting(-1.0, "dropout on the attention weights alone; -1: --dropout's",
                                  default_text="-1, --dropout's")
    dropout_resid: float = setting(-1.0, "dropout on the attention and MLP outputs (the residual branches) alone; "
                                   "-1: --dropout's", default_text="-1, --dropout's")
    drop_path: float = setting(0.0, "stochastic depth: probability of skipping a residual branch for a packed row, "
                               "rising linearly to this at the last block; [0, 1)")
    norm: str = setting("rmsnorm", "rmsnorm (no gain, microgpt) | rmsnorm_gain | layernorm (gain + bias)",
                        choices=NORMS)
    embed_norm: bool = setting(True, "normalise right after wte + wpe (microgpt does)")
    final_norm: bool = setting(False, "normalise before lm_head (microgpt does not; GPT-2 does)")
    activation: str = setting("relu", "MLP non-linearity: relu (microgpt) | gelu | relu2 (squared ReLU) | swiglu "
                              "(SiLU-gated, hidden ceil(8 n_embd / 3))",
                              choices=ACTIVATIONS)
    tie_weights: bool = setting(False, "lm_head shares wte's matrix (microgpt: untied)")
    residual: bool = setting(True, "x + f(x) around attention and MLP; off means x = f(x)")
    qk_norm: bool = setting(False, "RMS-normalise queries and keys per head before attention (no gain)")
    init: str = setting("microgpt", "microgpt: every matrix N(0, init_std); scaled: nanoGPT's N(0, 0.02), residual "
                        "projections / sqrt(2 n_layer)", choices=INITS)
    init_std: float = setting(0.08, "std of the microgpt init")

    def rate(self, site: str) -> float:
        """The dropout probability at a site: "embed", "attn" (attention weights) or "resid" (a block's attention and
        MLP outputs); the site's own setting where it is not -1, else --dropout."""
        own = getattr(self, DROPOUT_SITES[site])
        return self.dropout if own == -1 else own

    def path_rate(self, layer: int) -> float:
        """Stochastic depth's skip probability for block `layer` (0-based): drop_path * (layer + 1) / n_layer."""
        return self.drop_path * (layer + 1) / self.n_layer

    def mlp_hidden(self) -> int:
        """The MLP's hidden width: 4 n_embd, or ceil(8 n_embd / 3) for swiglu (same parameter count, two inputs)."""
        return -(-8 * self.n_embd // 3) if self.activation == "swiglu" else 4 * self.n_embd

    def validate(self) -> None:
        """Raise UsageError on a configuration no model can be built from."""
        _check_finite(self)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise UsageError(
                f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}: pick n_head among the divisors of n_embd"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in DROPOUT_SITES.values():
            value = getattr(self, name)
            if not (value == -1 or 0.0 <= value < 1.0):
                raise UsageError(f"{name} must be in [0, 1), or -1 for --dropout's rate; got {value!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise UsageError(f"drop_path must be in [0, 1), got {self.drop_path!r}")
        if self.drop_path > 0 and not self.residual:
            raise UsageError("drop_path skips residual branches: it needs --residual (drop --no-residual or "
                             "--drop-path)")
        if not self.init_std > 0:
            raise UsageError(f"init_std must be positive, got {self.init_std!r}")
        _check_choice("norm", self.norm, NORMS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("init", self.init, INITS)


AUGMENT, OUTPUT = "data augmentation", "evaluation and output"  # --help groups of TrainConfig's flags


@dataclass(frozen=True)
class TrainConfig:
    steps: int = setting(1000, "optimizer steps; fewer than a preset's shrink its warmup, eval and log intervals in "
                         "proportion, unless those are given", short="-s")
    batch_size: int = setting(1, "names per step", short="-b")
    lr: float = setting(0.01, "peak learning rate", short="-l")
    min_lr: float = setting(0.0, "where linear/cosine/exponential/wsd decay ends, at the last step")
    schedule: str = setting("linear", "constant | linear (microgpt) | cosine | exponential (needs min_lr > 0) | wsd "
                            "(warmup-stable-decay)", choices=SCHEDULES)
    decay_frac: float = setting(0.2, "wsd: the share of steps at the end spent decaying linearly to min_lr")
    warmup_steps: int = setting(0, "linear ramp from ~0 to lr before the schedule starts")
    optimizer: str = setting("adam", "adam (microgpt) | adamw (decoupled decay) | rmsprop "
                             "| sgd | muon (Muon on the hidden matrices, AdamW for the rest)", choices=OPTIMIZERS)
    muon_lr: float = setting(0.02, "muon: peak lr of the orthogonalised matrix updates (scheduled like lr)")
    beta1: float = setting(0.85, "Adam/AdamW first-moment decay; RMSprop ignores it")
    beta2: float = setting(0.99, "Adam/AdamW second-moment decay, RMSprop's alpha")
    eps: float = setting(1e-8, "Adam/AdamW/RMSprop denominator guard")
    momentum: float = setting(0.9, "SGD and RMSprop momentum")
    nesterov: bool = setting(False, "SGD: Nesterov momentum (needs momentum > 0)")
    weight_decay: float = setting(0.0, "decoupled for adamw, L2 for the others")
    decay_all: bool = setting(False, "also decay embeddings and norm gains (otherwise matrices of Linear layers only)")
    grad_clip: float = setting(0.0, "clip the global gradient norm to this; 0 = off")
    ema: float = setting(0.0, "evaluate and keep an exponential moving average of the weights with this decay, e.g. "
                         "0.999; 0 = off")
    swa: float = setting(0.0, "weight averaging (SWA): the last share of steps whose weights are averaged uniformly, "
                         "every step; evaluations from its start see the average; 0 = off; not with --ema")
    noise: float = setting(0.0, "per input character, probability of a random substitution or deletion; targets "
                           "stay clean", group=AUGMENT)
    synthetic: float = setting(0.0, "share of each batch's names drawn from a pool of generated names", group=AUGMENT)
    synthetic_from: str = setting("ngram", "where those names come from: ngram (Kneser-Ney fitted to the train split) "
                                  "or a run directory trained on this split", group=AUGMENT, metavar="ngram|RUN_DIR")
    synthetic_order: int = setting(NGRAM_ORDER, "order of that n-gram", group=AUGMENT)
    curriculum: int = setting(0, "short names first: steps over which the name-length cap grows from the shortest "
                              "name to the longest; 0 = off", group=AUGMENT, metavar="STEPS")
    distill_from: str = setting("", "distil from a teacher: comma-separated run directories trained on this data and "
                                "split, or an ensemble directory (`microgpt ensemble`); the mean of their "
                                "probabilities joins the training target", metavar="RUN_DIR,...|ENSEMBLE_DIR",
                                default_text="off")
    distill_mix: float = setting(0.5, "with --distill-from: weight of the teacher's distribution in the target, in "
                                 "[0, 1]; the rest is the true next character")
    eval_every: int = setting(200, "steps between val evaluations (and one at the end); a run of fewer than 1,000 "
                              "steps without it evaluates every steps/5", group=OUTPUT)
    patience: int = setting(0, "stop after this many evaluations without a new best val; 0 = never", group=OUTPUT)
    target: float = setting(1.9, "val loss whose first crossing is timed (steps and seconds)", group=OUTPUT)
    seed: int = setting(1337, "model init, dropout, batch order (each its own generator); 42 with --preset microgpt")
    split_seed: int = setting(SPLIT_SEED, "seed of docs/protocol.md's split permutation", group="data")
    dtype: str = setting("float32", "parameters and activations (float64 with --preset microgpt)", choices=DTYPES)
    autocast: str = setting("off", "bfloat16: training forward passes in bf16 autocast, ~1.7x faster on CPUs with "
                            "AVX512-BF16 and 9x slower on CPUs without (BENCHMARKS.md); auto: bf16 only where it is "
                            "native (AVX512-BF16/AMX, CUDA), float32 elsewhere (--preset best's); weights, optimizer "
                            "and evaluations stay dtype", choices=AUTOCASTS)
    parity: bool = setting(False, "reproduce microgpt.py exactly: Python-RNG init and data order over all names "
                           "(set by --preset microgpt)")
    log_every: int = setting(100, "steps between console lines; also one whenever 30 s pass without one", group=OUTPUT)
    samples: int = setting(20, "names written to samples.txt at the end", group=OUTPUT)
    temperature: float = setting(0.5, "sampling temperature for samples.txt", group=OUTPUT)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into config.json; no flag

    def swa_start(self) -> int:
        """The first step (0-based) whose weights enter --swa's uniform average."""
        return int(self.steps * (1 - self.swa))

    def averages(self) -> bool:
        """Whether evaluations see an average of the weights (--ema or --swa)."""
        return self.ema > 0 or self.swa > 0

    def average_weight(self, step: int) -> float | None:
        """The share of step's new weights in the evaluated average (EMA or SWA), None without one: EMA's decay
        ramps as min(ema, (1 + step) / (10 + step)); SWA copies the live weights until swa_start, then averages
        uniformly."""
        if self.ema > 0:
            return 1.0 - min(self.ema, (1 + step) / (10 + step))
        if self.swa > 0:
            start = self.swa_start()
            return 1.0 if step < start else 1.0 / (step - start + 1)
        return None

    def validate(self) -> None:
        """Raise UsageError on settings that cannot train."""
        _check_finite(self)
        for name in ("steps", "batch_size", "eval_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "patience", "samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
        if self.samples > MAX_SAMPLES:
            raise UsageError(f"samples must be at most {MAX_SAMPLES:,} (names written to samples.txt), got "
                             f"{self.samples:,}; for more, run `microgpt sample` on the run with several --seed values")
        if not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise UsageError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr!r}")
        if self.schedule == "exponential" and self.min_lr <= 0:
            raise UsageError("the exponential schedule decays to min_lr, which must be > 0: set --min-lr (e.g. 1e-4)")
        if self.warmup_steps >= self.steps:
            raise UsageError(f"warmup_steps {self.warmup_steps} must be below steps {self.steps}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise UsageError(f"{name} must be in [0, 1), got {value!r}")
        if not 0 < self.decay_frac <= 1:
            raise UsageError(f"decay_frac must be in (0, 1], got {self.decay_frac!r}")
        if not 0 <= self.ema < 1:
            raise UsageError(f"ema must be in [0, 1), got {self.ema!r}")
        if not 0 <= self.swa < 1:
            raise UsageError(f"swa must be in [0, 1), got {self.swa!r}")
        if self.swa > 0 and self.ema > 0:
            raise UsageError(f"--swa {self.swa:g} and --ema {self.ema:g} both average the weights: pass one of them")
        if not self.muon_lr > 0:
            raise UsageError(f"muon_lr must be positive, got {self.muon_lr!r}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UsageError("--nesterov needs --optimizer sgd and --momentum > 0")
        for name in ("eps", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("noise", "synthetic"):
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.synthetic > 0 and round(self.synthetic * self.batch_size) == 0:
            raise UsageError(f"synthetic {self.synthetic} of batch {self.batch_size} rounds to no synthetic name per "
                             f"batch: raise --synthetic to at least {0.5 / self.batch_size:.3g}")
        if not isinstance(self.synthetic_order, int) or self.synthetic_order < 1:
            raise UsageError(f"synthetic_order must be a positive integer, got {self.synthetic_order!r}")
        if not isinstance(self.curriculum, int) or not 0 <= self.curriculum <= self.steps:
            raise UsageError(f"curriculum must be an integer in [0, steps={self.steps}], got {self.curriculum!r}")
        if self.parity and (self.noise or self.synthetic or self.curriculum):
            raise UsageError("--parity reproduces microgpt.py's data order; drop --noise/--synthetic/--curriculum")
        if not 0 <= self.distill_mix <= 1:
            raise UsageError(f"distill_mix must be in [0, 1], got {self.distill_mix!r}")
        if self.distill_from and self.parity:
            raise UsageError("--parity trains on every name, val and test included; drop --distill-from or --parity")
        if not self.temperature > 0:
            raise UsageError(f"temperature must be positive, got {self.temperature!r}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("autocast", self.autocast, AUTOCASTS)
        if self.autocast == "bfloat16" and (self.parity or self.dtype != "float32"):
            raise UsageError(f"--autocast {self.autocast} needs float32 weights and no --parity; pass --autocast off")


def _check_finite(cfg: ModelConfig | TrainConfig) -> None:
    # every float setting is a rate, probability, scale or loss, so inf or nan is never meant; the range checks let
    # inf through where only a lower bound is checked (lr > 0) and nan where a check is written as a rejection (eps < 0)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{f.name} must be a finite number, got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def to_dict(cfg: ModelConfig | TrainConfig) -> dict[str, Any]:
    """The config as a JSON-ready dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, values: dict[str, Any]):
    """Build cls from a dict, rejecting unknown keys with the key named."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**values)


# Presets: named overrides of the defaults. Each value says where it comes from.
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Karpathy's microgpt.py, bit for bit (see README "microgpt parity").
    "microgpt": (
        {},
        {"parity": True, "seed": 42, "dtype": "float64", "steps": 1000, "batch_size": 1, "lr": 0.01, "schedule": "linear",
         "optimizer": "adam", "beta1": 0.85, "beta2": 0.99, "eps": 1e-8},
    ),
    # makemore's default transformer (makemore.py @988aa59): 4 layers, 4 heads, 64 wide, LayerNorm, GELU, final
    # LayerNorm, AdamW 5e-4 constant, betas (0.9, 0.99), wd 0.01 on every parameter, batch 32. No biases here.
    "makemore": (
        {"n_layer": 4, "n_head": 4, "n_embd": 64, "norm": "layernorm", "embed_norm": False, "final_norm": True,
         "activation": "gelu", "init": "scaled"},
        {"optimizer": "adamw", "lr": 5e-4, "schedule": "constant", "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.01,
         "decay_all": True, "batch_size": 32, "steps": 10000, "eval_every": 500},
    ),
    # The recipe for held-out loss below 1.9 (README "The recipe"; docs/results/recipe.md and ablations.md). Every
    # choice was made on val. Where each value comes from:
    # - 6 layers x 128 wide, 8 heads, dropout 0.2, LayerNorm + final norm, ReLU, scaled init, AdamW 2e-3 (betas 0.9,
    #   0.99), 500 warmup steps, wd 0.1, EMA 0.999, batch 64, 20,000 steps: an H200 probe grown from the stage-1 TPE
    #   search's trend (plans/recipe-search.toml, best val 1.986 at 8,000 steps) reached val 1.9059; a 192-wide probe
    #   with dropout 0.3 was at 1.936 at step 12,000.
    # - dropout 0.2: at full scale (split seed 1, seed 1) 0.1 -> best val 1.9355, 0.15 -> 1.9334, 0.2 -> 1.9319,
    #   0.3 -> 1.9477 at 15,000 steps (docs/results/ablations.md).
    # - final norm, LayerNorm over RMSNorm without gain, AdamW over Adam/RMSprop/SGD/Muon, no curriculum, noise or
    #   synthetic names: the reduced-scale ablations (plans/ablations.toml, 3 seeds each).
    # - schedule wsd (flat 2e-3, then linear to 1e-5 over the last 20%) over cosine: reduced-scale ablation val -0.0085
    #   (p 0.01); full scale on split seed 1, seeds 1-3, val 1.9279 +- 0.0006 against cosine's 1.9313 +- 0.0016.
    # - bf16 autocast: 1.7x faster per step on this CPU (benchmarks/recipe_speed.py); no val difference in the
    #   reduced-scale ablation, and at full scale seed 1 val 1.9087 against float32's 1.9045 (seeds 1-3 span
    #   1.9045-1.9113). auto: only where bf16 is native (AVX512-BF16/AMX, CUDA); on an AVX2-only CPU bf16 autocast
    #   was 9x slower per step than float32 (1,463.5 vs 163.6 ms), so there it trains in float32 (precision.py).
    # Fast to makemore's level (BENCHMARKS.md "Speedrun"): one block, 128 wide, squared ReLU, from the two-objective
    # search plans/fast.toml (docs/results/fast/: trial 13, val 1.9891 after 76 s of a 2-core machine shared with other
    # work). One-layer relu2 models held the search's whole front below ~80 s; deeper ones cost more per step than they
    # gained in that time. Values as the search found them, rounded; weight decay 0.003 -> 0. Dropout 0.04 -> 0
    # (2026-11-28): val 1.9877 -> 1.9759 (seed 1337) and 1.9862 -> 1.9742 (seed 2), and 17.5 against 19.1-20.3 ms/step
    # on an AVX2 CPU, where drawing the masks is a large share of a small model's step.
    "fast": (
        {"n_layer": 1, "n_head": 4, "n_embd": 128, "dropout": 0.0, "norm": "layernorm", "embed_norm": False,
         "final_norm": True, "activation": "relu2", "init": "scaled"},
        {"optimizer": "adamw", "lr": 1e-3, "min_lr": 1e-5, "schedule": "wsd", "decay_frac": 0.35, "warmup_steps": 5,
         "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0, "batch_size": 64, "steps": 3000, "autocast": "auto",
         "eval_every": 250, "log_every": 250},
    ),
    # Between fast and best (docs/results/recipe.md): fast's squared-ReLU block three deep and 96 wide, batch 128,
    # 8,000 steps, dropout 0.1, wd 0.1, WSD decaying over the last 40%. Chosen by val from two probes grown from
    # plans/fast.toml's deeper front points (3 x 96: val 1.9168; 2 x 128: val 1.9291). Its hidden matrices train with
    # Muon at 0.005 (plans/muon-lr.toml found that rate; at 0.0025 val was worse): val 1.9090 +- 0.0053 against
    # AdamW's 1.9206 +- 0.0034 (split 3407, 3 seeds), test 1.8797 +- 0.0056 (tier 1), but 1.9049 / 1.9036 on split
    # seed 1 (tier 2); ~0.31 of best's time on an AVX2 CPU (AdamW: ~0.24). Then, seed 1337 on both splits, val
    # chose EMA 0.999 (3407 / split 1: 1.9055 / 1.9348 -> 1.9030 / 1.9337) and with it dropout 0.05 (1.9006 / 1.9265;
    # 0.15: 1.9170 / 1.9426; 0: overfits, val rising from step ~5,000). Seeds 1337/2/3: test 1.8725 +- 0.0038 on
    # 3407, 1.8966 +- 0.0005 on split seed 1 (tier 1 on both), in 0.301 of best's wall time (benchmarks/speedrun.py).
    "mid": (
        {"n_layer": 3, "n_head": 4, "n_embd": 96, "dropout": 0.05, "norm": "layernorm", "embed_norm": False,
         "final_norm": True, "activation": "relu2", "init": "scaled"},
        {"optimizer": "muon", "muon_lr": 5e-3, "lr": 1.5e-3, "min_lr": 1e-5, "schedule": "wsd", "decay_frac": 0.4, "warmup_steps": 100,
         "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1, "ema": 0.999, "batch_size": 128, "steps": 8000, "autocast": "auto",
         "eval_every": 500, "log_every": 500},
    ),
    "best": (
        {"n_layer": 6, "n_head": 8, "n_embd": 128, "dropout": 0.2, "norm": "layernorm", "embed_norm": False,
         "final_norm": True, "activation": "relu", "init": "scaled"},
        {"optimizer": "adamw", "lr": 2e-3, "min_lr": 1e-5, "schedule": "wsd", "decay_frac": 0.2, "warmup_steps": 500,
         "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1, "ema": 0.999, "batch_size": 64, "steps": 20000,
         "autocast": "auto", "eval_every": 1000, "log_every": 1000},
    ),
    # The single model to distil (docs/results/recipe.md "Students of the search's winner"): trial 305d92 of the
    # full-length TPE search plans/mid-search.toml (docs/results/mid-search/), values as it found them to 4 digits:
    # mid's block four deep and 128 wide (797,696 parameters), dropout 0.025, Muon 0.0065 + AdamW 0.0013, WSD over
    # the last 36%, wd 0.078, EMA 0.9995. Alone it peaks early and overfits (seeds 21/22: best val 1.8795 / 1.8903 at
    # steps 4,500 / 5,500, rising to 1.93-1.94 by step 8,000; the best checkpoint is kept). With a teacher
    # (`--distill-from ENSEMBLE_DIR`, mix 0.8 as chosen for mid) its val falls to the last step: from a 4-member
    # val-chosen ensemble (val 1.8614, test 1.8379), seeds 41-43 test 1.8391 +- 0.0018 on split 3407 (val 1.8625 +-
    # 0.0017), below --preset best distilled from the same teacher (1.8506 +- 0.0004); on split seeds 1, 2 and 3,
    # students of four of the presets' own runs averaged are 0.112, 0.103 and 0.097 below the 6-gram. ~50 ms a step
    # on an AVX512-BF16 core.
    "student": (
        {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.02478, "norm": "layernorm", "embed_norm": False,
         "final_norm": True, "activation": "relu2", "init": "scaled"},
        {"optimizer": "muon", "muon_lr": 0.006529, "lr": 0.001271, "min_lr": 1e-5, "schedule": "wsd",
         "decay_frac": 0.3573, "warmup_steps": 100, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.07848,
         "ema": 0.9995, "batch_size": 128, "steps": 8000, "autocast": "auto", "distill_mix": 0.8,
         "eval_every": 500, "log_every": 500},
    ),
}


# A preset's intervals that are shares of its length: with fewer --steps than the preset's, each one the user did not
# set shrinks in the same proportion (`--preset best -s 300`: warmup 500 -> 7, eval and log every 1000 -> 15 steps).
SCALED_WITH_STEPS = ("warmup_steps", "eval_every", "log_every")


MIN_EVALS = 5  # evaluations a run without its own --eval-every gets at least (its val curve's points)


def resolve(
    overrides: dict[str, Any],
    preset: str | None = None,
    vocab_size: int = 27,
    default_block_size: int = 16,
) -> tuple[ModelConfig, TrainConfig]:
    """Defaults, then the preset, then overrides (any field of either config) -> validated configs. A preset shortened
    by overrides["steps"] has its SCALED_WITH_STEPS intervals scaled down with it, unless overrides sets them."""
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    model_values, train_values = PRESETS[preset] if preset else ({}, {})
    model_values = {"vocab_size": vocab_size, "block_size": default_block_size, **model_values}
    train_values = dict(train_values)
    steps, preset_steps = overrides.get("steps"), train_values.get("steps")
    if type(steps) is int and preset_steps and 0 < steps < preset_steps:  # a shortened preset keeps its proportions
        for key in SCALED_WITH_STEPS:
            if key in train_values and key not in overrides:
                scaled = train_values[key] * steps // preset_steps  # rounded down: warmup stays below steps
                train_values[key] = scaled if key == "warmup_steps" else max(1, scaled)
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in overrides.items():
        if key in model_fields:
            model_values[key] = value
        elif key in train_fields:
            train_values[key] = value
        else:
            raise UsageError(f"unknown setting {key!r}; settings are the fields of ModelConfig and TrainConfig")
    if "eval_every" not in train_values and type(train_values.get("steps")) is int and train_values["steps"] > 0:
        # the default interval, but never fewer than MIN_EVALS evaluations: a short run still has a val curve
        default = TrainConfig.eval_every
        train_values["eval_every"] = max(1, min(default, train_values["steps"] // MIN_EVALS))
    model_cfg, train_cfg = ModelConfig(**model_values), TrainConfig(**train_values)
    model_cfg.validate()
    train_cfg.validate()
    return model_cfg, train_cfg
