"""Training loop: SeqTrack's recipe on the additive net (or more), single process or ``torchrun`` DDP.

Only trainable parameters reach AdamW (the paper's point: the frozen transformer costs no optimiser
state and no weight gradients). bf16 autocast on CUDA, gradient clipping, a per-epoch step schedule,
resumable checkpoints (trainable weights, optimiser, scheduler, every rank's RNG, epoch and position in
the epoch), a tqdm bar with loss and throughput, metrics in ``metrics.jsonl`` and the resolved run
configuration in ``config.yaml`` inside ``output_dir``. Launch on several GPUs with
``torchrun --nproc_per_node N -m actrack_fast train CONFIG``.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from .. import backend
from ..checkpoint import init_encoder_from_vit, load_into, load_seqtrack_checkpoint, save_checkpoint
from ..data.datasets import build_dataset
from ..data.processing import SeqTrackProcessing
from ..data.sampler import TrackingSampler
from ..model import ACTrack, DECODER_PREFIXES, build_model
from .config import TrainConfig, dump_train_config

ENCODER_PREFIX = "encoder."


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the vocabulary of the last 5 positions (cx, cy, w, h, end); the K prompt
    positions before ``start`` predict nothing. logits (B, K + 5, V), targets (B, 5) -> scalar."""
    return F.cross_entropy(logits[:, -targets.shape[1]:].flatten(0, 1).float(), targets.flatten())


def set_trainable(model: ACTrack, trainable: str) -> None:
    """``additive``: the additive net only; ``additive_decoder``: plus the decoder; ``full``: everything."""
    if trainable == "full":
        model.requires_grad_(True)
    else:
        model.freeze(train_decoder=trainable == "additive_decoder")


def trained_prefixes(trainable: str) -> Optional[tuple[str, ...]]:
    """State-dict prefixes a checkpoint must hold for ``trainable`` (None: the whole model)."""
    return {"additive": ("additive.",), "additive_decoder": ("additive.", *DECODER_PREFIXES), "full": None}[trainable]


def store_frozen_in_bf16(model: ACTrack) -> dict[str, torch.Tensor]:
    """Cast the frozen encoder's Linear/Conv2d parameters to bf16 in place; returns fp32 CPU copies by name.

    Under bf16 autocast these layers multiply in bf16 anyway (autocast would cast the same values every
    step), so the computation is unchanged; LayerNorms keep fp32 parameters as autocast runs them in fp32.
    """
    masters = {}
    for name, module in model.encoder.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not any(p.requires_grad for p in module.parameters()):
            for key, param in module.named_parameters():
                masters[f"encoder.{name}.{key}"] = param.detach().to("cpu", copy=True)
            module.to(torch.bfloat16)
    return masters


def restore_frozen(model: ACTrack, masters: dict[str, torch.Tensor]) -> None:
    """Undo :func:`store_frozen_in_bf16`: the original fp32 values back in place."""
    params = dict(model.named_parameters())
    for name, value in masters.items():
        params[name].data = value.to(params[name].device)


