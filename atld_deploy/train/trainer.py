"""The training loop: one loop for every method, resumable at epoch boundaries, atomic writes."""

from __future__ import annotations

import json
import pickle
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..attacks import pgd
from ..config import TrainConfig
from ..data import DataBundle, augment_batch, load_dataset
from ..errors import CheckpointError, ConfigError
from ..io import atomic_path, read_json, require_regular_file, write_bytes_atomic, write_json_atomic
from ..owned import Owned, Replacement
from ..run import (
    CHECKPOINT, CLASSES, CLASSIFIER, CONFIG, DISCRIMINATOR, METRICS, RUN_FILES, SUMMARY,
    DataShape, build_networks, is_run_marker, read_run_meta, run_meta,
)
from .distributed import init_distributed, shutdown, wrap
from .methods import STEPS, Nets

log = logging.getLogger(__name__)
REPRO_CACHE = "eval.json"  # `atld-deploy reproduce` caches a run's evaluation beside it
EVAL_CHUNK = 50  # the per-epoch PGD-20 check runs in chunks so its progress shows


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass(frozen=True)
class TrainResult:
    path: Path
    epochs: int
    seconds: float
    clean_acc: float
    pgd_acc: float
    is_main: bool = True  # False on the non-zero ranks of a distributed run (they write nothing)


def _epoch_generator(cfg: TrainConfig, epoch: int) -> torch.Generator:
    # every random choice of an epoch comes from here, so a resumed epoch replays exactly
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)


RUN_DIR = Owned("run", CONFIG, is_run_marker, lambda _meta: dict.fromkeys(RUN_FILES[1:] + (REPRO_CACHE,)),
                ConfigError, "--output")


