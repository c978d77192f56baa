"""``relit-hands train-student``: train the UV-space student on a teacher-made set.

    relit-hands train-student --data data/student_set --variant vis --out runs/student_vis \\
        --steps 20000 --batch 8 --install-default
    torchrun --nproc_per_node 4 -m relit_hands.tools.train_student --data ... --variant vis --out ...

Variants: ``vis`` (ours), ``novis`` (ablation: the same features without visibility),
``bottleneck`` (ablation: the environment as a global code); see :mod:`relit_hands.student`.

Loss: L1 between ``log(1 + x / tau)`` of the prediction and of the target, both radiance /
energy, averaged over the atlas texels (the UV mask; texels outside any chart never reach the
screen) and the three colours. ``tau`` = the median target value over the masked texels of the
first training batches (stored in the model's metadata). Below ``tau`` the loss is ~L1 / tau,
above it it measures *relative* error, so the HDR highlights and the bright side of a hand under
a sun do not drown the shadows -- which is what the visibility ablation is about.
``--linear-weight W`` adds ``W * L1(x / tau)`` (absolute error in units of tau) to the training loss,
which weighs the bright, directly lit texels more, as the pooled PSNR of the evaluation does; the
validation loss stays the log term alone, so runs with and without it compare.

Run folder (``--out``): ``train_log.csv`` (step, loss, lr, seconds, val_loss), ``loss_curve.png``,
``val/step_XXXXXX.png`` (per validation sample and hand: target | prediction | |error| in UV,
tone mapped), ``checkpoints/step_XXXXXX.safetensors`` (the model, loadable by
:func:`~relit_hands.student.load_student`) + ``step_XXXXXX.state.pt`` (optimizer / scheduler /
RNG / step; ``torch.load(weights_only=True)``), ``checkpoints/latest.json``, ``student.safetensors``
(final) and ``summary.json``. ``--resume`` continues from ``checkpoints/latest.json``.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP (gloo on the
CPU, nccl on CUDA), each rank reads its shard (``DistributedSampler``), rank 0 writes the files.
``--batch`` is per rank.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from relit_hands.hand_model import asset_reference
from relit_hands.color import to_uint8, tone_map
from relit_hands.validation import NonFiniteError, OutputFolder, finite_float, int_range, write_text_atomic

# torch and the student modules are imported inside the functions: the CLI builds this parser for
# every `relit-hands` command, and `relit-hands list` should not pay for importing torch.
VARIANTS = ("vis", "novis", "bottleneck")  # == relit_hands.student.VARIANTS (checked in tests)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``train-student`` options (shared by ``relit-hands train-student`` and ``python -m``)."""
    p.add_argument("--data", required=True, nargs="+",
                   help="student training set folder(s) (manifest.json + samples/); several are pooled "
                        "(made with the same options: resolution, features, key lights)")
    p.add_argument("--variant", choices=VARIANTS, default="vis")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int_range(1, 10_000_000), default=20000)
    p.add_argument("--batch", type=int_range(1, 4096), default=8, help="hand textures per step (per rank)")
    p.add_argument("--lr", type=finite_float(1e-12, 10.0), default=5e-4)
    p.add_argument("--lr-min", type=finite_float(0.0, 1.0), default=0.05, help="final LR as a fraction of --lr (cosine)")
    p.add_argument("--warmup", type=int_range(0, 10_000_000), default=200, help="linear LR warm-up steps")
    p.add_argument("--weight-decay", type=finite_float(0.0, 10.0), default=0.0)
    p.add_argument("--linear-weight", type=finite_float(0.0, 100.0), default=0.0,
                   help="add this weight x L1 on x / tau to the training loss (bright texels count more, as in "
                        "the pooled PSNR); the validation loss stays the log term")
    p.add_argument("--base", type=int_range(1, 512), default=32)
    p.add_argument("--levels", type=int_range(1, 8), default=4)
    p.add_argument("--static-channels", type=int_range(0, 256), default=8)
    p.add_argument("--code-dim", type=int_range(1, 4096), default=64)
    p.add_argument("--albedo-prior", action=argparse.BooleanOptionalAction, default=True,
                   help="multiply the output by the asset's albedo texture (student.py)")
    p.add_argument("--specular-channel", action=argparse.BooleanOptionalAction, default=False,
                   help="add one grey output channel, not tinted by the albedo prior (student.py; "
                        "measured in the README, not yet used for the shipped students)")
    p.add_argument("--light-head", action=argparse.BooleanOptionalAction, default=False,
                   help="predict per-texel weights of the light-linear feature channels instead of "
                        "radiance alone (student.py: the output stays linear in each light)")
    p.add_argument("--translucency", action=argparse.BooleanOptionalAction, default=True,
                   help="use the set's transmit_* channels when it has them (make-student-set --translucency); "
                        "--no-translucency trains a student that skips the second ray cast at run time "
                        "(the fast size)")
    p.add_argument("--turn", action="store_true",
                   help="turn each training texture's world-frame normal inputs by a random rotation (the same "
                        "hands, light and camera turned together; student_data.turn_normals), so the student "
                        "does not tie its output to the orientations of the set's poses")
    p.add_argument("--val-every", type=int_range(1, 10_000_000), default=1000)
    p.add_argument("--ckpt-every", type=int_range(1, 10_000_000), default=2000)
    p.add_argument("--log-every", type=int_range(1, 10_000_000), default=20)
    p.add_argument("--val-images", type=int_range(1, 1000), default=2, help="validation samples drawn per val step")
    p.add_argument("--workers", type=int_range(0, 256), default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int_range(0, 1024), default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.json")
    p.add_argument("--init-from", metavar="WEIGHTS", default=None,
                   help="start a new run from a trained student's weights (same variant and input channels; its "
                        "input normalisation and loss scale are kept): fine-tuning on a new set, e.g. one "
                        "made with --key-lights")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder that is not a train-student run (never the data set)")
    p.add_argument("--install-default", action="store_true",
                   help="copy the final model into relit_hands/models/student/: student.safetensors (the "
                        "default, for --variant vis) or student_{novis,bottleneck}.safetensors (the ablations "
                        "the evaluation harness compares); for a set of another shipped asset NAME (hand_v2) "
                        "with the suffix _NAME, which that asset and the people fitted from it load")
    p.add_argument("--no-progress", action="store_true")
    return p


# ----------------------------------------------------------------------------- helpers

def _dist():
    import torch

    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1:
        return 1, 0, 0
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return ws, rank, local


def _lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.lr_min + (1 - args.lr_min) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def student_loss(pred, target, mask, tau: float, linear_weight: float = 0.0):
    """Masked L1 on log(1 + x / tau), plus ``linear_weight`` x masked L1 on x / tau;
    pred/target [B, 3, R, R], mask [B, R, R] or [R, R]."""
    import torch

    m = mask.to(pred.dtype)
    if m.dim() == 2:
        m = m[None].expand(pred.shape[0], -1, -1)
    m = m[:, None]
    d = (torch.log1p(pred.clamp_min(0) / tau) - torch.log1p(target.clamp_min(0) / tau)).abs()
    if linear_weight:
        d = d + linear_weight * ((pred - target) / tau).abs()
    return (d * m).sum() / (m.sum() * pred.shape[1]).clamp_min(1.0)


def _loader(ds, batch, workers, seed, world, rank, shuffle=True):
    import torch

    sampler = None
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(ds, world, rank, shuffle=shuffle, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed + rank)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=(shuffle and sampler is None),
                                       sampler=sampler, num_workers=workers, drop_last=len(ds) >= batch * world,
                                       generator=g, persistent_workers=workers > 0), sampler