def build_optimizer(model: ACTrack, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only; encoder parameters (when trained) at the lr multiplier."""
    optim = config.optim
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not n.startswith(ENCODER_PREFIX)], "lr": optim.lr},
        {"params": [p for n, p in named if n.startswith(ENCODER_PREFIX)], "lr": optim.lr * optim.encoder_lr_multiplier},
    ]
    groups = [g for g in groups if g["params"]]
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused)


class RankBatches(Sampler):
    """This rank's sample indices for one epoch: every ``world``-th index, whole batches only, starting
    after ``skip_batches`` batches (mid-epoch resume). Order does not matter: samples are seeded by index."""

    def __init__(self, samples: int, batch_size: int, rank: int, world: int) -> None:
        self.batches_per_epoch = samples // world // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"samples_per_epoch={samples} gives no full batch of {batch_size} on each of {world} ranks")
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.skip_batches = 0

    def __iter__(self) -> Iterator[int]:
        first = self.skip_batches * self.batch_size
        for i in range(first, self.batches_per_epoch * self.batch_size):
            yield i * self.world + self.rank

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


def _worker_init(_: int) -> None:
    # Workers are many; one thread each keeps them from oversubscribing the cores.
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Builds the model, data, optimiser and schedule from a :class:`TrainConfig` and runs :meth:`fit`.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group and wraps the model in DDP;
    rank 0 writes checkpoints, logs and the progress bar.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = self._pick_device(config.device, local_rank)
        if self.world > 1 and not dist.is_initialized():
            backend = self._pick_backend()
            dist.init_process_group(backend, device_id=self.device if backend == "nccl" else None)
            if self.rank == 0:
                print(f"DDP: {self.world} processes, {backend} backend, rank 0 on {self.device}", flush=True)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_path = self.output_dir / "checkpoints" / "last.pt"

        self._seed(config.seed)  # the same initial weights on every rank
        self.model = self._build_model().to(self.device)
        self._seed(config.seed + self.rank)  # then each rank its own stream (dropout)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.frozen_masters: dict[str, torch.Tensor] = {}
        if config.frozen_bf16 and self.use_amp and config.encoder_backend == "reference":
            self.frozen_masters = store_frozen_in_bf16(self.model)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.optim.lr_drop_epoch,
                                                         config.optim.lr_drop_factor)
        self.network = self.model
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.sampler: Optional[TrackingSampler] = None

    # --- set-up ---------------------------------------------------------------------------------
    @staticmethod
    def _pick_device(name: str, local_rank: int) -> torch.device:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
        if device.type == "cuda":
            index = local_rank % torch.cuda.device_count() if device.index is None else device.index
            device = torch.device("cuda", index)
            torch.cuda.set_device(device)
        return device

    def _pick_backend(self) -> str:
        if self.config.dist_backend != "auto":
            return self.config.dist_backend
        # NCCL refuses two ranks on one GPU; Gloo handles that and CPU runs.
        own_gpu = self.device.type == "cuda" and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        return "nccl" if own_gpu else "gloo"

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _build_model(self) -> ACTrack:
        cfg = self.config
        model = build_model(cfg.model, **cfg.model_overrides)
        if cfg.weights:
            if str(cfg.weights).endswith(".safetensors"):
                load_into(model, cfg.weights)
            else:
                load_seqtrack_checkpoint(model, cfg.weights, trusted=cfg.trusted_weights)
        elif cfg.vit_weights:
            init_encoder_from_vit(model, torch.load(cfg.vit_weights, map_location="cpu", weights_only=True))
        set_trainable(model, cfg.trainable)
        return model

    def build_loader(self) -> DataLoader:
        """The rank's loader over a :class:`TrackingSampler` of the configured datasets."""
        data = self.config.data
        if not data.datasets:
            raise ValueError("data.datasets is empty: list at least one {type, root} entry in the config")
        datasets = [build_dataset(spec.type, spec.root, spec.options) for spec in data.datasets]
        processing = SeqTrackProcessing(self.model.config, data.jitter, augment=data.augment)
        self.sampler = TrackingSampler(datasets, processing, data.samples_per_epoch, data.max_interval,
                                       [spec.weight for spec in data.datasets], seed=self.config.seed)
        self.batches = RankBatches(data.samples_per_epoch, self.config.batch_size, self.rank, self.world)
        # The loader's own generator: drawing worker seeds from the global RNG would shift the dropout
        # stream whenever an iterator is created, and a resumed run creates one at a different point.
        return DataLoader(self.sampler, batch_size=self.config.batch_size, sampler=self.batches,
                          num_workers=data.num_workers, worker_init_fn=_worker_init, drop_last=True,
                          pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.config.seed))

    # --- one step -------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        """Forward, loss, backward, clip, AdamW step on one batch; returns ``loss`` and ``grad_norm``."""
        device = self.device
        search = batch["search"].to(device, non_blocking=True)
        templates = batch["templates"].to(device, non_blocking=True)
        sequence = batch["sequence"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        self.network.train()
        # The backend context spans the backward too: a recomputing backward must take the same blocks.
        with backend.use_backend(self.config.encoder_backend, ("encoder_block",)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                logits = self.network(search, templates, sequence)
            loss = sequence_loss(logits, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach()}

    # --- checkpoints ----------------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        prefixes = trained_prefixes(self.config.trainable)
        state = self.model.state_dict()
        return state if prefixes is None else {k: v for k, v in state.items() if k.startswith(prefixes)}

    def save(self, path: Optional[Path] = None) -> Path:
        """Write the resumable checkpoint (collective under DDP: every rank must call it)."""
        path = Path(path or self.checkpoint_path)
        rng = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rng, _rng_state())
        else:
            rng[0] = _rng_state()
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {"model": self.trained_state(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                     "batch_in_epoch": self.batch_in_epoch, "step": self.step, "rng": rng,
                     "model_config": self.model.config.to_dict(), "trainable": self.config.trainable}
            temporary = path.with_suffix(".tmp")
            torch.save(state, temporary)
            os.replace(temporary, path)  # never leave a half-written checkpoint behind
        if self.world > 1:
            dist.barrier()
        return path

    def load(self, path: Path) -> None:
        """Resume from a checkpoint written by :meth:`save` with the same model config and trainable set."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["model_config"] != self.model.config.to_dict() or state["trainable"] != self.config.trainable:
            raise ValueError(f"checkpoint {path} was written for another model config or trainable set "
                             f"({state['trainable']!r}); start a fresh output_dir or fix the config")
        expected = set(self.trained_state())
        if set(state["model"]) != expected:
            missing, unexpected = sorted(expected - set(state["model"])), sorted(set(state["model"]) - expected)
            raise ValueError(f"checkpoint {path} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        if len(state["rng"]) != self.world:
            raise ValueError(f"checkpoint {path} holds RNG states of {len(state['rng'])} ranks, this run has {self.world}")
        _set_rng_state(state["rng"][self.rank])

    def _resume_path(self) -> Optional[Path]:
        resume = self.config.resume
        if resume is None:
            return None
        if resume == "auto":
            return self.checkpoint_path if self.checkpoint_path.is_file() else None
        if not Path(resume).is_file():
            raise FileNotFoundError(f"resume checkpoint {resume} does not exist")
        return Path(resume)

    # --- the loop -------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train until ``epochs`` (or ``max_steps``); returns the exported ``model.safetensors``."""
        cfg = self.config
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            dump_train_config(cfg, self.output_dir / "config.yaml")
        resume = self._resume_path()
        if resume is not None:
            self.load(resume)
        loader = self.build_loader()
        log = open(self.output_dir / "metrics.jsonl", "a") if self.rank == 0 else None
        try:
            while self.epoch < cfg.epochs and not self._done():
                self._run_epoch(loader, log)
        finally:
            if log is not None:
                log.close()
        export = self.output_dir / "model.safetensors"
        if self.rank == 0:
            restore_frozen(self.model, self.frozen_masters)
            self.frozen_masters = {}
            save_checkpoint(self.model, export, {"step": str(self.step), "epoch": str(self.epoch)})
        return export

    def _done(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _run_epoch(self, loader: DataLoader, log) -> None:
        cfg = self.config
        self.sampler.set_epoch(self.epoch)
        self.batches.skip_batches = self.batch_in_epoch
        bar = tqdm(total=self.batches.batches_per_epoch, initial=self.batch_in_epoch, disable=self.rank != 0,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
        window_loss, window_steps, window_start = torch.zeros((), device=self.device), 0, time.perf_counter()
        epoch_loss, epoch_steps = 0.0, 0
        for batch in loader:
            result = self.train_step(batch)
            self.batch_in_epoch += 1
            window_loss += result["loss"]
            window_steps += 1
            bar.update(1)
            if window_steps == cfg.log_every or self._done() or self.batch_in_epoch == self.batches.batches_per_epoch:
                mean_loss = self._mean_over_ranks(window_loss / window_steps)
                elapsed = time.perf_counter() - window_start
                throughput = window_steps * cfg.batch_size * self.world / elapsed
                record = {"step": self.step, "epoch": self.epoch, "loss": mean_loss,
                          "grad_norm": float(result["grad_norm"]), "lr": self.optimizer.param_groups[0]["lr"],
                          "samples_per_s": throughput, "time": time.time()}
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{throughput:.1f}")
                epoch_loss += mean_loss * window_steps
                epoch_steps += window_steps
                window_loss.zero_()
                window_steps, window_start = 0, time.perf_counter()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
            if self._done():
                break
        bar.close()
        if self.batch_in_epoch == self.batches.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
            self.scheduler.step()
            if log is not None and epoch_steps:
                log.write(json.dumps({"epoch_end": self.epoch, "step": self.step,
                                      "epoch_loss": epoch_loss / epoch_steps}) + "\n")
                log.flush()
        self.save()

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        if self.world > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return float(value)

    def close(self) -> None:
        """Leave the process group (when this trainer joined one)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig) -> Path:
    """Run one training job; returns the exported ``model.safetensors`` path."""
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()