def _run_dir_action(out: Path, resume: bool, overwrite: bool) -> str:
    """What to do with `out` ("resume" | "replace" | "create"), or a ConfigError; writes nothing."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    if resume:
        if not out.is_dir() or not any(out.iterdir()):
            raise ConfigError(f"nothing to resume: {out} holds no run")
        return "resume"
    if RUN_DIR.check_replaceable(out):  # raises for anything that is not a run of ours
        if not overwrite:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        return "replace"
    return "create"


def resumed_config(stored: TrainConfig, requested: TrainConfig | None = None, **given: Any) -> TrainConfig:
    """The configuration a resumed run trains with: the stored one, with a longer `epochs` if asked for.

    Args:
        stored: the run's own configuration (its config.json).
        requested: a full configuration the caller expects the run to have (Python API), or None.
        **given: TrainConfig fields the user set explicitly (CLI), compared to the stored values.
    Raises:
        ConfigError: any other field differs (named, with both values), or `epochs` is shorter.
    """
    asked = dict(given)
    if requested is not None:
        asked = {**{k: v for k, v in requested.to_dict().items() if v != stored.to_dict()[k]}, **asked}
    epochs = asked.pop("epochs", None)
    stored_d = stored.to_dict()
    differ = [f"--{k.replace('_', '-')} {v!r} (the run has {stored_d[k]!r})" for k, v in asked.items()
              if k in stored_d and _norm(v) != _norm(stored_d[k])]
    if differ:
        raise ConfigError(f"a resumed run keeps its own configuration; only a longer --epochs may be given, but got "
                          f"{'; '.join(differ)}. Drop those options, or train a new run with another --output")
    if epochs is not None and int(epochs) < stored.epochs:
        raise ConfigError(f"--epochs {epochs} is shorter than the run's {stored.epochs}; a resumed run can only be "
                          f"extended (pass --epochs N with N >= {stored.epochs})")
    return stored.replace(epochs=int(epochs)) if epochs is not None and int(epochs) > stored.epochs else stored


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


class Trainer:
    """Trains one run. `Trainer(cfg, out).fit()`; `resume=True` continues from RUN/checkpoint.pt.

    The constructor only checks (directory, configuration, device, data, networks) and writes nothing;
    `fit()` does every write. With `overwrite`, the old run is moved aside and deleted once the new run's
    first epoch is checkpointed; a failure before that puts the old run back exactly as it was.
    """

    def __init__(self, cfg: TrainConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, data: DataBundle | None = None, echo: Callable[[str], None] | None = None) -> None:
        """Args:
            progress: progress bars (only when stderr is a terminal).
            echo: where the start summary and the per-epoch lines go (the CLI: stderr); default: logging.
        """
        self.out = Path(out)
        self.echo = echo or log.info
        if cfg is None and not resume:
            raise ConfigError("a new run needs a TrainConfig (cfg=None is only for resume)")
        self.dist = init_distributed(cfg.device if cfg is not None else "cpu")
        # every process decides from the same untouched directory; only rank 0 then changes it
        self.dist.barrier()
        self.action = _run_dir_action(self.out, resume, overwrite)
        self.dist.barrier()
        self.stored_epochs = 0
        if resume:
            stored, _, self.stored_shape = read_run_meta(self.out)
            cfg = resumed_config(stored, cfg)
            self.stored_epochs = stored.epochs
        assert cfg is not None
        self.cfg = cfg
        self.progress = progress
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if self.dist.enabled and cfg.device == "cuda" else cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {cfg.device} asked for, but torch sees no CUDA GPU; use --device cpu")
        self.data = data or load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.image_size)
        self.shape = DataShape(self.data.channels, self.data.size, self.data.num_classes)
        torch.manual_seed(cfg.seed)
        classifier, disc = build_networks(cfg, self.shape)
        mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
        classifier.to(self.device, memory_format=mf)
        opt_c = torch.optim.SGD(classifier.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        opt_d = None
        if disc is not None:
            disc.to(self.device)
            opt_d = torch.optim.SGD(disc.parameters(), lr=cfg.d_lr, momentum=cfg.d_momentum, weight_decay=cfg.d_weight_decay)
        self.nets = Nets(classifier, opt_c, disc, opt_d, wrap(classifier, self.dist, self.device),
                         wrap(disc, self.dist, self.device) if disc is not None else None)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(opt_c, list(cfg.lr_milestones), cfg.lr_gamma)
        self.start_epoch = 0
        if resume:
            self._load_checkpoint()
        self._replacement: Replacement | None = None

    @property
    def _bars(self) -> bool:
        return self.progress and self.dist.is_main and sys.stderr.isatty()

    @property
    def finished(self) -> bool:
        """True for a resumed run that has already trained every epoch of its configuration."""
        return self.action == "resume" and self.start_epoch >= self.cfg.epochs

    def _begin_writes(self) -> None:
        """The first write of the run: the directory (old run moved aside if replacing), config, classes."""
        if self.dist.is_main:
            if self.action == "replace":
                RUN_DIR.check_replaceable(self.out)  # it may have changed since the constructor looked
                self._replacement = Replacement(self.out)
                self._replacement.begin()
                log.info("replacing %s (the old run is kept aside until the new one has its first checkpoint)", self.out)
            if self.action != "resume":
                self.out.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.out / CLASSES, list(self.data.classes))
            if self.action != "resume" or self.cfg.epochs != self.stored_epochs:
                write_json_atomic(self.out / CONFIG, run_meta(self.cfg, self.shape if self.action != "resume" else self.stored_shape))
            self._trim_metrics()
        self.dist.barrier()

    # ------------------------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int) -> dict[str, Any]:
        n = self.nets
        return {
            "epoch": epoch,
            "classifier": n.classifier.state_dict(),
            "opt_c": n.opt_c.state_dict(),
            "sched": self.sched.state_dict(),
            "discriminator": n.discriminator.state_dict() if n.discriminator is not None else {},
            "opt_d": n.opt_d.state_dict() if n.opt_d is not None else {},
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def _save(self, epoch: int) -> None:
        from safetensors.torch import save_file

        with atomic_path(self.out / CHECKPOINT) as tmp:
            torch.save(self._state(epoch), tmp)
        for module, name in ((self.nets.classifier, CLASSIFIER), (self.nets.discriminator, DISCRIMINATOR)):
            if module is not None:
                with atomic_path(self.out / name) as tmp:
                    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp))

    def _load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.exists():
            raise CheckpointError(f"{path} is missing: the run never finished an epoch; start it again with --overwrite")
        require_regular_file(path, CheckpointError, "start it again with --overwrite")  # a FIFO would block torch.load
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            n = self.nets
            n.classifier.load_state_dict(state["classifier"])
            n.opt_c.load_state_dict(state["opt_c"])
            self.sched.load_state_dict(state["sched"])
            if n.discriminator is not None:
                n.discriminator.load_state_dict(state["discriminator"])
                n.opt_d.load_state_dict(state["opt_d"])  # type: ignore[union-attr]
            torch.set_rng_state(state["rng_cpu"].cpu())
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            self.start_epoch = int(state["epoch"]) + 1
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here means the file is damaged or foreign
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            if isinstance(e, pickle.UnpicklingError):
                reason = "not a readable checkpoint file"
            raise CheckpointError(f"{path} is corrupt or from another configuration ({reason}); start again with --overwrite") from e
        log.info("resuming %s at epoch %d", self.out, self.start_epoch + 1)

    def _trim_metrics(self) -> None:
        """Drop metrics of epochs the checkpoint does not contain (killed between the two writes)."""
        metrics = self.out / METRICS
        if self.action != "resume" or not metrics.exists():
            return
        lines = [l for l in metrics.read_text().splitlines() if l.strip()]
        kept = [l for l in lines if json.loads(l)["epoch"] < self.start_epoch]
        if kept != lines:
            write_bytes_atomic(metrics, "".join(l + "\n" for l in kept).encode())

    # ---------------------------------------------------------------------------------------- loop
    def evaluate(self) -> tuple[float, float]:
        """Clean accuracy on the test split and PGD-20 accuracy on its first `eval_pgd_n` examples."""
        f = self.nets.classifier
        f.eval()
        test = self.data.test
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test), 500):
                x, y = test.batch(torch.arange(i, min(i + 500, len(test))))
                correct += (f(x.to(self.device)).argmax(1).cpu() == y).sum().item()
        from tqdm import tqdm

        n = min(self.cfg.eval_pgd_n, len(test))
        gen = torch.Generator().manual_seed(0)
        robust_n = 0
        for i in tqdm(range(0, n, EVAL_CHUNK), desc="PGD-20 check", unit="chunk", leave=False, disable=not self._bars,
                      file=sys.stderr):
            x, y = test.batch(torch.arange(i, min(i + EVAL_CHUNK, n)))
            x, y = x.to(self.device), y.to(self.device)
            x_adv = pgd(f, x, y, self.cfg.eps, self.cfg.eps / 4, 20, generator=gen)
            with torch.no_grad():
                robust_n += int((f(x_adv).argmax(1) == y).sum().item())
        return correct / len(test), robust_n / max(n, 1)

    def fit(self) -> TrainResult:
        """Train the remaining epochs. A resumed run that is already finished is reported, not touched."""
        if self.finished:
            return self._finished_result()
        try:
            self._begin_writes()
            if self.dist.is_main:
                self.echo(self.start_summary())
            return self._fit()
        except BaseException:
            if self._replacement is not None and self._replacement.active:
                self._replacement.rollback()
                log.warning("the previous run in %s was put back as it was; nothing of the new run was kept", self.out)
            raise

    def start_summary(self) -> str:
        """One paragraph a person reads before a long run: data, model, budget, schedule, device."""
        cfg, d = self.cfg, self.data
        counts = torch.bincount(d.train.labels.long(), minlength=d.num_classes).tolist()
        params = sum(p.numel() for p in self.nets.classifier.parameters())
        skipped = f", {d.skipped} non-image files skipped" if getattr(d, "skipped", 0) else ""
        what = f"resuming at epoch {self.start_epoch + 1}" if self.action == "resume" else "new run"
        return (f"train ({what}) -> {self.out}\n"
                f"  data   {cfg.dataset}: {len(d.train)} train / {len(d.test)} test images, {d.num_classes} classes "
                f"({min(counts)}-{max(counts)} train images per class), {d.channels}x{d.size}x{d.size}{skipped}\n"
                f"  model  {cfg.method} {cfg.arch}, {params / 1e6:.2f} M parameters; eps {cfg.eps:.4g}\n"
                f"  budget {cfg.epochs} epochs x batch {cfg.batch_size}, lr {cfg.lr:g} (x{cfg.lr_gamma:g} at epochs "
                f"{', '.join(str(m) for m in cfg.lr_milestones) or 'none'}), device {self.device}")

    def _finished_result(self) -> TrainResult:
        summary = read_json(self.out / SUMMARY, CheckpointError, "the run has no summary", "resume it with --resume") \
            if (self.out / SUMMARY).exists() else {}
        return TrainResult(self.out, self.cfg.epochs, 0.0, float(summary.get("clean_acc", float("nan"))),
                           float(summary.get("pgd20_acc", float("nan"))), is_main=self.dist.is_main)

    def _fit(self) -> TrainResult:
        from tqdm import tqdm

        cfg, step = self.cfg, STEPS[self.cfg.method]
        train = self.data.train
        t_start = time.perf_counter()
        clean = robust = float("nan")
        for epoch in range(self.start_epoch, cfg.epochs):
            gen = _epoch_generator(cfg, epoch)
            order = torch.randperm(len(train), generator=gen)
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            sums: dict[str, float] = {}
            t0 = time.perf_counter()
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                       disable=not self._bars, file=sys.stderr)
            seen = 0
            for global_idx in bar:
                idx = self.dist.shard(global_idx)
                x, y = train.batch(idx)
                x = augment_batch(x, self.data.augment, gen).to(self.device)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    terms = step(self.nets, cfg, x, y.to(self.device), gen)
                seen += len(idx)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v * len(idx)
                bar.set_postfix({"img/s": f"{seen / (time.perf_counter() - t0):.0f}", **{k: f"{v:.3f}" for k, v in terms.items()}})
            self.sched.step()
            train_s = time.perf_counter() - t0
            keys = sorted(sums)
            totals = self.dist.sum_(torch.tensor([sums[k] for k in keys] + [float(seen)], dtype=torch.float64))
            means, seen = {k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)}, int(totals[-1])
            if not self.dist.is_main:
                self.dist.barrier()  # rank 0 evaluates and writes; the others wait for the checkpoint
                continue
            t_eval = time.perf_counter()
            clean, robust = self.evaluate()
            eval_s = time.perf_counter() - t_eval
            record = {"epoch": epoch, **means, "clean_acc": clean, "pgd20_acc": robust,
                      "lr": self.nets.opt_c.param_groups[0]["lr"], "seconds": train_s,
                      "images_per_s": seen / train_s, "processes": self.dist.world}
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
            self._save(epoch)
            if self._replacement is not None:  # the new run is complete and resumable: the old one goes now
                self._replacement.commit()
                self._replacement = None
            self.dist.barrier()
            done = epoch + 1 - self.start_epoch
            eta = (time.perf_counter() - t_start) / done * (cfg.epochs - epoch - 1)
            self.echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {record.get('loss', 0):.4f}  clean {clean:.2%}  "
                      f"PGD-20 {robust:.2%} (eps {cfg.eps:.4g}, n={min(cfg.eval_pgd_n, len(self.data.test))})  "
                      f"{seen / train_s:.0f} img/s  train {train_s:.0f} s + check {eval_s:.0f} s  ETA {_clock(eta)}")
        seconds = time.perf_counter() - t_start
        if not self.dist.is_main:
            shutdown(self.dist)
            return TrainResult(self.out, cfg.epochs, seconds, float("nan"), float("nan"), is_main=False)
        summary = {"epochs": cfg.epochs, "seconds_this_session": seconds, "clean_acc": clean, "pgd20_acc": robust,
                   "eps": cfg.eps, "method": cfg.method, "arch": cfg.arch, "dataset": cfg.dataset}
        write_json_atomic(self.out / SUMMARY, summary)
        shutdown(self.dist)
        return TrainResult(self.out, cfg.epochs, seconds, clean, robust)