def _forever(loader, sampler):
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for b in loader:
            yield b
        epoch += 1


def _stats(ds, n_items=16):
    """Per-channel mean/std of the inputs and the median target over masked texels."""
    import torch

    idx = np.linspace(0, len(ds) - 1, min(n_items, len(ds))).astype(int)
    xs, ts = [], []
    for i in idx:
        it = ds[int(i)]
        m = it["mask"]
        xs.append(it["inputs"][:, m])
        ts.append(it["target"][:, m].flatten())
    x = torch.cat(xs, 1)
    t = torch.cat(ts)
    return x.mean(1), x.std(1), float(t.median().clamp_min(1e-4))


def _tonemap(x, peak):
    """Validation picture: radiance / ``peak``, the compositor's ACES + sRGB, 8 bits."""
    return to_uint8(tone_map(x / max(peak, 1e-8), 0.0, "aces"))


def _val_image(rows, path):
    """rows: list of (target [3,R,R], pred [3,R,R], mask [R,R]) numpy -> PNG of
    target | prediction | |error| (x4), one row per hand texture."""
    from ..image_io import write_png

    tiles = []
    for tgt, pred, mask in rows:
        peak = float(np.percentile(tgt[:, mask], 99)) if mask.any() else 1.0
        m = mask[..., None]
        t = _tonemap(tgt.transpose(1, 2, 0), peak) * m
        p = _tonemap(pred.transpose(1, 2, 0), peak) * m
        e = _tonemap(4 * np.abs(pred - tgt).transpose(1, 2, 0), peak) * m
        k = max(1, 256 // t.shape[0])  # small maps are shown enlarged (nearest)
        t, p, e = (a.repeat(k, 0).repeat(k, 1) for a in (t, p, e))
        sep = np.full((t.shape[0], 4, 3), 255, np.uint8)
        tiles.append(np.concatenate([t, sep, p, sep, e], 1))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    write_png(path, np.concatenate(tiles[:-1], 0))


def _plot(csv_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in csv_rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [r["loss"] for r in csv_rows], lw=0.8, label="train")
    v = [(r["step"], r["val_loss"]) for r in csv_rows if r.get("val_loss") not in (None, "")]
    if v:
        ax.plot([a for a, _ in v], [b for _, b in v], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("L1 on log(1 + x / tau)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _versions():
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for p in ("relit-hands", "numpy", "safetensors", "onnx", "onnxruntime"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def evaluate(model, ds, device, tau, batch=8, max_items=None):
    """Mean validation loss over ``ds`` (per hand texture)."""
    import torch

    model.eval()
    n = len(ds) if max_items is None else min(len(ds), max_items)
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for s in range(0, n, batch):
            items = [ds[i] for i in range(s, min(n, s + batch))]
            x = torch.stack([it["inputs"] for it in items]).to(device)
            c = torch.stack([it["env_code"] for it in items]).to(device)
            y = torch.stack([it["target"] for it in items]).to(device)
            m = torch.stack([it["mask"] for it in items]).to(device)
            tot += float(student_loss(model(x, c), y, m, tau)) * len(items)
            cnt += len(items)
    model.train()
    return tot / max(cnt, 1)


# ----------------------------------------------------------------------------- main

def train(args, command: str | None = None) -> dict:
    import torch

    from ..student import StudentNet, default_student_path, load_student, save_student
    from .student_data import StudentDataset

    world, rank, local = _dist()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device if args.device != "cuda" else f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    out = Path(args.out)
    ck = out / "checkpoints"
    main_rank = rank == 0
    # the run folder: new, empty, or a train-student run (resumed with --resume); never the data set
    data = [args.data] if isinstance(args.data, (str, Path)) else list(args.data)
    data_names = " + ".join(str(d) for d in data)
    folder = OutputFolder(out, "train-student", overwrite=getattr(args, "overwrite", False), inputs=data,
                          recognise=lambda p: (p / "train_log.csv").is_file() or (p / "checkpoints" / "latest.json").is_file())
    train_ds = StudentDataset(data, "train", variant=args.variant, translucency=args.translucency,
                              turn=getattr(args, "turn", False))
    man = train_ds.manifest
    val_ds = StudentDataset(data, "val", variant=args.variant, asset=train_ds.asset,
                            translucency=args.translucency)
    if len(train_ds) == 0:
        raise ValueError(f"{data_names}: no training samples (split 'train')")
    if main_rank:
        folder.create()
        (out / "val").mkdir(parents=True, exist_ok=True)
        ck.mkdir(parents=True, exist_ok=True)
    R = train_ds.resolution
    names = list(train_ds.input_names)

    start_step, rows, state = 0, [], None
    latest = ck / "latest.json"
    if args.resume and latest.is_file():
        info = json.loads(latest.read_text())
        model, meta = load_student(ck / info["model"])
        if meta["variant"] != args.variant:
            raise ValueError(f"--resume: the run's model is a {meta['variant']} student, not {args.variant}")
        if list(meta.get("feature_names") or names) != names:
            raise ValueError(f"--resume: the run's model reads {len(meta['feature_names'])} feature channels, these "
                             f"options give {len(names)} (--translucency / --no-translucency as in the run)")
        if int(meta.get("key_lights", 0)) != train_ds.key_lights:
            raise ValueError(f"--resume: the run's model was trained with key_lights={meta.get('key_lights', 0)}, "
                             f"{data_names} has key_lights={train_ds.key_lights}")
        state = torch.load(ck / info["state"], map_location="cpu", weights_only=True)
        start_step = int(state["step"])
        tau = float(meta["loss_tau"])
        if (out / "train_log.csv").is_file():
            with open(out / "train_log.csv") as f:
                rows = [{k: (float(v) if v not in ("",) else None) for k, v in r.items()} for r in csv.DictReader(f)]
            rows = [dict(r, step=int(r["step"])) for r in rows if int(r["step"]) <= start_step]
    elif args.init_from:
        if args.resume and main_rank:
            print(f"train-student: --resume but no {latest}; starting from --init-from", file=sys.stderr)
        model, imeta = load_student(args.init_from)
        if imeta["variant"] != args.variant:
            raise ValueError(f"--init-from {args.init_from}: a {imeta['variant']} student, not {args.variant}")
        if list(imeta.get("feature_names") or []) != names:
            raise ValueError(f"--init-from {args.init_from}: reads channels {imeta.get('feature_names')}, "
                             f"this set and these options give {names}")
        model.key_lights = train_ds.key_lights
        tau = float(imeta["loss_tau"])
    else:
        if args.resume and main_rank:
            print(f"train-student: --resume but no {latest}; starting fresh", file=sys.stderr)
        model = StudentNet(len(names), base=args.base, levels=args.levels, static_channels=args.static_channels,
                           resolution=R, variant=args.variant, code_dim=args.code_dim, feature_names=names,
                           albedo_prior=args.albedo_prior,
                           specular_channel=args.specular_channel, light_head=args.light_head,
                           key_lights=train_ds.key_lights)
        if args.albedo_prior:
            model.set_albedo(train_ds.asset.albedo_map(R))
        mean, std, tau = _stats(train_ds)
        model.set_input_normalisation(mean, std)
    model = model.to(device).train()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
    if train_ds.turn:  # the turns' stream, like the loader's order, follows the seed, the rank and the step
        train_ds.reseed(args.seed + 7919 * (rank + 1) + 104729 * start_step)
    loader, sampler = _loader(train_ds, args.batch, args.workers, args.seed + start_step, world, rank)
    batches = _forever(loader, sampler)
    loss_name = "L1 on log(1 + x / tau) over the atlas mask"
    if args.linear_weight:
        loss_name += f" + {args.linear_weight:g} x L1 on x / tau"
    meta_extra = {"loss": loss_name, "loss_tau": tau, "linear_weight": float(args.linear_weight),
                  **({"augmentation": "random turns of the normal inputs (--turn)"} if train_ds.turn else {}),
                  "asset": asset_reference(train_ds.asset.source or None),
                  "dataset": {"path": " + ".join(str(Path(d).resolve()) for d in data), "generator": man.get("generator"),
                              "n_train_items": len(train_ds), "n_val_items": len(val_ds),
                              "n_lights": man["n_lights"]}}

    def save(step):
        if not main_rank:
            return
        name = f"step_{step:06d}"
        save_student(ck / f"{name}.safetensors", model, {**meta_extra, "step": step})
        torch.save({"step": step, "optimizer": opt.state_dict(), "rng_cpu": torch.get_rng_state()},
                   ck / f"{name}.state.pt")
        tmp = latest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"step": step, "model": f"{name}.safetensors", "state": f"{name}.state.pt"}))
        tmp.replace(latest)

    def write_log():
        if not main_rank:
            return
        with open(out / "train_log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "seconds", "val_loss"])
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in w.fieldnames})
        if rows:
            _plot(rows, out / "loss_curve.png")

    def validate(step):
        vloss = evaluate(model, val_ds, device, tau) if len(val_ds) else None
        if main_rank and len(val_ds):
            picks = np.linspace(0, len(val_ds.samples) - 1, min(args.val_images, len(val_ds.samples))).astype(int)
            vis_rows = []
            model.eval()
            with torch.no_grad():
                for si in picks:
                    for i, (s_, h_, _) in enumerate(val_ds.items):
                        if s_ == si:
                            it = val_ds[i]
                            p = model(it["inputs"][None].to(device), it["env_code"][None].to(device))[0].cpu()
                            vis_rows.append((it["target"].numpy(), p.numpy(), it["mask"].numpy()))
            model.train()
            _val_image(vis_rows, out / "val" / f"step_{step:06d}.png")
        return vloss

    t_start = time.perf_counter()
    bar = None
    if main_rank and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=start_step, desc=f"train-student {args.variant}", unit="step")
    first_loss = rows[0]["loss"] if rows else None  # of the whole run (a resumed run keeps its log)
    ema = None
    step = start_step
    last_val = None
    for step in range(start_step, args.steps):
        b = next(batches)
        x, c = b["inputs"].to(device, non_blocking=True), b["env_code"].to(device)
        y, m = b["target"].to(device), b["mask"].to(device)
        lr = _lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = student_loss(net(x, c), y, m, tau, args.linear_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise NonFiniteError(f"train-student: the loss became {lv} at step {step} (try a lower --lr); "
                                 f"training stopped, no weights were written for this step")
        if not all(bool(torch.isfinite(q).all()) for q in model.parameters()):
            raise NonFiniteError(f"train-student: the weights became NaN/infinite at step {step} (try a lower --lr); "
                                 f"training stopped, no weights were written for this step")
        first_loss = lv if first_loss is None else first_loss
        ema = lv if ema is None else 0.9 * ema + 0.1 * lv
        done = step + 1
        row = None
        if done % args.log_every == 0 or done == args.steps:
            row = {"step": done, "loss": lv, "lr": lr, "seconds": time.perf_counter() - t_start, "val_loss": None}
        if done % args.val_every == 0 or done == args.steps:
            last_val = validate(done)
            row = row or {"step": done, "loss": lv, "lr": lr, "seconds": time.perf_counter() - t_start}
            row["val_loss"] = last_val
        if row is not None:
            rows.append(row)
        if done % args.ckpt_every == 0 or done == args.steps:
            save(done)
            write_log()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", val="-" if last_val is None else f"{last_val:.4f}")
    if bar is not None:
        bar.close()
    summary = {}
    if main_rank:
        write_log()
        final = out / "student.safetensors"
        save_student(final, model, {**meta_extra, "step": args.steps})  # atomic (temporary name)
        installed = None
        if args.install_default:
            dst = default_student_path(args.variant, asset=train_ds.asset)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(final, dst)
            installed = str(dst)
        n_params = sum(p.numel() for p in model.parameters())
        summary = {
            "command": command or "relit-hands train-student " + shlex.join(sys.argv[1:]),
            "variant": args.variant, "resolution": R,
            "data": [str(Path(d).resolve()) for d in data] if len(data) > 1 else str(Path(data[0]).resolve()),
            "feature_names": names, "steps": args.steps, "resumed_from": start_step or None,
            "initialised_from": str(args.init_from) if getattr(args, "init_from", None) else None,
            "batch_per_rank": args.batch, "world_size": world, "device": str(device), "lr": args.lr,
            "architecture": model.config(), "parameters": n_params, "loss_tau": tau,
            "first_train_loss": first_loss, "final_train_loss": rows[-1]["loss"] if rows else None,
            "final_train_loss_ema": ema, "final_val_loss": last_val,
            "best_val_loss": min([r["val_loss"] for r in rows if r.get("val_loss") is not None], default=None),
            "wall_seconds": time.perf_counter() - t_start, "model": str(final), "installed_default": installed,
            "files": {"log": "train_log.csv", "curve": "loss_curve.png", "val_images": "val/",
                      "checkpoints": "checkpoints/"},
            "versions": _versions(),
        }
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        print(f"train-student {args.variant}: {args.steps} steps, train loss {summary['final_train_loss']}, "
              f"val loss {last_val}; wrote {final}" + (f", installed as {installed}" if installed else ""))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary


def run_from_args(args, command: str | None = None) -> int:
    train(args, command)
    return 0


def main(argv=None, command: str | None = None) -> int:
    p = argparse.ArgumentParser(prog="relit-hands train-student", description=__doc__.split("\n")[0])
    return run_from_args(add_arguments(p).parse_args(argv), command)


if __name__ == "__main__":
    sys.exit(main())
